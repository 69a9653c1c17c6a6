package filestore

import (
	"context"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"
)

// faultFS wraps an fsys and fails calls on demand with a given errno, the
// way LevelDB's and Pebble's error-injecting filesystems do. Calls count
// only while it is armed; the Nth counted call fails, and with persistent
// set so does every one after it. It records every counted call, so tests
// can check the order of what the engine did around a failure.
//
// It wraps the inner fsys's own dirs (faultDir), so that over osFS the
// calls a store makes relative to a shard directory's descriptor (fdDir,
// what production uses) are counted and can fail one by one, like the
// calls it makes by path.
//
// A failed call has no effect, except Close, which like close(2) releases
// the descriptor even when it reports an error. faultFS is safe for
// concurrent use.
type faultFS struct {
	inner fsys

	mu         sync.Mutex
	armed      bool
	n          int // counted calls so far
	failAt     int // 1-based; 0 never fails
	persistent bool
	errno      syscall.Errno
	calls      []faultCall

	fstype *fsType // what Statfs reports, if set; set before use
}

// faultCall is one counted call.
type faultCall struct {
	op       string // "open", "sync", "rename", ...
	path     string // for rename and link, the old path
	to       string // for rename and link, the new path
	dir      bool   // a call on a directory handle
	readOnly bool   // a call on a handle opened O_RDONLY (directories are)
	failed   bool   // the call was made to fail
}

func (c faultCall) String() string {
	s := c.op + " " + filepath.Base(c.path)
	if c.to != "" {
		s += " -> " + filepath.Base(c.to)
	}
	if c.failed {
		s += " (failed)"
	}
	return s
}

// arm makes the failAt-th call from now fail with errno, and with
// persistent every call after it too. It forgets earlier calls.
func (f *faultFS) arm(failAt int, persistent bool, errno syscall.Errno) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.armed, f.n, f.failAt, f.persistent, f.errno, f.calls = true, 0, failAt, persistent, errno, nil
}

// disarm stops counting and failing, and returns the calls made while armed.
func (f *faultFS) disarm() []faultCall {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.armed = false
	return f.calls
}

// fault counts a call and reports whether it must fail.
func (f *faultFS) fault(c faultCall) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	if !f.armed {
		return false
	}
	f.n++
	c.failed = f.failAt > 0 && (f.n == f.failAt || f.persistent && f.n > f.failAt)
	f.calls = append(f.calls, c)
	return c.failed
}

func (f *faultFS) pathErr(op, path string) error {
	return &fs.PathError{Op: op, Path: path, Err: f.errno}
}

func (f *faultFS) linkErr(op, oldpath, newpath string) error {
	return &os.LinkError{Op: op, Old: oldpath, New: newpath, Err: f.errno}
}

func (f *faultFS) OpenFile(name string, flag int, perm fs.FileMode) (file, error) {
	if f.fault(faultCall{op: "open", path: name}) {
		return nil, f.pathErr("open", name)
	}
	inner, err := f.inner.OpenFile(name, flag, perm)
	if err != nil {
		return nil, err
	}
	return f.wrapFile(inner, flag), nil
}

func (f *faultFS) wrapFile(inner file, flag int) file {
	return &faultFile{fs: f, inner: inner, readOnly: flag&(os.O_WRONLY|os.O_RDWR) == 0}
}

// OpenDir opens the inner fsys's dir and wraps it, so that each of its
// calls is counted, and can fail, as its own.
func (f *faultFS) OpenDir(name string) (dir, error) {
	if f.fault(faultCall{op: "opendir", path: name}) {
		return nil, f.pathErr("open", name)
	}
	inner, err := f.inner.OpenDir(name)
	if err != nil {
		return nil, err
	}
	return &faultDir{fs: f, inner: inner}, nil
}

func (f *faultFS) Rename(oldpath, newpath string) error {
	if f.fault(faultCall{op: "rename", path: oldpath, to: newpath}) {
		return f.linkErr("rename", oldpath, newpath)
	}
	return f.inner.Rename(oldpath, newpath)
}

func (f *faultFS) Remove(name string) error {
	if f.fault(faultCall{op: "remove", path: name}) {
		return f.pathErr("remove", name)
	}
	return f.inner.Remove(name)
}

func (f *faultFS) Mkdir(name string, perm fs.FileMode) error {
	if f.fault(faultCall{op: "mkdir", path: name}) {
		return f.pathErr("mkdir", name)
	}
	return f.inner.Mkdir(name, perm)
}

func (f *faultFS) MkdirAll(name string, perm fs.FileMode) error {
	if f.fault(faultCall{op: "mkdirall", path: name}) {
		return f.pathErr("mkdir", name)
	}
	return f.inner.MkdirAll(name, perm)
}

func (f *faultFS) Chmod(name string, mode fs.FileMode) error {
	if f.fault(faultCall{op: "chmod", path: name}) {
		return f.pathErr("chmod", name)
	}
	return f.inner.Chmod(name, mode)
}

func (f *faultFS) Lstat(name string) (fileStat, error) {
	if f.fault(faultCall{op: "lstat", path: name}) {
		return fileStat{}, f.pathErr("lstat", name)
	}
	return f.inner.Lstat(name)
}

func (f *faultFS) Link(oldname, newname string) error {
	if f.fault(faultCall{op: "link", path: oldname, to: newname}) {
		return f.linkErr("link", oldname, newname)
	}
	return f.inner.Link(oldname, newname)
}

// Lock counts as one call; releasing the lock is not counted and never
// fails, so that an injected fault cannot leave a lock held.
func (f *faultFS) Lock(ctx context.Context, name string, try bool) (func() error, error) {
	if f.fault(faultCall{op: "lock", path: name}) {
		return nil, fmt.Errorf("lock: %w", f.pathErr("open", name))
	}
	return f.inner.Lock(ctx, name, try)
}

// OpenLock counts as one call, and so does each TryLock of the lock file it
// returns; as with Lock, releasing is not counted and never fails.
func (f *faultFS) OpenLock(name string) (lockFile, error) {
	if f.fault(faultCall{op: "openlock", path: name}) {
		return nil, f.pathErr("open", name)
	}
	inner, err := f.inner.OpenLock(name)
	if err != nil {
		return nil, err
	}
	return &faultLock{fs: f, inner: inner, name: name}, nil
}

// Statfs counts as one call. With fstype set it reports that type, for
// the given path and any under it, instead of the inner fsys's: how tests
// put a store on each kind of filesystem.
func (f *faultFS) Statfs(name string) (fsType, error) {
	if f.fault(faultCall{op: "statfs", path: name}) {
		return fsType{}, f.pathErr("statfs", name)
	}
	t, err := f.inner.Statfs(name)
	if err == nil && f.fstype != nil {
		t = *f.fstype
	}
	return t, err
}

// faultLock is a lock file opened through a faultFS.
type faultLock struct {
	fs    *faultFS
	inner lockFile
	name  string
}

func (l *faultLock) TryLock() error {
	if l.fs.fault(faultCall{op: "lock", path: l.name}) {
		return l.fs.pathErr("flock", l.name)
	}
	return l.inner.TryLock()
}

func (l *faultLock) Unlock() error { return l.inner.Unlock() }
func (l *faultLock) Close() error  { return l.inner.Close() }

// faultDir is a dir opened through a faultFS. Its calls on names record
// the name's path, as the same calls by path would.
type faultDir struct {
	fs    *faultFS
	inner dir
}

func (d *faultDir) join(name string) string {
	return d.inner.Path() + string(filepath.Separator) + name
}

// call counts a call on the directory itself.
func (d *faultDir) call(op string) bool {
	return d.fs.fault(faultCall{op: op, path: d.inner.Path(), dir: true, readOnly: true})
}

func (d *faultDir) Path() string { return d.inner.Path() }

func (d *faultDir) ReadNames(n int) ([]string, error) {
	if d.call("readdir") {
		return nil, d.fs.pathErr("readdirent", d.Path())
	}
	return d.inner.ReadNames(n)
}

func (d *faultDir) Lstat(name string) (fileStat, error) {
	if d.fs.fault(faultCall{op: "lstat", path: d.join(name)}) {
		return fileStat{}, d.fs.pathErr("lstat", d.join(name))
	}
	return d.inner.Lstat(name)
}

func (d *faultDir) Open(name string, flag int, perm fs.FileMode) (file, error) {
	if d.fs.fault(faultCall{op: "open", path: d.join(name)}) {
		return nil, d.fs.pathErr("open", d.join(name))
	}
	inner, err := d.inner.Open(name, flag, perm)
	if err != nil {
		return nil, err
	}
	return d.fs.wrapFile(inner, flag), nil
}

func (d *faultDir) Remove(name string) error {
	if d.fs.fault(faultCall{op: "remove", path: d.join(name)}) {
		return d.fs.pathErr("remove", d.join(name))
	}
	return d.inner.Remove(name)
}

func (d *faultDir) Rename(oldname, newname string) error {
	if d.fs.fault(faultCall{op: "rename", path: d.join(oldname), to: d.join(newname)}) {
		return d.fs.linkErr("rename", d.join(oldname), d.join(newname))
	}
	return d.inner.Rename(oldname, newname)
}

func (d *faultDir) Stat() (fileStat, error) {
	if d.call("fstat") {
		return fileStat{}, d.fs.pathErr("stat", d.Path())
	}
	return d.inner.Stat()
}

func (d *faultDir) Sync() error {
	if d.call("sync") {
		return d.fs.pathErr("sync", d.Path())
	}
	return d.inner.Sync()
}

func (d *faultDir) Close() error {
	failed := d.call("close")
	err := d.inner.Close()
	if failed {
		return d.fs.pathErr("close", d.Path())
	}
	return err
}

// faultFile is a file opened through a faultFS.
type faultFile struct {
	fs       *faultFS
	inner    file
	readOnly bool
}

func (f *faultFile) call(op string) bool {
	return f.fs.fault(faultCall{op: op, path: f.inner.Name(), readOnly: f.readOnly})
}

func (f *faultFile) Name() string { return f.inner.Name() }

func (f *faultFile) Read(p []byte) (int, error) {
	if f.call("read") {
		return 0, f.fs.pathErr("read", f.Name())
	}
	return f.inner.Read(p)
}

func (f *faultFile) Write(p []byte) (int, error) {
	if f.call("write") {
		return 0, f.fs.pathErr("write", f.Name())
	}
	return f.inner.Write(p)
}

func (f *faultFile) Close() error {
	failed := f.call("close")
	err := f.inner.Close()
	if failed {
		return f.fs.pathErr("close", f.Name())
	}
	return err
}

func (f *faultFile) Sync() error {
	if f.call("sync") {
		return f.fs.pathErr("sync", f.Name())
	}
	return f.inner.Sync()
}

func (f *faultFile) Stat() (fileStat, error) {
	if f.call("fstat") {
		return fileStat{}, f.fs.pathErr("stat", f.Name())
	}
	return f.inner.Stat()
}

func (f *faultFile) Chmod(mode fs.FileMode) error {
	if f.call("fchmod") {
		return f.fs.pathErr("chmod", f.Name())
	}
	return f.inner.Chmod(mode)
}

// SetModTime is not counted and never fails: the engine ignores its
// error, since the hint it sets is never needed for correctness.
func (f *faultFile) SetModTime(t time.Time) error { return f.inner.SetModTime(t) }

// renameAfterFailedSync returns the first rename or link of a file made
// after an fsync of that file failed, if any: after a failed fsync the
// kernel may have dropped the dirty pages, so publishing the file would
// publish garbage (fsyncgate).
func renameAfterFailedSync(calls []faultCall) (faultCall, bool) {
	failed := map[string]bool{}
	for _, c := range calls {
		switch {
		case c.op == "sync" && c.failed && !c.dir:
			failed[c.path] = true
		case (c.op == "rename" || c.op == "link") && failed[c.path]:
			return c, true
		}
	}
	return faultCall{}, false
}

// ignorable reports whether an operation may succeed although call c
// failed: opening a directory it can do without, closing a descriptor it
// only read from, and removing a temp file whose content has already been
// published under another name.
// tableCall reports whether c, one of calls, is a call of making the
// change-counter table (cache.go): its temp file, its link into place, or
// the directory sync after that link. A store whose table cannot be made
// works without it, so a fault there is ignored by design; the same calls
// made for the marker fail Open.
func tableCall(calls []faultCall, c faultCall) bool {
	base := filepath.Base(c.path)
	if base == tableName || strings.HasPrefix(base, initPrefix) {
		return true
	}
	if !c.dir && c.op != "opendir" {
		return false
	}
	linked := false
	for _, p := range calls {
		if p == c { // the failed call: no other call is equal to it
			return linked
		}
		if p.op == "link" && filepath.Base(p.to) == tableName {
			linked = true
		}
	}
	return false
}

// readOnlyStoreLock reports whether c is the store lock failing to open
// (or be made) on a read-only filesystem: Open goes on without it, since
// nothing can reshard a store there (storelock.go).
func readOnlyStoreLock(errno syscall.Errno, c faultCall) bool {
	return errno == syscall.EROFS && (c.op == "open" || c.op == "openlock") && filepath.Base(c.path) == storeLockName
}

func ignorable(c faultCall) bool {
	switch c.op {
	case "opendir":
		// The dir cache names files by path when it cannot open a shard
		// directory. A walk that cannot open one fails, and the walking
		// operations check what they visited.
		return true
	case "close":
		return c.readOnly
	case "remove":
		return strings.HasPrefix(filepath.Base(c.path), initPrefix)
	}
	return false
}
