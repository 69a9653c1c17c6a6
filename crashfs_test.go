package filestore

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"maps"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"
)

// crashFS is an in-memory fsys that knows what a power loss would keep, in
// the manner of LevelDB's FaultInjectionTestEnv and Pebble's crashable
// MemFS. For every file it tracks the content written and the content as of
// its last fsync; for every directory, its entries and the entries as of
// its last fsync, plus the entry changes made since. An fsync of a file
// makes its content durable but not the name it was created under; only an
// fsync of the directory does that.
//
// crash returns the filesystem a reboot would find. crashFS is safe for
// concurrent use, but the power-loss tests drive it from one goroutine: the
// order of calls is the thing under test.
type crashFS struct {
	mu    sync.Mutex
	root  *memNode
	locks map[string]chan struct{}
	calls int
	// after, if set, is called after every call, with the mutex released
	// and a short description of the call (paths are hashed names only).
	after func(call string)
}

// crashMode is what a power loss keeps of what was never synced.
type crashMode int

const (
	// keepSynced keeps only synced file content and synced directory
	// entries: the worst case the fsyncs are meant to survive.
	keepSynced crashMode = iota
	// keepAll keeps everything, as a process crash does.
	keepAll
	// keepRandom keeps a random subset of the unsynced directory changes,
	// applied in order, and for each file a random prefix of the bytes
	// written since its last sync.
	keepRandom
)

func (m crashMode) String() string {
	return [...]string{"synced-only", "all", "random"}[m]
}

type memNode struct {
	dir   bool
	mode  fs.FileMode
	mtime time.Time

	// A file's content now, and as of its last fsync.
	data, synced []byte

	// A directory's entries now, as of its last fsync, and the changes
	// made since, in order.
	entries, durable map[string]*memNode
	log              []dirChange
}

// dirChange is one change to a directory's entries: name now refers to
// node, or is gone if node is nil. A rename within the directory also
// removes from, atomically.
type dirChange struct {
	name string
	node *memNode
	from string
}

func newDirNode(mode fs.FileMode) *memNode {
	return &memNode{dir: true, mode: mode, mtime: time.Now(), entries: map[string]*memNode{}, durable: map[string]*memNode{}}
}

// newCrashFS returns a crashFS holding the directory base and its parents,
// all durable and empty.
func newCrashFS(base string) *crashFS {
	m := &crashFS{root: newDirNode(0o755), locks: map[string]chan struct{}{}}
	n := m.root
	for _, part := range splitPath(base) {
		c := newDirNode(0o755)
		n.entries[part] = c
		n.durable[part] = c
		n = c
	}
	return m
}

func splitPath(p string) []string {
	p = filepath.Clean(p)
	if p == "/" {
		return nil
	}
	return strings.Split(strings.TrimPrefix(p, "/"), "/")
}

func pathErr(op, path string, err error) error { return &fs.PathError{Op: op, Path: path, Err: err} }

// lookup returns the node at path. The caller holds m.mu.
func (m *crashFS) lookup(path string) (*memNode, error) {
	n := m.root
	for _, part := range splitPath(path) {
		if !n.dir {
			return nil, syscall.ENOTDIR
		}
		c, ok := n.entries[part]
		if !ok {
			return nil, syscall.ENOENT
		}
		n = c
	}
	return n, nil
}

// parent returns the directory holding path, and path's last element.
func (m *crashFS) parent(path string) (*memNode, string, error) {
	d, err := m.lookup(filepath.Dir(path))
	if err != nil {
		return nil, "", err
	}
	if !d.dir {
		return nil, "", syscall.ENOTDIR
	}
	return d, filepath.Base(path), nil
}

func (d *memNode) set(name string, n *memNode) {
	if n == nil {
		delete(d.entries, name)
	} else {
		d.entries[name] = n
	}
	d.log = append(d.log, dirChange{name: name, node: n})
	d.mtime = time.Now()
}

// done counts a call and reports it to m.after. Every exported method
// calls it last, without the mutex.
func (m *crashFS) done(op, path string) {
	m.mu.Lock()
	m.calls++
	after := m.after
	m.mu.Unlock()
	if after != nil {
		after(op + " " + filepath.Base(path))
	}
}

func (m *crashFS) OpenFile(name string, flag int, perm fs.FileMode) (file, error) {
	f, err := m.openFile(name, flag, perm)
	m.done("open", name)
	if err != nil {
		return nil, err
	}
	return f, nil
}

func (m *crashFS) openFile(name string, flag int, perm fs.FileMode) (*memFile, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	d, base, err := m.parent(name)
	if err != nil {
		return nil, pathErr("open", name, err)
	}
	n, ok := d.entries[base]
	switch {
	case ok && flag&os.O_CREATE != 0 && flag&os.O_EXCL != 0:
		return nil, pathErr("open", name, syscall.EEXIST)
	case !ok && flag&os.O_CREATE == 0:
		return nil, pathErr("open", name, syscall.ENOENT)
	case !ok:
		n = &memNode{mode: perm.Perm(), mtime: time.Now()}
		d.set(base, n)
	case n.dir && flag&(os.O_WRONLY|os.O_RDWR) != 0:
		return nil, pathErr("open", name, syscall.EISDIR)
	}
	if flag&os.O_TRUNC != 0 && !n.dir {
		n.data = nil
	}
	return &memFile{fs: m, node: n, name: name, flag: flag}, nil
}

// OpenDir is a pathDir over the crashFS holding the open directory: each
// name's call is its own.
func (m *crashFS) OpenDir(name string) (dir, error) {
	f, err := m.openFile(name, os.O_RDONLY, 0)
	if err == nil && !f.node.dir {
		err = pathErr("open", name, syscall.ENOTDIR)
	}
	m.done("opendir", name)
	if err != nil {
		return nil, err
	}
	return &pathDir{fs: m, path: name, h: f}, nil
}

func (m *crashFS) Rename(oldpath, newpath string) error {
	err := m.rename(oldpath, newpath)
	m.done("rename", newpath)
	return err
}

func (m *crashFS) rename(oldpath, newpath string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	od, ob, err := m.parent(oldpath)
	if err != nil {
		return &os.LinkError{Op: "rename", Old: oldpath, New: newpath, Err: err}
	}
	nd, nb, err := m.parent(newpath)
	if err != nil {
		return &os.LinkError{Op: "rename", Old: oldpath, New: newpath, Err: err}
	}
	n, ok := od.entries[ob]
	if !ok {
		return &os.LinkError{Op: "rename", Old: oldpath, New: newpath, Err: syscall.ENOENT}
	}
	if t, ok := nd.entries[nb]; ok && (t.dir || n.dir) {
		return &os.LinkError{Op: "rename", Old: oldpath, New: newpath, Err: syscall.EISDIR}
	}
	if od == nd {
		delete(od.entries, ob)
		od.entries[nb] = n
		od.log = append(od.log, dirChange{name: nb, node: n, from: ob})
		od.mtime = time.Now()
		return nil
	}
	od.set(ob, nil)
	nd.set(nb, n)
	return nil
}

func (m *crashFS) Remove(name string) error {
	err := m.remove(name)
	m.done("remove", name)
	return err
}

func (m *crashFS) remove(name string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	d, base, err := m.parent(name)
	if err != nil {
		return pathErr("remove", name, err)
	}
	n, ok := d.entries[base]
	switch {
	case !ok:
		return pathErr("remove", name, syscall.ENOENT)
	case n.dir && len(n.entries) > 0:
		return pathErr("remove", name, syscall.ENOTEMPTY)
	}
	d.set(base, nil)
	return nil
}

func (m *crashFS) Mkdir(name string, perm fs.FileMode) error {
	err := m.mkdir(name, perm)
	m.done("mkdir", name)
	return err
}

func (m *crashFS) mkdir(name string, perm fs.FileMode) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	d, base, err := m.parent(name)
	if err != nil {
		return pathErr("mkdir", name, err)
	}
	if _, ok := d.entries[base]; ok {
		return pathErr("mkdir", name, syscall.EEXIST)
	}
	d.set(base, newDirNode(perm.Perm()))
	return nil
}

// MkdirAll makes name and its missing parents, each an unsynced mkdir.
func (m *crashFS) MkdirAll(name string, perm fs.FileMode) error {
	fi, err := m.Lstat(name)
	switch {
	case err == nil && fi.IsDir():
		return nil
	case err == nil:
		return pathErr("mkdir", name, syscall.ENOTDIR)
	}
	if parent := filepath.Dir(name); parent != name {
		if err := m.MkdirAll(parent, perm); err != nil {
			return err
		}
	}
	if err := m.Mkdir(name, perm); err != nil && !errors.Is(err, fs.ErrExist) {
		return err
	}
	return nil
}

func (m *crashFS) Chmod(name string, mode fs.FileMode) error {
	m.mu.Lock()
	n, err := m.lookup(name)
	if err == nil {
		n.mode = mode.Perm()
	}
	m.mu.Unlock()
	m.done("chmod", name)
	if err != nil {
		return pathErr("chmod", name, err)
	}
	return nil
}

// inMemory tells the store that nothing on this filesystem can be mapped:
// it makes no change-counter table (cache.go).
func (m *crashFS) inMemory() {}

// Statfs reports an unknown filesystem, which is taken for a local one.
func (m *crashFS) Statfs(name string) (fsType, error) {
	m.mu.Lock()
	_, err := m.lookup(name)
	m.mu.Unlock()
	if err != nil {
		return fsType{}, pathErr("statfs", name, err)
	}
	return fsType{}, nil
}

func (m *crashFS) Lstat(name string) (fileStat, error) {
	m.mu.Lock()
	n, err := m.lookup(name)
	var fi fileStat
	if err == nil {
		fi = n.info(filepath.Base(name))
	}
	m.mu.Unlock()
	m.done("lstat", name)
	if err != nil {
		return fileStat{}, pathErr("lstat", name, err)
	}
	return fi, nil
}

func (m *crashFS) Link(oldname, newname string) error {
	err := m.link(oldname, newname)
	m.done("link", newname)
	return err
}

func (m *crashFS) link(oldname, newname string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	n, err := m.lookup(oldname)
	if err == nil && n.dir {
		err = syscall.EPERM
	}
	if err != nil {
		return &os.LinkError{Op: "link", Old: oldname, New: newname, Err: err}
	}
	d, base, err := m.parent(newname)
	if err != nil {
		return &os.LinkError{Op: "link", Old: oldname, New: newname, Err: err}
	}
	if _, ok := d.entries[base]; ok {
		return &os.LinkError{Op: "link", Old: oldname, New: newname, Err: syscall.EEXIST}
	}
	d.set(base, n)
	return nil
}

// Lock creates the lock file if needed, as flock does, and takes an
// in-memory lock named by its path. Locks do not survive a crash.
func (m *crashFS) Lock(ctx context.Context, name string, try bool) (func() error, error) {
	mu, err := m.lockOf("lock", name, os.O_CREATE|os.O_RDONLY)
	if err != nil {
		return nil, err
	}
	select {
	case mu <- struct{}{}:
	default:
		if try {
			return nil, errLockBusy
		}
		select {
		case mu <- struct{}{}:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	return func() error { <-mu; return nil }, nil
}

// OpenLock opens the existing lock file name; its locks are the in-memory
// locks Lock takes, so the two exclude each other as flock's do.
func (m *crashFS) OpenLock(name string) (lockFile, error) {
	mu, err := m.lockOf("openlock", name, os.O_RDONLY)
	if err != nil {
		return nil, err
	}
	return memLock(mu), nil
}

// lockOf opens the lock file name with flag (creating it mode 0600 with
// O_CREATE), counts the call as op, and returns the in-memory lock named
// by the path, which Lock and OpenLock share.
func (m *crashFS) lockOf(op, name string, flag int) (chan struct{}, error) {
	f, err := m.openFile(name, flag, 0o600)
	m.mu.Lock()
	if err == nil && f.node.dir {
		err = pathErr(op, name, syscall.EISDIR)
	}
	mu, ok := m.locks[name]
	if !ok {
		mu = make(chan struct{}, 1)
		m.locks[name] = mu
	}
	m.mu.Unlock()
	m.done(op, name)
	if err != nil {
		return nil, err
	}
	return mu, nil
}

// memLock is a crashFS lock file kept open.
type memLock chan struct{}

func (l memLock) TryLock() error {
	select {
	case l <- struct{}{}:
		return nil
	default:
		return errLockBusy
	}
}

func (l memLock) Unlock() error { <-l; return nil }
func (l memLock) Close() error  { return nil }

// crash returns the filesystem a reboot after a power loss right now would
// find, with everything on it durable. rng is used only by keepRandom.
func (m *crashFS) crash(mode crashMode, rng *rand.Rand) *crashFS {
	m.mu.Lock()
	defer m.mu.Unlock()
	c := &crashFS{locks: map[string]chan struct{}{}}
	memo := map[*memNode]*memNode{}
	c.root = crashNode(m.root, mode, rng, memo)
	return c
}

func crashNode(n *memNode, mode crashMode, rng *rand.Rand, memo map[*memNode]*memNode) *memNode {
	if c, ok := memo[n]; ok {
		return c
	}
	c := &memNode{dir: n.dir, mode: n.mode, mtime: n.mtime}
	memo[n] = c
	if !n.dir {
		c.data = crashContent(n, mode, rng)
		c.synced = c.data
		return c
	}
	ents := maps.Clone(n.durable)
	for _, ch := range n.log {
		if mode == keepSynced || mode == keepRandom && rng.IntN(2) == 0 {
			continue
		}
		if ch.from != "" {
			// A rename whose source was itself dropped did not happen.
			if ents[ch.from] != ch.node {
				continue
			}
			delete(ents, ch.from)
		}
		if ch.node == nil {
			delete(ents, ch.name)
		} else {
			ents[ch.name] = ch.node
		}
	}
	c.entries = make(map[string]*memNode, len(ents))
	for name, e := range ents {
		c.entries[name] = crashNode(e, mode, rng, memo)
	}
	c.durable = maps.Clone(c.entries)
	return c
}

func crashContent(n *memNode, mode crashMode, rng *rand.Rand) []byte {
	switch {
	case mode == keepSynced:
		return bytes.Clone(n.synced)
	case mode == keepAll:
		return bytes.Clone(n.data)
	case bytes.HasPrefix(n.data, n.synced):
		// Writeback got part of the way.
		k := len(n.synced) + rng.IntN(len(n.data)-len(n.synced)+1)
		return bytes.Clone(n.data[:k])
	case rng.IntN(2) == 0:
		return bytes.Clone(n.synced)
	default:
		return bytes.Clone(n.data)
	}
}

// names lists the paths of every file under dir, for tests.
func (m *crashFS) names(dir string) []string {
	m.mu.Lock()
	defer m.mu.Unlock()
	d, err := m.lookup(dir)
	if err != nil {
		return nil
	}
	var out []string
	var walk func(p string, n *memNode)
	walk = func(p string, n *memNode) {
		for name, c := range n.entries {
			if c.dir {
				walk(filepath.Join(p, name), c)
			} else {
				out = append(out, filepath.Join(p, name))
			}
		}
	}
	walk(dir, d)
	slices.Sort(out)
	return out
}

// fingerprint describes everything a reopened store could observe: every
// path, whether it is a directory, its mode and its content. Two crash
// states with the same fingerprint need checking once.
func (m *crashFS) fingerprint() string {
	m.mu.Lock()
	defer m.mu.Unlock()
	var b strings.Builder
	var walk func(p string, n *memNode)
	walk = func(p string, n *memNode) {
		for _, name := range slices.Sorted(maps.Keys(n.entries)) {
			c := n.entries[name]
			fmt.Fprintf(&b, "%s/%s %v %q\n", p, name, c.mode, c.data)
			if c.dir {
				walk(p+"/"+name, c)
			}
		}
	}
	walk("", m.root)
	return b.String()
}

// info is a node's fileStat. It has no link count, owner or ctime (sys is
// unset), so the engine's checks that need them pass it.
func (n *memNode) info(name string) fileStat {
	fi := fileStat{name: name, mode: n.mode, mtime: n.mtime, size: int64(len(n.data))}
	if n.dir {
		fi.mode |= fs.ModeDir
		fi.size = 0
	}
	return fi
}

// memFile is an open crashFS file or directory; as a directory it is the
// dirHandle of the pathDir OpenDir returns.
type memFile struct {
	fs     *crashFS
	node   *memNode
	name   string
	flag   int
	off    int
	closed bool
	names  []string // a directory's entries, read on first ReadNames
	listed bool
}

func (f *memFile) Name() string { return f.name }

func (f *memFile) Read(p []byte) (int, error) {
	n, err := f.read(p)
	f.fs.done("read", f.name)
	return n, err
}

func (f *memFile) read(p []byte) (int, error) {
	f.fs.mu.Lock()
	defer f.fs.mu.Unlock()
	switch {
	case f.closed:
		return 0, os.ErrClosed
	case f.node.dir:
		return 0, pathErr("read", f.name, syscall.EISDIR)
	case f.flag&os.O_WRONLY != 0:
		return 0, pathErr("read", f.name, syscall.EBADF)
	case f.off >= len(f.node.data):
		return 0, io.EOF
	}
	n := copy(p, f.node.data[f.off:])
	f.off += n
	return n, nil
}

func (f *memFile) Write(p []byte) (int, error) {
	n, err := f.write(p)
	f.fs.done("write", f.name)
	return n, err
}

func (f *memFile) write(p []byte) (int, error) {
	f.fs.mu.Lock()
	defer f.fs.mu.Unlock()
	switch {
	case f.closed:
		return 0, os.ErrClosed
	case f.flag&(os.O_WRONLY|os.O_RDWR) == 0:
		return 0, pathErr("write", f.name, syscall.EBADF)
	}
	d := f.node.data
	if end := f.off + len(p); end > len(d) {
		d = append(d, make([]byte, end-len(d))...)
	}
	copy(d[f.off:], p)
	f.node.data = d
	f.node.mtime = time.Now()
	f.off += len(p)
	return len(p), nil
}

func (f *memFile) Close() error {
	f.fs.mu.Lock()
	wasClosed := f.closed
	f.closed = true
	f.fs.mu.Unlock()
	f.fs.done("close", f.name)
	if wasClosed {
		return os.ErrClosed
	}
	return nil
}

// Sync makes a file's content, or a directory's entries, durable.
func (f *memFile) Sync() error {
	f.fs.mu.Lock()
	closed := f.closed
	if !closed {
		if n := f.node; n.dir {
			n.durable = maps.Clone(n.entries)
			n.log = nil
		} else {
			n.synced = bytes.Clone(n.data)
		}
	}
	f.fs.mu.Unlock()
	f.fs.done("sync", f.name)
	if closed {
		return os.ErrClosed
	}
	return nil
}

func (f *memFile) Stat() (fileStat, error) {
	f.fs.mu.Lock()
	fi := f.node.info(filepath.Base(f.name))
	closed := f.closed
	f.fs.mu.Unlock()
	f.fs.done("fstat", f.name)
	if closed {
		return fileStat{}, os.ErrClosed
	}
	return fi, nil
}

func (f *memFile) Chmod(mode fs.FileMode) error {
	f.fs.mu.Lock()
	f.node.mode = mode.Perm()
	f.fs.mu.Unlock()
	f.fs.done("fchmod", f.name)
	return nil
}

// SetModTime is not modelled: the sweeper's expiry hint only spares it
// work, so here every record is a candidate it examines under its lock.
func (f *memFile) SetModTime(time.Time) error { return nil }

func (f *memFile) ReadNames(n int) ([]string, error) {
	names, err := f.readNames(n)
	f.fs.done("readdir", f.name)
	return names, err
}

func (f *memFile) readNames(n int) ([]string, error) {
	f.fs.mu.Lock()
	defer f.fs.mu.Unlock()
	if f.closed {
		return nil, os.ErrClosed
	}
	if !f.node.dir {
		return nil, pathErr("readdirent", f.name, syscall.ENOTDIR)
	}
	if !f.listed {
		f.listed = true
		f.names = slices.Sorted(maps.Keys(f.node.entries))
	}
	if n <= 0 {
		out := f.names
		f.names = nil
		return out, nil
	}
	if len(f.names) == 0 {
		return nil, io.EOF
	}
	k := min(n, len(f.names))
	out := f.names[:k:k]
	f.names = f.names[k:]
	return out, nil
}
