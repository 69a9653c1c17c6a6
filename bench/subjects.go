package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/alexedwards/scs/v2"
	"github.com/alexedwards/scs/v2/memstore"
	"github.com/filestore-go/filestore"
	"github.com/gorilla/sessions"
	"github.com/peterbourgon/diskv/v3"
	bolt "go.etcd.io/bbolt"
	"golang.org/x/sys/unix"
)

// kv is what every contender offers the workloads: the session-store
// operations, by session id. Each implementation is used by one goroutine
// at a time.
type kv interface {
	Load(id string) ([]byte, error)
	Save(id string, data []byte, expiry time.Time) error
	Delete(id string) error
	Close() error
}

// sweeper is a kv that can remove its expired records in one pass.
type sweeper interface {
	Sweep() (int, error)
}

// errMissing is what a kv returns from Load for an id it does not hold.
var errMissing = errors.New("no such session")

// Subject names. A subject is one contender in one configuration; subjects
// that differ only in options share a population on disk.
const (
	subjFilestore       = "filestore"
	subjFilestoreNoSync = "filestore-nosync"
	subjFilestoreZstd   = "filestore-zstd"
	subjFilestoreCache  = "filestore-cache" // Options.CacheBytes set
	subjFilestoreWatch  = "filestore-watch" // a Watch consumer drains events while it runs
	subjRaw             = "raw"
	subjRawNoSync       = "raw-nosync"
	subjGorilla         = "gorilla"
	subjDiskv           = "diskv"
	subjBolt            = "bbolt"
	subjBoltNoSync      = "bbolt-nosync"
	subjMemstore        = "memstore"
	subjMemcopy         = "memcopy" // the floor of a cached Load: a map and a copy
)

// family returns the population a subject shares: the on-disk data of
// "filestore-nosync" is the data of "filestore", and so on.
func family(subject string) string {
	f, _, _ := strings.Cut(subject, "-")
	return f
}

// ownPopulation reports whether subject gets a population of its own
// rather than its family's: compression changes what is on disk.
func ownPopulation(subject string) bool { return subject == subjFilestoreZstd }

// inMemory reports whether subject keeps its data in this process only.
func inMemory(subject string) bool { return subject == subjMemstore || subject == subjMemcopy }

// isFilestore reports whether subject is filestore in some configuration.
func isFilestore(subject string) bool { return family(subject) == subjFilestore }

// rawOf returns the raw syscall recipe that does the same physical work as
// the given filestore subject.
func rawOf(subject string) string {
	if subject == subjFilestoreNoSync {
		return subjRawNoSync
	}
	return subjRaw
}

// openSubject opens subject on the population directory dir (created by the
// first open), with the given filestore layout. cacheBytes is the cache of
// the filestore-cache subject.
func openSubject(subject, dir, layout string, cacheBytes int64) (kv, error) {
	switch subject {
	case subjFilestore, subjFilestoreNoSync, subjFilestoreZstd, subjFilestoreCache, subjFilestoreWatch:
		opts := &filestore.Options{
			Layout:        layout,
			NoSync:        subject == subjFilestoreNoSync,
			Compress:      subject == subjFilestoreZstd,
			SweepInterval: -1, // sweeps are measured explicitly
		}
		if subject == subjFilestoreCache {
			opts.CacheBytes = cacheBytes
		}
		s, err := filestore.Open(dir, opts)
		if err != nil {
			return nil, err
		}
		if subject == subjFilestoreWatch {
			return &watchKV{fileKV: fileKV{s}}, nil
		}
		return fileKV{s}, nil
	case subjRaw, subjRawNoSync:
		return newRawKV(dir, layout, subject == subjRaw)
	case subjGorilla:
		return newGorillaKV(dir)
	case subjDiskv:
		return newDiskvKV(dir), nil
	case subjBolt, subjBoltNoSync:
		return openBolt(filepath.Join(dir, "sessions.db"), subject == subjBoltNoSync)
	case subjMemstore:
		return scsKV{memstore.NewWithCleanupInterval(0)}, nil
	case subjMemcopy:
		return &memcopyKV{m: map[string]memEntry{}}, nil
	}
	return nil, fmt.Errorf("unknown subject %q", subject)
}

// openPopulator opens subject's data for populating: synced subjects open
// without fsync, since filling a store is setup, not measurement.
func openPopulator(subject, dir, layout string) (kv, error) {
	switch subject {
	case subjFilestore, subjFilestoreNoSync, subjFilestoreZstd, subjFilestoreCache, subjFilestoreWatch:
		s, err := filestore.Open(dir, &filestore.Options{
			Layout:        layout,
			NoSync:        true,
			Compress:      subject == subjFilestoreZstd,
			SweepInterval: -1,
		})
		if err != nil {
			return nil, err
		}
		return fileKV{s}, nil
	case subjRaw:
		return openSubject(subjRawNoSync, dir, layout, 0)
	case subjBolt:
		return openSubject(subjBoltNoSync, dir, layout, 0)
	}
	return openSubject(subject, dir, layout, 0)
}

// fileKV is filestore itself.
type fileKV struct{ s *filestore.Store }

func (f fileKV) Load(id string) ([]byte, error) {
	r, err := f.s.Load(context.Background(), id)
	if errors.Is(err, filestore.ErrNotFound) {
		return nil, errMissing
	}
	return r.Data, err
}

func (f fileKV) Save(id string, data []byte, expiry time.Time) error {
	return f.s.Save(context.Background(), id, data, expiry)
}

func (f fileKV) Delete(id string) error { return f.s.Delete(context.Background(), id) }

func (f fileKV) Sweep() (int, error) { return f.s.DeleteExpired(context.Background()) }

func (f fileKV) Close() error { return f.s.Close() }

func (f fileKV) store() *filestore.Store { return f.s }

// watchKV is filestore with a Watch consumer in the same process draining
// the channel while a workload runs, to measure what events cost the
// writer. The consumer runs only between start and stop: the store's
// directory is shared with the other filestore subjects, whose rounds it
// must not slow down.
type watchKV struct {
	fileKV
	cancel context.CancelFunc
	done   chan struct{}
	events atomic.Int64
}

func (w *watchKV) start() error {
	ctx, cancel := context.WithCancel(context.Background())
	ch, err := w.s.Watch(ctx)
	if err != nil {
		cancel()
		return err
	}
	w.cancel, w.done = cancel, make(chan struct{})
	go func() {
		defer close(w.done)
		for range ch {
			w.events.Add(1)
		}
	}()
	return nil
}

func (w *watchKV) stop() {
	if w.cancel != nil {
		w.cancel()
		<-w.done // the channel closes once the watcher has stopped
		w.cancel = nil
	}
}

// memcopyKV is the least a cached Load can cost with filestore's contract:
// the id hashed to its key, a map lookup under a read lock, an expiry check
// and a copy the caller owns. A cached filestore Load above it pays for
// its validation against other processes' writes and its bookkeeping.
type memcopyKV struct {
	mu sync.RWMutex
	m  map[string]memEntry
}

type memEntry struct {
	data   []byte
	expiry time.Time
}

func (m *memcopyKV) Load(id string) ([]byte, error) {
	k := filestore.Key(id)
	m.mu.RLock()
	e, ok := m.m[k]
	m.mu.RUnlock()
	if !ok || !time.Now().Before(e.expiry) {
		return nil, errMissing
	}
	return bytes.Clone(e.data), nil
}

func (m *memcopyKV) Save(id string, data []byte, expiry time.Time) error {
	k := filestore.Key(id)
	e := memEntry{data: bytes.Clone(data), expiry: expiry}
	m.mu.Lock()
	m.m[k] = e
	m.mu.Unlock()
	return nil
}

func (m *memcopyKV) Delete(id string) error {
	k := filestore.Key(id)
	m.mu.Lock()
	delete(m.m, k)
	m.mu.Unlock()
	return nil
}

func (m *memcopyKV) Close() error { return nil }

// rawKV is the physical limit: the bare syscall recipes a file-per-session
// store cannot avoid, on files named and sharded like filestore's.
//
//	Load:   open, read, close
//	Save:   create temp, write, fsync, close, rename, open+fsync+close directory
//	Delete: unlink, open+fsync+close directory
//	Sweep:  readdir, lstat each entry, unlink the stale, fsync each directory
//
// It calls the syscall package directly, so it pays neither os.File's
// poller registration nor os.Rename's lstat, and it does no hashing,
// encoding, checksumming or locking: paths are computed once per id and
// the expiry lives in the file's mtime, as in PHP's and gorilla's file
// stores. It is not safe for concurrent writers of one id in one process.
type rawKV struct {
	data   string
	layout string
	sync   bool
	buf    []byte
	seq    uint64
	paths  map[string][2]string // id -> shard directory, file name
	pathMu sync.Mutex
	prefix string
}

func newRawKV(dir, layout string, sync bool) (*rawKV, error) {
	data := filepath.Join(dir, "data")
	if err := os.MkdirAll(data, 0o700); err != nil {
		return nil, err
	}
	return &rawKV{
		data:   data,
		layout: layout,
		sync:   sync,
		buf:    make([]byte, maxPayload+4096),
		paths:  make(map[string][2]string),
		prefix: ".tmp-" + strconv.Itoa(os.Getpid()) + "-",
	}, nil
}

// locate returns id's shard directory and file path, computing them once.
func (r *rawKV) locate(id string) (string, string) {
	r.pathMu.Lock()
	p, ok := r.paths[id]
	if !ok {
		sum := sha256.Sum256([]byte(id))
		h := hex.EncodeToString(sum[:])
		dir := shardDir(r.data, r.layout, h)
		p = [2]string{dir, dir + "/" + h}
		r.paths[id] = p
	}
	r.pathMu.Unlock()
	return p[0], p[1]
}

// shardDir mirrors filestore's layouts: "flat" or LxW.
func shardDir(data, layout, h string) string {
	if layout == "flat" {
		return data
	}
	var levels, width int
	if _, err := fmt.Sscanf(layout, "%dx%d", &levels, &width); err != nil {
		return data
	}
	dir := data
	for i := range levels {
		dir = filepath.Join(dir, h[i*width:(i+1)*width])
	}
	return dir
}

// Load reads the file in one read: the buffer is larger than any record,
// and a regular file on a local filesystem is read whole.
func (r *rawKV) Load(id string) ([]byte, error) {
	_, path := r.locate(id)
	fd, err := syscall.Open(path, syscall.O_RDONLY|syscall.O_CLOEXEC, 0)
	if err == syscall.ENOENT {
		return nil, errMissing
	}
	if err != nil {
		return nil, &fs.PathError{Op: "open", Path: path, Err: err}
	}
	n, err := syscall.Read(fd, r.buf)
	_ = syscall.Close(fd) // error deliberately ignored: read-only
	if err != nil {
		return nil, &fs.PathError{Op: "read", Path: path, Err: err}
	}
	return r.buf[:n], nil
}

func (r *rawKV) Save(id string, data []byte, expiry time.Time) error {
	dir, path := r.locate(id)
	err := r.write(dir, path, data)
	if errors.Is(err, fs.ErrNotExist) {
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return err
		}
		err = r.write(dir, path, data)
	}
	if err != nil {
		return err
	}
	if expiry.Before(time.Now()) {
		// Populating: backdate the mtime so that the raw sweep sees it stale.
		if err := os.Chtimes(path, expiry, expiry); err != nil {
			return err
		}
	}
	return nil
}

func (r *rawKV) write(dir, path string, data []byte) error {
	r.seq++
	tmp := dir + "/" + r.prefix + strconv.FormatUint(r.seq, 36)
	fd, err := syscall.Open(tmp, syscall.O_WRONLY|syscall.O_CREAT|syscall.O_EXCL|syscall.O_CLOEXEC, 0o600)
	if err != nil {
		return &fs.PathError{Op: "create", Path: tmp, Err: err}
	}
	_, err = syscall.Write(fd, data)
	if err == nil && r.sync {
		err = syscall.Fsync(fd)
	}
	if cerr := syscall.Close(fd); err == nil {
		err = cerr
	}
	if err == nil {
		err = syscall.Rename(tmp, path)
	}
	if err != nil {
		_ = syscall.Unlink(tmp) // error deliberately ignored: already failing
		return &fs.PathError{Op: "write", Path: tmp, Err: err}
	}
	return r.syncDir(dir)
}

func (r *rawKV) syncDir(dir string) error {
	if !r.sync {
		return nil
	}
	fd, err := syscall.Open(dir, syscall.O_RDONLY|syscall.O_DIRECTORY|syscall.O_CLOEXEC, 0)
	if err != nil {
		return &fs.PathError{Op: "open", Path: dir, Err: err}
	}
	err = syscall.Fsync(fd)
	if cerr := syscall.Close(fd); err == nil {
		err = cerr
	}
	if err != nil {
		return &fs.PathError{Op: "fsync", Path: dir, Err: err}
	}
	return nil
}

func (r *rawKV) Delete(id string) error {
	dir, path := r.locate(id)
	err := syscall.Unlink(path)
	if err == syscall.ENOENT {
		return nil
	}
	if err != nil {
		return &fs.PathError{Op: "unlink", Path: path, Err: err}
	}
	return r.syncDir(dir)
}

// rawTTL is the raw recipe's session lifetime: a file not written for
// this long has expired. Populations backdate expired files beyond it.
const rawTTL = time.Hour

// Sweep removes files not written for rawTTL, walking shard by shard.
func (r *rawKV) Sweep() (int, error) {
	cutoff := time.Now().Add(-rawTTL).Unix()
	removed := 0
	err := walkLeaves(r.data, func(dir string, names []string) error {
		n := 0
		for _, name := range names {
			if strings.HasPrefix(name, ".") {
				continue
			}
			p := dir + "/" + name
			var st syscall.Stat_t
			if syscall.Lstat(p, &st) != nil || st.Mode&syscall.S_IFMT != syscall.S_IFREG || st.Mtim.Sec > cutoff {
				continue
			}
			if syscall.Unlink(p) == nil {
				n++
			}
		}
		removed += n
		if n > 0 {
			return r.syncDir(dir)
		}
		return nil
	})
	return removed, err
}

func (r *rawKV) Close() error { return nil }

// walkLeaves calls fn with the names in each directory under root that
// holds files, in batches, depth first.
func walkLeaves(root string, fn func(dir string, names []string) error) error {
	d, err := os.Open(root)
	if err != nil {
		return err
	}
	defer d.Close()
	for {
		ents, rerr := d.ReadDir(512)
		var names []string
		for _, e := range ents {
			if e.IsDir() {
				if err := walkLeaves(filepath.Join(root, e.Name()), fn); err != nil {
					return err
				}
				continue
			}
			names = append(names, e.Name())
		}
		if len(names) > 0 {
			if err := fn(root, names); err != nil {
				return err
			}
		}
		if rerr == io.EOF {
			return nil
		}
		if rerr != nil {
			return rerr
		}
	}
}

// gorillaKV is gorilla/sessions' FilesystemStore used as a web handler
// uses it: Get parses the cookie and verifies its HMAC, then reads and
// decodes the file; Save encodes the values and writes the file in place.
type gorillaKV struct {
	store *sessions.FilesystemStore
	mu    sync.Mutex
	// cookies maps a session id to the signed cookie that Save issued for
	// it, so that Load can present it as a browser would.
	cookies map[string]string
}

const gorillaName = "sid"

func newGorillaKV(dir string) (*gorillaKV, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	s := sessions.NewFilesystemStore(dir, []byte("bench-hash-key-0123456789abcdef0123456789abcdef"))
	s.MaxLength(0) // 8 KiB sessions exceed the default 4096-byte limit
	return &gorillaKV{store: s, cookies: make(map[string]string)}, nil
}

func (g *gorillaKV) request(id string) (*http.Request, bool) {
	g.mu.Lock()
	c, ok := g.cookies[id]
	g.mu.Unlock()
	if !ok {
		return nil, false
	}
	return &http.Request{Header: http.Header{"Cookie": {gorillaName + "=" + c}}}, true
}

func (g *gorillaKV) Load(id string) ([]byte, error) {
	r, ok := g.request(id)
	if !ok {
		return nil, errMissing
	}
	s, err := g.store.New(r, gorillaName)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, errMissing
	}
	if err != nil {
		return nil, err
	}
	b, _ := s.Values["data"].([]byte)
	return b, nil
}

func (g *gorillaKV) session(id string) *sessions.Session {
	s := sessions.NewSession(g.store, gorillaName)
	sum := sha256.Sum256([]byte(id))
	s.ID = hex.EncodeToString(sum[:]) // never the raw id in a file name
	opts := *g.store.Options
	s.Options = &opts
	return s
}

func (g *gorillaKV) Save(id string, data []byte, expiry time.Time) error {
	s := g.session(id)
	s.Values["data"] = data
	w := headerWriter{http.Header{}}
	if err := g.store.Save(nil, w, s); err != nil {
		return err
	}
	c, err := http.ParseSetCookie(w.h.Get("Set-Cookie"))
	if err != nil {
		return err
	}
	g.mu.Lock()
	g.cookies[id] = c.Value
	g.mu.Unlock()
	return nil
}

func (g *gorillaKV) Delete(id string) error {
	s := g.session(id)
	s.Options.MaxAge = -1
	if err := g.store.Save(nil, headerWriter{http.Header{}}, s); err != nil {
		return err
	}
	g.mu.Lock()
	delete(g.cookies, id)
	g.mu.Unlock()
	return nil
}

func (g *gorillaKV) Close() error { return nil }

// headerWriter is the least http.ResponseWriter that collects cookies.
type headerWriter struct{ h http.Header }

func (w headerWriter) Header() http.Header       { return w.h }
func (headerWriter) Write(b []byte) (int, error) { return len(b), nil }
func (headerWriter) WriteHeader(int)             {}

// diskvKV is peterbourgon/diskv with its cache off, sharded by two hex
// digits of the id's hash like filestore's default. It writes in place.
type diskvKV struct{ d *diskv.Diskv }

func newDiskvKV(dir string) diskvKV {
	return diskvKV{diskv.New(diskv.Options{
		BasePath:     dir,
		Transform:    func(k string) []string { return []string{k[:2]} },
		CacheSizeMax: 0,
		PathPerm:     0o700,
		FilePerm:     0o600,
	})}
}

func diskvKey(id string) string {
	sum := sha256.Sum256([]byte(id))
	return hex.EncodeToString(sum[:])
}

func (d diskvKV) Load(id string) ([]byte, error) {
	b, err := d.d.Read(diskvKey(id))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, errMissing
	}
	return b, err
}

func (d diskvKV) Save(id string, data []byte, _ time.Time) error {
	return d.d.Write(diskvKey(id), data)
}

func (d diskvKV) Delete(id string) error {
	err := d.d.Erase(diskvKey(id))
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	return err
}

func (d diskvKV) Close() error { return nil }

// boltStore is an scs.Store over bbolt, written here because scs's own
// boltstore module is not available. A value is the expiry in Unix
// nanoseconds, big-endian, followed by the session data.
type boltStore struct {
	db     *bolt.DB
	noSync bool
}

var _ scs.Store = (*boltStore)(nil)

var boltBucket = []byte("sessions")

// boltDBs shares one open database per file between the sync and no-sync
// subjects: bbolt allows one opener per file.
var (
	boltMu  sync.Mutex
	boltDBs = map[string]*boltShared{}
)

type boltShared struct {
	db   *bolt.DB
	refs int
}

func openBolt(path string, noSync bool) (*boltStore, error) {
	boltMu.Lock()
	defer boltMu.Unlock()
	sh := boltDBs[path]
	if sh == nil {
		if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
			return nil, err
		}
		db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: 5 * time.Second})
		if err != nil {
			return nil, err
		}
		if err := db.Update(func(tx *bolt.Tx) error {
			_, err := tx.CreateBucketIfNotExists(boltBucket)
			return err
		}); err != nil {
			_ = db.Close() // error deliberately ignored: already failing
			return nil, err
		}
		sh = &boltShared{db: db}
		boltDBs[path] = sh
	}
	sh.refs++
	return &boltStore{db: sh.db, noSync: noSync}, nil
}

// Find implements scs.Store.
func (b *boltStore) Find(token string) ([]byte, bool, error) {
	var out []byte
	err := b.db.View(func(tx *bolt.Tx) error {
		v := tx.Bucket(boltBucket).Get([]byte(token))
		if len(v) < 8 || int64(binary.BigEndian.Uint64(v)) < time.Now().UnixNano() {
			return nil
		}
		out = bytes.Clone(v[8:])
		return nil
	})
	return out, out != nil, err
}

// Commit implements scs.Store.
func (b *boltStore) Commit(token string, data []byte, expiry time.Time) error {
	b.db.NoSync = b.noSync
	v := make([]byte, 8+len(data))
	binary.BigEndian.PutUint64(v, uint64(expiry.UnixNano()))
	copy(v[8:], data)
	return b.db.Update(func(tx *bolt.Tx) error {
		return tx.Bucket(boltBucket).Put([]byte(token), v)
	})
}

// Delete implements scs.Store.
func (b *boltStore) Delete(token string) error {
	b.db.NoSync = b.noSync
	return b.db.Update(func(tx *bolt.Tx) error {
		return tx.Bucket(boltBucket).Delete([]byte(token))
	})
}

func (b *boltStore) Load(id string) ([]byte, error) {
	v, ok, err := b.Find(id)
	if err == nil && !ok {
		return nil, errMissing
	}
	return v, err
}

func (b *boltStore) Save(id string, data []byte, expiry time.Time) error {
	return b.Commit(id, data, expiry)
}

// Sweep deletes expired sessions in one transaction, as scs's boltstore
// cleanup goroutine does.
func (b *boltStore) Sweep() (int, error) {
	b.db.NoSync = b.noSync
	n := 0
	now := time.Now().UnixNano()
	err := b.db.Update(func(tx *bolt.Tx) error {
		c := tx.Bucket(boltBucket).Cursor()
		for k, v := c.First(); k != nil; {
			if len(v) >= 8 && int64(binary.BigEndian.Uint64(v)) < now {
				if err := c.Delete(); err != nil {
					return err
				}
				n++
				// Delete moves the cursor to the next item.
				k, v = c.Seek(k)
				continue
			}
			k, v = c.Next()
		}
		return nil
	})
	return n, err
}

func (b *boltStore) Close() error {
	boltMu.Lock()
	defer boltMu.Unlock()
	for path, sh := range boltDBs {
		if sh.db == b.db {
			sh.refs--
			if sh.refs == 0 {
				delete(boltDBs, path)
				return sh.db.Close()
			}
		}
	}
	return nil
}

// scsKV adapts an scs.Store (here memstore, the in-memory ceiling).
type scsKV struct{ s scs.Store }

func (m scsKV) Load(id string) ([]byte, error) {
	b, ok, err := m.s.Find(id)
	if err == nil && !ok {
		return nil, errMissing
	}
	return b, err
}

func (m scsKV) Save(id string, data []byte, expiry time.Time) error {
	return m.s.Commit(id, data, expiry)
}

func (m scsKV) Delete(id string) error { return m.s.Delete(id) }

func (m scsKV) Close() error { return nil }

// diskUsage returns the bytes allocated to, and the number of inodes in,
// the tree at root.
func diskUsage(root string) (bytes, inodes int64) {
	_ = filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return nil
		}
		var st syscall.Stat_t
		if syscall.Lstat(p, &st) == nil {
			bytes += st.Blocks * 512
			inodes++
		}
		return nil
	})
	return bytes, inodes
}

// syncFS flushes the filesystem that holds dir.
func syncFS(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return unix.Syncfs(int(d.Fd()))
}
