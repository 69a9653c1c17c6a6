package filestore

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// I/O fault tests (issue 5, figure 4). For every operation, errno and
// failure mode (one call fails, or every call from then on), the test
// fails call 1, then call 2, and so on until the operation completes
// without reaching the failing call. After each run it checks that
//
//   - the operation returned an error matching the errno (errors.Is), or
//     succeeded because the failed call was one it may ignore;
//   - nothing panicked, and no descriptor or goroutine outlived the run;
//   - the record is the old version or, if the operation went far enough,
//     the new one, and exactly the new one if it succeeded;
//   - no file was renamed into place after its fsync failed;
//   - the record's lock is free again, and a successful operation left no
//     temp file.

var faultErrnos = []syscall.Errno{
	syscall.ENOSPC, syscall.EDQUOT, syscall.EIO, syscall.EACCES,
	syscall.EPERM, syscall.EROFS, syscall.EFBIG, syscall.EMFILE,
}

// faultIDs: the record every operation works on, and records that only
// some operations touch. Never printed.
const (
	faultID      = "fault-session"
	faultOther   = "fault-other-session"
	faultExpired = "fault-expired-session"
)

// faultOp is one operation under fault injection.
type faultOp struct {
	name string
	// prepare runs on a store without faults before each run (ref does
	// not sync, to keep the tests fast; the fsyncs under test are those
	// of the operation).
	prepare func(t *testing.T, ref *Store, root string)
	// run performs the operation through fsys. Unless the op opens the
	// store itself, s is a store already open on fsys.
	run func(s *Store, root string, fsys fsys) error
	// opens is set when run opens the store itself, on fsys.
	opens bool
	// old and new are what Load of faultID must return before and after
	// the operation ("" for no record).
	old, new string
	// check, if set, checks the store after each run; ok tells whether the
	// operation succeeded.
	check func(t *testing.T, ref *Store, root string, ok bool)
}

func faultOps() []faultOp {
	save := func(t *testing.T, ref *Store, _ string) {
		require.NoError(t, ref.Save(bg, faultID, []byte("old"), time.Time{}))
	}
	return []faultOp{{
		name:    "open",
		prepare: save,
		opens:   true,
		run: func(_ *Store, root string, fsys fsys) error {
			s, err := open(root, &Options{SweepInterval: time.Hour}, fsys)
			if err != nil {
				return err
			}
			return s.Close()
		},
		old: "old", new: "old",
	}, {
		name: "create",
		prepare: func(t *testing.T, ref *Store, root string) {
			save(t, ref, root)
			require.NoError(t, os.RemoveAll(filepath.Join(root, "new")))
		},
		opens: true,
		run: func(_ *Store, root string, fsys fsys) error {
			s, err := open(filepath.Join(root, "new"), &Options{SweepInterval: time.Hour}, fsys)
			if err != nil {
				return err
			}
			return s.Close()
		},
		old: "old", new: "old",
		check: func(t *testing.T, _ *Store, root string, _ bool) {
			// Whatever a failed creation left behind, Open finishes it.
			s, err := Open(filepath.Join(root, "new"), &Options{SweepInterval: -1})
			require.NoError(t, err)
			defer s.Close()
			require.NoError(t, s.Save(bg, faultOther, []byte("x"), time.Time{}))
			// A temp file the failed Open could not remove is an orphan
			// that a sweep past the grace period reclaims.
			s.now = func() time.Time { return time.Now().Add(2 * staleTempAge) }
			_, err = s.DeleteExpired(bg)
			require.NoError(t, err)
			requireNoTempFiles(t, s.Dir())
		},
	}, {
		name:    "save",
		prepare: save,
		run: func(s *Store, _ string, _ fsys) error {
			return s.Save(bg, faultID, []byte("new"), time.Time{})
		},
		old: "old", new: "new",
	}, {
		name: "save-new-shard",
		prepare: func(t *testing.T, ref *Store, _ string) {
			// The shard's top directory: Save makes every level again.
			require.NoError(t, os.RemoveAll(filepath.Join(ref.data, mustRef(t, ref, faultID).hex[:ref.layout.width])))
		},
		run: func(s *Store, _ string, _ fsys) error {
			return s.Save(bg, faultID, []byte("new"), time.Time{})
		},
		old: "", new: "new",
	}, {
		name:    "update",
		prepare: save,
		run: func(s *Store, _ string, _ fsys) error {
			return s.Update(bg, faultID, func(cur *Record) (*Record, error) {
				if cur == nil || string(cur.Data) != "old" {
					return nil, errors.New("update saw the wrong record")
				}
				return &Record{Data: []byte("new")}, nil
			})
		},
		old: "old", new: "new",
	}, {
		name:    "delete",
		prepare: save,
		run:     func(s *Store, _ string, _ fsys) error { return s.Delete(bg, faultID) },
		old:     "old", new: "",
	}, {
		name:    "load",
		prepare: save,
		run: func(s *Store, _ string, _ fsys) error {
			r, err := s.Load(bg, faultID)
			if err == nil && string(r.Data) != "old" {
				return errors.New("load returned the wrong data")
			}
			return err
		},
		old: "old", new: "old",
	}, {
		name: "foreach",
		prepare: func(t *testing.T, ref *Store, root string) {
			save(t, ref, root)
			require.NoError(t, ref.Save(bg, faultOther, []byte("other"), time.Time{}))
		},
		run: func(s *Store, _ string, _ fsys) error {
			n := 0
			err := s.ForEach(bg, func(Record) error { n++; return nil })
			if err == nil && n != 2 {
				return fmt.Errorf("visited %d records, want 2", n)
			}
			return err
		},
		old: "old", new: "old",
	}, {
		name: "delete-expired",
		prepare: func(t *testing.T, ref *Store, root string) {
			save(t, ref, root)
			require.NoError(t, ref.Save(bg, faultExpired, []byte("x"), time.Now().Add(-time.Hour)))
			// An orphaned temp file, stale to a store whose clock runs
			// ahead (see run).
			r := mustRef(t, ref, faultOther)
			require.NoError(t, os.MkdirAll(r.dirPath(), 0o700))
			require.NoError(t, os.WriteFile(filepath.Join(r.dirPath(), tempPrefix+r.hex+"-orphan"), nil, 0o600))
		},
		run: func(s *Store, _ string, _ fsys) error {
			s.now = func() time.Time { return time.Now().Add(2 * staleTempAge) }
			n, err := s.DeleteExpired(bg)
			if err == nil && n != 1 {
				return fmt.Errorf("swept %d records, want 1", n)
			}
			return err
		},
		old: "old", new: "old",
		check: func(t *testing.T, ref *Store, _ string, ok bool) {
			if !ok {
				return
			}
			_, err := os.Lstat(mustRef(t, ref, faultExpired).path())
			require.ErrorIs(t, err, os.ErrNotExist, "expired record not swept")
		},
	}}
}

func mustRef(t *testing.T, s *Store, id string) ref {
	r, err := s.refOf(id)
	require.NoError(t, err)
	return r
}

// faultResult counts what a fault test saw.
type faultResult struct {
	runs, failed, ignored int
	ignoredCalls          map[string]int // "op/call" -> runs that succeeded past it
	calls                 map[string]int // call kind -> times failed
}

func TestIOFaults(t *testing.T) {
	checkHygiene(t)
	errnos := faultErrnos
	if testing.Short() {
		errnos = []syscall.Errno{syscall.ENOSPC, syscall.EIO}
	}
	// 1x2 keeps shard directories open, so a store names records relative
	// to their descriptors (fdDir), as production does by default; 2x2
	// names them by path.
	for _, layout := range []string{"1x2", "2x2"} {
		t.Run(layout, func(t *testing.T) { faultMatrix(t, layout, errnos) })
	}
}

// TestIOFaultsTrimmingUmask runs the matrix again under a umask that
// trims the owner's bits of the store's modes, so that the chmod calls that
// restore them are made, and fail, too.
func TestIOFaultsTrimmingUmask(t *testing.T) {
	checkHygiene(t)
	old := syscall.Umask(0o277)
	t.Cleanup(func() { syscall.Umask(old) })
	require.True(t, umaskTrims())
	errnos := []syscall.Errno{syscall.EPERM, syscall.EIO}
	if testing.Short() {
		errnos = errnos[:1]
	}
	res := faultMatrix(t, "2x2", errnos)
	require.Positive(t, res.calls["fchmod"]+res.calls["chmod"], "no chmod was made under umask 0277")
}

// faultMatrix runs every operation under every errno, one-shot and
// persistent, and logs the totals.
func faultMatrix(t *testing.T, layout string, errnos []syscall.Errno) faultResult {
	total := faultResult{ignoredCalls: map[string]int{}, calls: map[string]int{}}
	for _, op := range faultOps() {
		t.Run(op.name, func(t *testing.T) {
			for _, errno := range errnos {
				for _, persistent := range []bool{false, true} {
					mode := "one-shot"
					if persistent {
						mode = "persistent"
					}
					t.Run(errnoName(errno)+"/"+mode, func(t *testing.T) {
						res := runFaults(t, op, layout, errno, persistent)
						total.runs += res.runs
						total.failed += res.failed
						total.ignored += res.ignored
						for k, v := range res.ignoredCalls {
							total.ignoredCalls[op.name+"/"+k] += v
						}
						for k, v := range res.calls {
							total.calls[k] += v
						}
					})
				}
			}
		})
	}
	t.Logf("%d fault runs: %d returned the injected error, %d succeeded past an ignorable failure %v", total.runs, total.failed, total.ignored, total.ignoredCalls)
	return total
}

func errnoName(e syscall.Errno) string {
	for _, n := range []struct {
		e    syscall.Errno
		name string
	}{
		{syscall.ENOSPC, "ENOSPC"}, {syscall.EDQUOT, "EDQUOT"}, {syscall.EIO, "EIO"}, {syscall.EACCES, "EACCES"},
		{syscall.EPERM, "EPERM"}, {syscall.EROFS, "EROFS"}, {syscall.EFBIG, "EFBIG"}, {syscall.EMFILE, "EMFILE"},
	} {
		if n.e == e {
			return n.name
		}
	}
	return fmt.Sprintf("errno%d", int(e))
}

// runFaults fails call 1, 2, ... of op until op completes untouched.
func runFaults(t *testing.T, op faultOp, layout string, errno syscall.Errno, persistent bool) faultResult {
	root := filepath.Join(tmpfsDir(t), "store")
	opts := &Options{SweepInterval: -1, Layout: layout}
	// ref checks and resets the store without faults and without fsync.
	ref, err := Open(root, &Options{SweepInterval: -1, NoSync: true, Layout: opts.Layout})
	require.NoError(t, err)
	defer ref.Close()

	res := faultResult{ignoredCalls: map[string]int{}, calls: map[string]int{}}
	for k := 1; ; k++ {
		require.Less(t, k, 1000, "the operation never completed")
		op.prepare(t, ref, root)
		ffs := &faultFS{inner: osFS{}}
		var s *Store
		if !op.opens {
			s, err = open(root, opts, ffs)
			require.NoError(t, err)
		}
		before := snapshotHygiene(t)
		// Temp files earlier runs could not remove are orphans for the
		// sweeper; only this run's count.
		oldTemps := tempFiles(t, root)

		ffs.arm(k, persistent, errno)
		err := runCatching(func() error { return op.run(s, root, ffs) })
		calls := ffs.disarm()
		res.runs++
		where := fmt.Sprintf("fail call %d of %d %v", k, len(calls), calls)

		var failed []faultCall
		for _, c := range calls {
			if c.failed {
				failed = append(failed, c)
				res.calls[c.op]++
			}
		}
		switch {
		case len(failed) == 0:
			require.NoError(t, err, "no fault injected: %s", where)
		case err == nil:
			for _, c := range failed {
				require.True(t, ignorable(c) || tableCall(calls, c) || readOnlyStoreLock(errno, c), "%s: succeeded although %v failed", where, c)
				kind := c.op
				if c.dir {
					kind += "-dir"
				}
				res.ignoredCalls[kind]++
			}
			res.ignored++
		default:
			var pe *panicError
			require.False(t, errors.As(err, &pe), "%s: %v", where, err)
			require.ErrorIs(t, err, errno, "%s", where)
			// ErrCorrupt says the file is bad, and callers may act on
			// that (Update's doc suggests deleting such a record); an I/O
			// error says nothing about the file.
			require.NotErrorIs(t, err, ErrCorrupt, "%s: an I/O error reported as corruption", where)
			require.NotContains(t, err.Error(), faultID, "an id leaked into an error")
			requireNoRepeatedOp(t, err)
			res.failed++
		}
		if c, ok := renameAfterFailedSync(calls); ok {
			t.Fatalf("%s: %v after its fsync failed", where, c)
		}

		// The lock is free again: an Update on the same store gets it.
		if s != nil {
			ctx, cancel := context.WithTimeout(bg, 10*time.Second)
			errProbe := errors.New("probe")
			lerr := s.Update(ctx, faultID, func(*Record) (*Record, error) { return nil, errProbe })
			cancel()
			require.ErrorIs(t, lerr, errProbe, "%s: lock not released", where)
			require.NoError(t, s.Close())
		}
		before.requireSettled(t)

		// The record is old or new, never torn; exactly new on success.
		got := ""
		r, lerr := ref.Load(bg, faultID)
		if lerr == nil {
			got = string(r.Data)
		} else {
			require.ErrorIs(t, lerr, ErrNotFound, "%s: record unreadable afterwards", where)
		}
		if err == nil {
			require.Equal(t, op.new, got, "%s", where)
			if !slices.ContainsFunc(failed, func(c faultCall) bool { return c.op == "remove" }) {
				newTemps := slices.DeleteFunc(tempFiles(t, root), func(p string) bool { return slices.Contains(oldTemps, p) })
				require.Empty(t, newTemps, "%s: temp files left behind", where)
			}
		} else {
			require.Contains(t, []string{op.old, op.new}, got, "%s", where)
		}
		if op.check != nil {
			op.check(t, ref, root, err == nil)
		}
		require.NoError(t, ref.ForEach(bg, func(Record) error { return nil }), "%s", where)
		if len(failed) == 0 {
			return res
		}
	}
}

// tmpfsDir returns a fresh directory on a tmpfs if there is one, where
// fsync costs nothing, and t.TempDir() otherwise. The fault tests make
// thousands of real fsync calls whose durability they do not check.
func tmpfsDir(t *testing.T) string {
	var st syscall.Statfs_t
	const tmpfsMagic = 0x01021994
	if err := syscall.Statfs("/dev/shm", &st); err == nil && st.Type == tmpfsMagic {
		if dir, err := os.MkdirTemp("/dev/shm", "filestore-test-"); err == nil {
			t.Cleanup(func() { _ = os.RemoveAll(dir) })
			return dir
		}
	}
	return t.TempDir()
}

// panicError is a panic recovered by runCatching.
type panicError struct{ v any }

func (e *panicError) Error() string { return fmt.Sprintf("panic: %v", e.v) }

func runCatching(fn func() error) (err error) {
	defer func() {
		if v := recover(); v != nil {
			err = &panicError{v}
		}
	}()
	return fn()
}

// TestFaultFSRecordsOrder checks the checker: a failed fsync followed by a
// rename of the same file is reported, a rename of another file is not.
func TestFaultFSRecordsOrder(t *testing.T) {
	calls := []faultCall{
		{op: "sync", path: "/d/.tmp-a", failed: true},
		{op: "rename", path: "/d/.tmp-b", to: "/d/b"},
	}
	_, ok := renameAfterFailedSync(calls)
	require.False(t, ok)
	calls = append(calls, faultCall{op: "rename", path: "/d/.tmp-a", to: "/d/a"})
	c, ok := renameAfterFailedSync(calls)
	require.True(t, ok)
	require.True(t, strings.HasSuffix(c.to, "/a"))
}
