//go:build linux

package filestore

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
	"unsafe"

	"github.com/stretchr/testify/require"
)

// Real kernel errors (issue 5, figure 5). The fault-injecting filesystem
// (faults_test.go) covers every errno at every call; these tests make the
// kernel itself fail, with what stops root: a full tmpfs, a read-only
// mount, an unprivileged uid, the immutable flag and a file size limit.
// Each probes for its capability and skips with the reason when it is
// missing; with FILESTORE_REQUIRE_KERNEL=1 (set by .ci/run) a skip is a
// failure.
//
// In every case the failing operations must return an error matching the
// errno through errors.Is, must not panic, must leave the record that was
// there intact and must leave no temp file behind.

const requireKernelEnv = "FILESTORE_REQUIRE_KERNEL"

// kernelSkip skips t for a missing capability, or fails it when CI says
// every capability must be there.
func kernelSkip(t *testing.T, format string, args ...any) {
	t.Helper()
	if os.Getenv(requireKernelEnv) == "1" {
		t.Fatalf("%s=1 but: "+format, append([]any{requireKernelEnv}, args...)...)
	}
	t.Skipf(format, args...)
}

const keepData = "keep-data"

// kernelWorker runs a worker with attr (a new mount namespace, another
// uid) from binary bin (os.Args[0] when empty). The worker prints "ack
// skip <reason>" when it cannot set up its fault, or "ack ok <report>"
// when every check passed; a failed check exits non-zero.
func kernelWorker(t *testing.T, bin, dir, arg string, attr *syscall.SysProcAttr) string {
	t.Helper()
	cmd := workerCommand(t, dir, arg)
	if bin != "" {
		cmd.Path, cmd.Args[0] = bin, bin
	}
	cmd.SysProcAttr = attr
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.StdoutPipe()
	require.NoError(t, err)
	if err := cmd.Start(); err != nil {
		kernelSkip(t, "cannot start a worker with %+v: %v", attr, err)
	}
	a := acks(out)
	err = cmd.Wait()
	require.NoError(t, err, "worker failed:\n%s", stderr.String())
	require.Len(t, a, 1, "worker output; stderr:\n%s", stderr.String())
	if reason, ok := strings.CutPrefix(a[0], "skip "); ok {
		kernelSkip(t, "%s", reason)
	}
	report, ok := strings.CutPrefix(a[0], "ok")
	require.True(t, ok, a[0])
	return strings.TrimSpace(report)
}

// faultReport collects the checks of one worker, or of a test that makes
// its fault in its own process.
type faultReport struct {
	s     *Store
	errno syscall.Errno
	seen  []string
	// failf reports a failed check and ends the run: fail, which exits, in
	// a worker; t.Fatalf in a test's own process, where an exit would end
	// every later test unreported and skip the Cleanups that undo its
	// fault.
	failf func(format string, args ...any)
}

// expect requires err to match the errno, and records the operation.
func (r *faultReport) expect(op string, err error) {
	if err == nil {
		r.failf("%s succeeded, want %v", op, r.errno)
	}
	if !errors.Is(err, r.errno) {
		r.failf("%s: %v does not match %v", op, err, r.errno)
	}
	r.seen = append(r.seen, op)
}

// intact requires the record "keep" to hold keepData and no temp file to
// remain in the store.
func (r *faultReport) intact() {
	rec, err := r.s.Load(bg, "keep")
	if err != nil || string(rec.Data) != keepData {
		r.failf("keep lost: %v", err)
	}
	err = filepath.WalkDir(r.s.Dir(), func(p string, d fs.DirEntry, err error) error {
		if errors.Is(err, fs.ErrPermission) {
			return nil // a directory this worker may not read
		}
		if err == nil && strings.HasPrefix(d.Name(), tempPrefix) {
			return fmt.Errorf("temp file left: %s", p)
		}
		return err
	})
	if err != nil {
		r.failf("%v", err)
	}
}

func (r *faultReport) done() {
	r.intact()
	fmt.Printf("ack ok %v: %s\n", r.errno, strings.Join(r.seen, ", "))
}

// setNew is an Update fn that replaces the record.
func setNew(*Record) (*Record, error) { return &Record{Data: []byte("new")}, nil }

// newMountNamespace makes the worker's mounts private, so that nothing it
// mounts is seen outside it.
var newMountNamespace = &syscall.SysProcAttr{Unshareflags: syscall.CLONE_NEWNS}

func privateMounts() bool {
	if err := syscall.Mount("none", "/", "", syscall.MS_REC|syscall.MS_PRIVATE, ""); err != nil {
		fmt.Printf("ack skip cannot make mounts private: %v\n", err)
		return false
	}
	return true
}

// TestKernelENOSPC fills a 256 KiB tmpfs mounted in a private mount
// namespace. A record that does not fit fails with ENOSPC and leaves the
// old one; once the disk is full, Delete (a logout) still works.
func TestKernelENOSPC(t *testing.T) {
	if dir, _, ok := worker(t); ok {
		if !privateMounts() {
			return
		}
		if err := syscall.Mount("tmpfs", dir, "tmpfs", 0, "size=256k,mode=0700"); err != nil {
			fmt.Printf("ack skip cannot mount tmpfs: %v\n", err)
			return
		}
		s := workerStore(filepath.Join(dir, "store"), nil)
		r := &faultReport{s: s, errno: syscall.ENOSPC, failf: fail}
		if err := s.Save(bg, "keep", []byte(keepData), time.Time{}); err != nil {
			fail("save: %v", err)
		}
		big := make([]byte, 512<<10)
		r.expect("save", s.Save(bg, "keep", big, time.Time{}))
		r.expect("update", s.Update(bg, "keep", func(*Record) (*Record, error) { return &Record{Data: big}, nil }))
		r.intact()
		// Fill the disk with sessions until it refuses one.
		var filled int
		for ; ; filled++ {
			err := s.Save(bg, fmt.Sprintf("filler-%d", filled), make([]byte, 8<<10), time.Time{})
			if err != nil {
				r.expect("save to a full disk", err)
				break
			}
		}
		if filled == 0 {
			fail("not one filler fitted")
		}
		if err := s.Delete(bg, "filler-0"); err != nil {
			fail("delete on a full disk: %v", err)
		}
		r.done()
		return
	}
	dir := filepath.Join(t.TempDir(), "mnt")
	require.NoError(t, os.Mkdir(dir, 0o700))
	t.Log(kernelWorker(t, "", dir, "", newMountNamespace))
	ents, err := os.ReadDir(dir)
	require.NoError(t, err)
	require.Empty(t, ents, "the tmpfs was private to the worker")
}

// TestKernelEROFS opens a store through a read-only bind mount of itself:
// reads work, and every write, delete and sweep fails with EROFS.
func TestKernelEROFS(t *testing.T) {
	if dir, _, ok := worker(t); ok {
		if !privateMounts() {
			return
		}
		if err := syscall.Mount(dir, dir, "", syscall.MS_BIND, ""); err != nil {
			fmt.Printf("ack skip cannot bind mount: %v\n", err)
			return
		}
		if err := syscall.Mount("", dir, "", syscall.MS_REMOUNT|syscall.MS_BIND|syscall.MS_RDONLY, ""); err != nil {
			fmt.Printf("ack skip cannot remount read-only: %v\n", err)
			return
		}
		s, err := Open(dir, &Options{SweepInterval: -1})
		if err != nil {
			fail("open a read-only store: %v", err)
		}
		r := &faultReport{s: s, errno: syscall.EROFS, failf: fail}
		r.intact()
		r.expect("save", s.Save(bg, "keep", []byte("new"), time.Time{}))
		r.expect("save new stripe", s.Save(bg, "never-saved", []byte("new"), time.Time{}))
		r.expect("update", s.Update(bg, "keep", setNew))
		r.expect("delete", s.Delete(bg, "keep"))
		_, err = s.DeleteExpired(bg)
		r.expect("sweep", err)
		if _, err := s.Load(bg, "stale"); !errors.Is(err, ErrNotFound) {
			fail("stale: %v", err)
		}
		r.done()
		return
	}
	s := openTest(t, nil)
	require.NoError(t, s.Save(bg, "keep", []byte(keepData), time.Time{}))
	require.NoError(t, s.Save(bg, "stale", []byte("x"), time.Now().Add(-time.Hour)))
	before := treeHash(t, s.Dir())
	t.Log(kernelWorker(t, "", s.Dir(), "", newMountNamespace))
	require.Equal(t, before, treeHash(t, s.Dir()), "nothing changed")
}

// TestKernelEACCES runs a worker as uid 65534 (nobody) against a store it
// owns but for one shard directory that root owns, mode 0700: every
// operation on a record in that shard fails with EACCES. A store owned by
// root is refused as a whole, with ErrUnsafeRoot, before anything is read.
func TestKernelEACCES(t *testing.T) {
	const nobody = 65534
	if dir, arg, ok := worker(t); ok {
		if arg == "foreign" {
			_, err := Open(dir, &Options{SweepInterval: -1})
			if !errors.Is(err, ErrUnsafeRoot) {
				fail("open a store owned by root: %v", err)
			}
			fmt.Println("ack ok ErrUnsafeRoot")
			return
		}
		s := workerStore(dir, nil)
		r := &faultReport{s: s, errno: syscall.EACCES, failf: fail}
		_, err := s.Load(bg, "victim")
		r.expect("load", err)
		// The record may be fine: a caller told ErrCorrupt would delete it.
		if errors.Is(err, ErrCorrupt) {
			fail("load: a permission error reported as corruption: %v", err)
		}
		r.expect("save", s.Save(bg, "victim", []byte("new"), time.Time{}))
		err = s.Update(bg, "victim", setNew)
		r.expect("update", err)
		if errors.Is(err, ErrCorrupt) {
			fail("update: a permission error reported as corruption: %v", err)
		}
		r.expect("delete", s.Delete(bg, "victim"))
		// The rest of the store works.
		if err := s.Save(bg, "other", []byte("x"), time.Time{}); err != nil {
			fail("save elsewhere: %v", err)
		}
		if err := s.Delete(bg, "other"); err != nil {
			fail("delete elsewhere: %v", err)
		}
		r.done()
		return
	}
	if os.Geteuid() != 0 {
		kernelSkip(t, "needs root to run a worker as uid %d", nobody)
	}
	base := t.TempDir()
	// The worker must reach the store and run the test binary.
	for d := base; d != filepath.Dir(d) && strings.HasPrefix(d, os.TempDir()+"/"); d = filepath.Dir(d) {
		require.NoError(t, os.Chmod(d, 0o755))
	}
	bin := filepath.Join(base, "filestore.test")
	copyFile(t, os.Args[0], bin, 0o755)

	s, err := Open(filepath.Join(base, "store"), &Options{SweepInterval: -1})
	require.NoError(t, err)
	defer s.Close()
	require.NoError(t, s.Save(bg, "keep", []byte(keepData), time.Time{}))
	require.NoError(t, s.Save(bg, "victim", []byte("victim"), time.Time{}))
	victim, _ := s.refOf("victim")
	for _, id := range []string{"keep", "other"} {
		r, _ := s.refOf(id)
		require.NotEqual(t, victim.dirPath(), r.dirPath(), "ids share a shard")
		require.NoError(t, s.mkdirAll(r.dirPath()))
	}
	err = filepath.WalkDir(s.Dir(), func(p string, d fs.DirEntry, err error) error {
		if err != nil || strings.HasPrefix(p, victim.dirPath()) {
			return err
		}
		return os.Lchown(p, nobody, nobody)
	})
	require.NoError(t, err)
	before := treeHash(t, victim.dirPath())
	attr := &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: nobody, Gid: nobody}}
	t.Log(kernelWorker(t, bin, s.Dir(), "", attr))
	require.Equal(t, before, treeHash(t, victim.dirPath()), "the victim's shard is unchanged")

	// A store root owned by another uid is refused outright.
	foreign := openTest(t, nil)
	require.NoError(t, os.Chmod(foreign.Dir(), 0o755))
	t.Log(kernelWorker(t, bin, foreign.Dir(), "foreign", attr))
}

// TestKernelEPERM sets the immutable flag (chattr +i), which stops root
// too: on a record, a save, update or delete of it fails with EPERM, as
// does a sweep that would remove it; on a shard directory, creating a
// record in it fails with EPERM.
func TestKernelEPERM(t *testing.T) {
	checkHygiene(t)
	s := openTest(t, nil)
	require.NoError(t, s.Save(bg, "keep", []byte(keepData), time.Time{}))
	require.NoError(t, s.Save(bg, "stale", []byte("old"), time.Now().Add(-time.Hour)))
	keep, _ := s.refOf("keep")
	stale, _ := s.refOf("stale")
	if err := setImmutable(keep.path(), true); err != nil {
		kernelSkip(t, "cannot set the immutable flag on %s: %v", s.Dir(), err)
	}
	t.Cleanup(func() { _ = setImmutable(keep.path(), false) })
	require.NoError(t, setImmutable(stale.path(), true))
	t.Cleanup(func() { _ = setImmutable(stale.path(), false) })

	r := &faultReport{s: s, errno: syscall.EPERM, failf: t.Fatalf}
	r.expect("save", s.Save(bg, "keep", []byte("new"), time.Time{}))
	r.expect("update", s.Update(bg, "keep", setNew))
	r.expect("update delete", s.Update(bg, "keep", func(*Record) (*Record, error) { return nil, nil }))
	r.expect("delete", s.Delete(bg, "keep"))
	n, err := s.DeleteExpired(bg)
	r.expect("sweep", err)
	require.Zero(t, n)
	require.FileExists(t, stale.path())
	r.intact()

	// An immutable shard directory refuses new records.
	var id string
	var shard string
	for i := 0; shard == "" || shard == keep.dirPath() || shard == stale.dirPath(); i++ {
		id = fmt.Sprintf("new-%d", i)
		rf, _ := s.refOf(id)
		shard = rf.dirPath()
	}
	require.NoError(t, s.mkdirAll(shard))
	require.NoError(t, setImmutable(shard, true))
	t.Cleanup(func() { _ = setImmutable(shard, false) })
	r.expect("save into an immutable shard", s.Save(bg, id, []byte("x"), time.Time{}))
	r.intact()
	t.Logf("EPERM: %s", strings.Join(r.seen, ", "))
}

// Linux's FS_IOC_GETFLAGS, FS_IOC_SETFLAGS and FS_IMMUTABLE_FL.
const (
	fsIocGetflags = 0x80086601
	fsIocSetflags = 0x40086602
	fsImmutableFl = 0x10
)

// setImmutable sets or clears path's immutable flag, as chattr does.
func setImmutable(path string, on bool) error {
	f, err := os.OpenFile(path, os.O_RDONLY|syscall.O_NOFOLLOW|syscall.O_NONBLOCK, 0)
	if err != nil {
		return err
	}
	defer f.Close()
	var flags int32
	if _, _, e := syscall.Syscall(syscall.SYS_IOCTL, f.Fd(), fsIocGetflags, uintptr(unsafe.Pointer(&flags))); e != 0 {
		return e
	}
	if on {
		flags |= fsImmutableFl
	} else {
		flags &^= fsImmutableFl
	}
	if _, _, e := syscall.Syscall(syscall.SYS_IOCTL, f.Fd(), fsIocSetflags, uintptr(unsafe.Pointer(&flags))); e != 0 {
		return e
	}
	return nil
}

// TestKernelEFBIG runs a worker under RLIMIT_FSIZE of 64 KiB, with SIGXFSZ
// ignored so that the write fails instead of killing the process: a record
// over the limit fails with EFBIG, one under it still saves.
func TestKernelEFBIG(t *testing.T) {
	if dir, _, ok := worker(t); ok {
		signal.Ignore(syscall.SIGXFSZ)
		s := workerStore(dir, nil)
		var lim syscall.Rlimit
		if err := syscall.Getrlimit(syscall.RLIMIT_FSIZE, &lim); err != nil {
			fmt.Printf("ack skip getrlimit: %v\n", err)
			return
		}
		lim.Cur = 64 << 10
		if err := syscall.Setrlimit(syscall.RLIMIT_FSIZE, &lim); err != nil {
			fmt.Printf("ack skip setrlimit: %v\n", err)
			return
		}
		r := &faultReport{s: s, errno: syscall.EFBIG, failf: fail}
		big := make([]byte, 256<<10)
		r.expect("save", s.Save(bg, "keep", big, time.Time{}))
		r.expect("update", s.Update(bg, "keep", func(*Record) (*Record, error) { return &Record{Data: big}, nil }))
		r.expect("save new", s.Save(bg, "big", big, time.Time{}))
		if err := s.Save(bg, "small", make([]byte, 32<<10), time.Time{}); err != nil {
			fail("save under the limit: %v", err)
		}
		r.done()
		return
	}
	s := openTest(t, nil)
	require.NoError(t, s.Save(bg, "keep", []byte(keepData), time.Time{}))
	t.Log(kernelWorker(t, "", s.Dir(), "", nil))
	require.Equal(t, keepData, loadValue(t, s, "keep"))
	_, err := s.Load(bg, "big")
	require.ErrorIs(t, err, ErrNotFound)
	requireNoTempFiles(t, s.Dir())
}

// treeHash describes every file under root: path, mode, size and content.
func treeHash(t *testing.T, root string) string {
	t.Helper()
	var b strings.Builder
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		fi, err := d.Info()
		if err != nil {
			return err
		}
		fmt.Fprintf(&b, "%s %v %d", p, fi.Mode(), fi.Size())
		if fi.Mode().IsRegular() {
			c, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			fmt.Fprintf(&b, " %x", c)
		}
		b.WriteByte('\n')
		return nil
	})
	require.NoError(t, err)
	return b.String()
}

func copyFile(t *testing.T, from, to string, mode fs.FileMode) {
	t.Helper()
	src, err := os.Open(from)
	require.NoError(t, err)
	defer src.Close()
	dst, err := os.OpenFile(to, os.O_WRONLY|os.O_CREATE|os.O_EXCL, mode)
	require.NoError(t, err)
	_, err = io.Copy(dst, src)
	require.NoError(t, err)
	require.NoError(t, dst.Close())
}
