package filestore

import (
	"errors"
	"io/fs"
	"sync"
	"sync/atomic"
)

// maxCachedDirs is the most leaf directories a layout may have for the
// store to keep them open: "flat" has 1, "1x2" 256. Layouts with more
// ("1x3", "2x2") name records by path, as a descriptor each would be too
// many.
const maxCachedDirs = 256

// dirCache keeps each leaf shard directory the store has used open, one
// descriptor per directory, so that Load, Save and Delete name a record
// relative to its shard's descriptor: openat, renameat and unlinkat look up
// one path component instead of every one from /, and the directory fsync
// that makes a rename or unlink durable needs no open and close of its own.
// On tmpfs that made a synced Save 30% faster and an unsynced one 13%
// (bench/RESULTS.md). A shard directory swapped for a symlink is not
// followed by a cached descriptor either.
//
// A descriptor stays valid after its directory is removed (by an operator:
// the store never removes shard directories); creating a file in it then
// fails with ENOENT. The writers and readers treat ENOENT from a cached
// directory as a reason to look again: if the directory has no links left
// (stale), its descriptor is dropped and the path opened afresh.
//
// dirCache is safe for concurrent use. Loads take no lock, so each use of
// a descriptor is counted (cachedDir), and a descriptor dropped or closed
// while in use is closed by its last user.
type dirCache struct {
	fs    fsys
	slots []atomic.Pointer[cachedDir] // by leaf number; nil when caching is off
	mu    sync.Mutex                  // serialises opening with close
	shut  bool                        // guarded by mu
}

func newDirCache(fsys fsys, l layout) *dirCache {
	c := &dirCache{fs: fsys}
	if n := l.leaves(); n <= maxCachedDirs {
		c.slots = make([]atomic.Pointer[cachedDir], n)
	}
	return c
}

// cachedDir is an open shard directory and the count of its users.
type cachedDir struct {
	d     dir
	state atomic.Int64 // users, plus dirRetired once no new user may come
}

// dirRetired marks a cachedDir taken out of its slot: its last user closes
// it.
const dirRetired = 1 << 62

// acquire counts a new user, unless the directory has been retired.
func (c *cachedDir) acquire() bool {
	for {
		v := c.state.Load()
		if v&dirRetired != 0 {
			return false
		}
		if c.state.CompareAndSwap(v, v+1) {
			return true
		}
	}
}

// release ends a use; the last use of a retired directory closes it. A
// nil cachedDir, a use that had no cached directory, releases nothing.
func (c *cachedDir) release() {
	if c == nil {
		return
	}
	if c.state.Add(-1) == dirRetired {
		_ = c.d.Close() // error deliberately ignored: read-only directory handle
	}
}

// retire admits no new user and closes the directory once it has none. It
// is called once, by whoever took the cachedDir out of its slot.
func (c *cachedDir) retire() {
	if c.state.Add(dirRetired) == dirRetired {
		_ = c.d.Close() // error deliberately ignored: read-only directory handle
	}
}

// get returns shard's directory, r's shard directory, and the use to release when done
// with it: the cached descriptor, opening it if need be, or where there is
// none (caching is off, the store is closing, or the directory cannot be
// opened, as before its first record) a dir that names files by path, and
// a nil use.
func (c *dirCache) get(shard int, r ref) (dir, *cachedDir) {
	if c.slots == nil {
		return pathsIn(c.fs, r.dirPath()), nil
	}
	if cd := c.slots[shard].Load(); cd != nil && cd.acquire() {
		return cd.d, cd
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if cd := c.slots[shard].Load(); cd != nil && cd.acquire() {
		return cd.d, cd
	}
	path := r.dirPath()
	if c.shut {
		return pathsIn(c.fs, path), nil
	}
	d, err := c.fs.OpenDir(path)
	if err != nil {
		return pathsIn(c.fs, path), nil
	}
	cd := &cachedDir{d: d}
	cd.state.Store(1) // the caller's use
	c.slots[shard].Store(cd)
	return cd.d, cd
}

// drop stops caching d as shard's directory, if it is cached: its directory
// is gone, or about to be made again. The caller's use of d stays valid
// until it releases it.
func (c *dirCache) drop(shard int, d dir) {
	if c.slots == nil {
		return
	}
	if cd := c.slots[shard].Load(); cd != nil && cd.d == d && c.slots[shard].CompareAndSwap(cd, nil) {
		cd.retire()
	}
}

// stale reports whether d, which gave ENOENT for a name, is shard's cached
// directory and has been removed, and if so drops it: the caller should
// get the directory again and retry. A missing name in a live directory is
// just a missing name.
func (c *dirCache) stale(shard int, d dir) bool {
	if c.slots == nil {
		return false
	}
	if cd := c.slots[shard].Load(); cd == nil || cd.d != d {
		return false
	}
	fi, err := d.Stat()
	if err != nil || !dirRemoved(fi) {
		return false
	}
	c.drop(shard, d)
	return true
}

// dirRemoved reports whether fi, the fstat of an open directory, says the
// directory has been removed: a removed directory has no links. Where the
// system gives no link count, a cached directory is never taken for
// removed.
func dirRemoved(fi fileStat) bool { return fi.sys && fi.nlink == 0 }

// inShard runs op on r's shard directory and, if op found no such name
// because the cached descriptor's directory has been removed, once more on
// the directory now at the path. It returns the dir op last ran on and its
// use, which the caller releases when done with the dir.
func (s *Store) inShard(r ref, op func(d dir) error) (dir, *cachedDir, error) {
	d, use := s.dirs.get(r.shard, r)
	err := op(d)
	if errors.Is(err, fs.ErrNotExist) && s.dirs.stale(r.shard, d) {
		use.release()
		d, use = s.dirs.get(r.shard, r)
		err = op(d)
	}
	return d, use, err
}

// close closes every cached descriptor, each once its users are done, and
// caches no more.
func (c *dirCache) close() {
	c.mu.Lock()
	c.shut = true
	c.mu.Unlock()
	for i := range c.slots {
		if cd := c.slots[i].Swap(nil); cd != nil {
			cd.retire()
		}
	}
}
