package filestore

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io/fs"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"
)

// Read cache protocol. A Store with Options.CacheBytes keeps decoded
// records in memory, and must never serve one that any process has
// replaced or removed since. File notifications cannot promise that (an
// event arrives after the write returned), so the cache rests on a table
// of change counters shared by every process that opens the store:
//
//	<root>/counters   tableSlots 64-bit counters, mapped MAP_SHARED
//
// A record's counter is the slot picked by two bytes of its hash; records
// that share a slot only invalidate each other's cache entries more often.
//
// Writers (Save, Update, Delete, the sweeper), in every process and with
// the cache on or off, under the record's lock:
//
//  1. add 1 to the record's counter
//  2. rename the new record over the old one, or unlink it
//  3. add 1 to the counter again
//
// Readers (Load with the cache on):
//
//  1. load the counter: v
//  2. a cache entry stored with version v, for this id and not expired,
//     is the answer: one atomic load, no system call
//  3. otherwise, if no goroutine or process holds the record's lock right
//     now (the in-process lock table, and fcntl F_OFD_GETLK on its range),
//     read the file, load the counter again, and cache the record with
//     version v if it is still v
//
// Why a hit is never stale: an entry holds what a read found between two
// loads of v, and the counter grows by every write, so it has held v over
// one interval of time only. A write that returned before a Load began
// added to the counter after its rename, so v, loaded by that Load, is
// past it, and so was the read that stored the entry: it saw that write.
//
// Why a crash cannot leave a stale entry: a writer killed between steps 1
// and 3 leaves the counter bumped once, and its lock released by the
// kernel. An entry read before its rename but stored with a version it
// bumped to in step 1 would be stale for good; step 3 of the reader
// prevents that, as the writer held the lock from before step 1 until it
// died, which is after the rename if the rename happened, and a reader that
// found the lock free after loading v read the file after that.
//
// The table is created once, full size (written with zeros, synced, then
// linked into place, so no process ever maps a short file: a reader of a
// truncated mapping dies of SIGBUS), and never shrinks. A process that
// cannot map it (an mmap refused, a filesystem without shared mappings)
// logs why, once, and runs without the cache; its writes then do not
// count, so every process sharing a store whose readers cache must be able
// to map it. Processes of releases without the table do not count their
// writes either: turn the cache on once every process sharing the store
// runs a release that has it.

const (
	tableName  = "counters"
	tableSlots = 1 << 16
	tableSize  = tableSlots * 8
)

// counterTable is the mapped table of change counters. Its methods are
// safe for concurrent use; a nil *counterTable counts nothing.
type counterTable struct {
	mem   []byte
	slots *[tableSlots]atomic.Uint64
	// Users of the mapping, plus dirRetired once Close has begun: the last
	// user of a retired table unmaps it, so no Load in flight touches an
	// unmapped page.
	state atomic.Int64
	unmap func([]byte) error
}

// slotOf is the counter of the record whose hash is sum.
func slotOf(sum [32]byte) int { return int(binary.BigEndian.Uint16(sum[30:32])) }

// acquire counts a user of the mapping; it fails once the table is retired.
func (t *counterTable) acquire() bool {
	if t == nil {
		return false
	}
	for {
		v := t.state.Load()
		if v&dirRetired != 0 {
			return false
		}
		if t.state.CompareAndSwap(v, v+1) {
			return true
		}
	}
}

// release ends a use; the last use of a retired table unmaps it.
func (t *counterTable) release() {
	if t.state.Add(-1) == dirRetired {
		_ = t.unmap(t.mem) // error deliberately ignored: nothing uses the mapping
	}
}

// retire admits no new user and unmaps the table once it has none.
func (t *counterTable) retire() {
	if t != nil && t.state.Add(dirRetired) == dirRetired {
		_ = t.unmap(t.mem) // error deliberately ignored: nothing uses the mapping
	}
}

// version returns the counter of sum, and whether the table could be used.
func (t *counterTable) version(sum [32]byte) (uint64, bool) {
	if !t.acquire() {
		return 0, false
	}
	v := t.slots[slotOf(sum)].Load()
	t.release()
	return v, true
}

// bump adds 1 to the counter of sum: a writer's steps 1 and 3.
func (t *counterTable) bump(sum [32]byte) {
	if t.acquire() {
		t.slots[slotOf(sum)].Add(1)
		t.release()
	}
}

// openTable maps the store's counter table, creating it if it does not
// exist. The mapping is made by Store.mapTable, mapFile but in tests.
func (s *Store) openTable() (*counterTable, error) {
	path := filepath.Join(s.root, tableName)
	if _, err := s.fs.Lstat(path); errors.Is(err, fs.ErrNotExist) {
		if err := s.createTable(path); err != nil {
			return nil, fmt.Errorf("create %s: %w", tableName, err)
		}
	}
	mem, unmap, err := s.mapTable(path, tableSize)
	if err != nil {
		return nil, fmt.Errorf("map %s: %w", path, err)
	}
	t := &counterTable{mem: mem, unmap: unmap}
	t.slots = asCounters(mem)
	return t, nil
}

// createTable writes a table of zeros at full size to a temp file in the
// root, syncs it, and links it to path unless another process did first.
// The temp file, named like a creating Open's, is swept if a crash leaves
// it behind.
func (s *Store) createTable(path string) error {
	tmpName, err := s.writeTemp(pathsIn(s.fs, s.root), initPrefix, make([]byte, tableSize), time.Time{})
	if err != nil {
		return err
	}
	tmp := filepath.Join(s.root, tmpName)
	err = s.fs.Link(tmp, path)
	_ = s.fs.Remove(tmp) // error deliberately ignored: the link, not the temp name, matters
	if err != nil && !errors.Is(err, fs.ErrExist) {
		return err
	}
	return s.syncDir(s.root, syncAfterRename)
}

// testOpenHook, when a test sets it, sees each Store as Open makes it,
// before it is used: to replace Store.mapTable.
var testOpenHook func(*Store)

// openCache maps the counter table, which every Store counts its writes in
// whatever its CacheBytes, and makes the read cache if CacheBytes asks for
// one. Where the table cannot be used it logs why, once, and the store
// works without it.
func (s *Store) openCache() {
	if _, ok := s.fs.(interface{ inMemory() }); ok {
		// A simulated filesystem (the power-loss tests'): nothing on it
		// can be mapped, and a table in every crash state it copies would
		// only cost memory.
		return
	}
	if s.netFS != "" {
		// A mapping is shared by the processes of one host only.
		s.log.Warn("filestore: no shared change counters on a network filesystem; read cache off", "dir", s.root, "fs", s.netFS)
		return
	}
	t, err := s.openTable()
	if err != nil {
		msg := "filestore: cannot map the shared change counters; read caches of other processes sharing this store may miss this process's writes"
		if s.opts.CacheBytes > 0 {
			msg = "filestore: cannot map the shared change counters; read cache off"
		}
		s.log.Warn(msg, "dir", s.root, "err", err)
		return
	}
	s.table = t
	switch {
	case s.opts.CacheBytes == 0:
	case !s.locks.ranges:
		// A reader must tell whether another process holds a record's
		// lock (see the protocol above), which needs range locks.
		s.log.Warn("filestore: read cache off: no per-record locks across processes on this system", "dir", s.root)
	default:
		s.cache = newReadCache(s.opts.CacheBytes)
	}
}

// readCache holds decoded records for Load, bounded by bytes, evicting the
// least recently used. It is sharded to keep goroutines loading different
// records off one mutex, and safe for concurrent use.
type readCache struct {
	shards [cacheShards]cacheShard
}

const cacheShards = 16

// entryOverhead is what an entry costs beyond its id and data: the map
// slot, the entry struct and its links, roughly.
const entryOverhead = 160

type cacheShard struct {
	mu         sync.Mutex
	m          map[[32]byte]*cacheEntry
	head, tail *cacheEntry // most and least recently used
	bytes, max int64
}

type cacheEntry struct {
	sum        [32]byte
	id         string
	data       []byte
	expiry     int64
	version    uint64
	prev, next *cacheEntry
}

func (e *cacheEntry) size() int64 { return int64(len(e.id)+len(e.data)) + entryOverhead }

func newReadCache(maxBytes int64) *readCache {
	c := &readCache{}
	for i := range c.shards {
		c.shards[i].m = make(map[[32]byte]*cacheEntry)
		c.shards[i].max = maxBytes / cacheShards
	}
	return c
}

func (c *readCache) shard(sum [32]byte) *cacheShard { return &c.shards[sum[31]%cacheShards] }

// get returns a copy of the data cached for id, and its expiry, if the
// entry was stored at version.
func (c *readCache) get(sum [32]byte, id string, version uint64) ([]byte, int64, bool) {
	sh := c.shard(sum)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	e := sh.m[sum]
	if e == nil || e.version != version || e.id != id {
		return nil, 0, false
	}
	sh.toFront(e)
	data := make([]byte, len(e.data))
	copy(data, e.data)
	return data, e.expiry, true
}

// put caches a copy of a record read at version, evicting what it must.
func (c *readCache) put(sum [32]byte, id string, data []byte, expiry int64, version uint64) {
	e := &cacheEntry{sum: sum, id: id, data: append([]byte(nil), data...), expiry: expiry, version: version}
	sh := c.shard(sum)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	if e.size() > sh.max {
		return
	}
	if old := sh.m[sum]; old != nil {
		sh.remove(old)
	}
	sh.m[sum] = e
	sh.bytes += e.size()
	e.next = sh.head
	if sh.head != nil {
		sh.head.prev = e
	}
	sh.head = e
	if sh.tail == nil {
		sh.tail = e
	}
	for sh.bytes > sh.max {
		sh.remove(sh.tail)
	}
}

// evict drops sum's entry. A nil cache has none.
func (c *readCache) evict(sum [32]byte) {
	if c == nil {
		return
	}
	sh := c.shard(sum)
	sh.mu.Lock()
	if e := sh.m[sum]; e != nil {
		sh.remove(e)
	}
	sh.mu.Unlock()
}

// bytes is what the cache holds, counted as put counts it.
func (c *readCache) bytes() int64 {
	var n int64
	for i := range c.shards {
		sh := &c.shards[i]
		sh.mu.Lock()
		n += sh.bytes
		sh.mu.Unlock()
	}
	return n
}

func (sh *cacheShard) unlink(e *cacheEntry) {
	if e.prev != nil {
		e.prev.next = e.next
	} else {
		sh.head = e.next
	}
	if e.next != nil {
		e.next.prev = e.prev
	} else {
		sh.tail = e.prev
	}
	e.prev, e.next = nil, nil
}

func (sh *cacheShard) remove(e *cacheEntry) {
	sh.unlink(e)
	delete(sh.m, e.sum)
	sh.bytes -= e.size()
}

func (sh *cacheShard) toFront(e *cacheEntry) {
	if sh.head == e {
		return
	}
	sh.unlink(e)
	e.next = sh.head
	sh.head.prev = e
	sh.head = e
}

// asCounters views a mapped table as its counters. The mapping is page
// aligned, so every counter is 8-byte aligned, as atomic operations need.
func asCounters(mem []byte) *[tableSlots]atomic.Uint64 {
	return (*[tableSlots]atomic.Uint64)(unsafe.Pointer(&mem[0]))
}
