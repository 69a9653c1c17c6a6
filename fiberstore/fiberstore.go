// Package fiberstore adapts a filestore.Store to fiber.Storage, so that
// Fiber v3 middleware (session, CSRF, limiter, cache, idempotency) can keep
// its state in a directory shared by every process on one host: preforked
// workers, a blue/green pair, or several services behind one proxy.
//
// Switching the session middleware from its default in-memory storage is
// one line:
//
//	app.Use(session.New(session.Config{Storage: fiberstore.New(fs)}))
//
// # Semantics
//
// Storage follows the fiber.Storage contract as the drivers in
// github.com/gofiber/storage implement it:
//
//   - Get of a key with no live value (never set, deleted or expired)
//     returns nil, nil. So does Get of the empty key.
//   - Set with exp 0 or a negative exp stores a value that never expires;
//     a positive exp expires it that long after the call. The gofiber/storage
//     drivers released since August 2026 (sqlite3, postgres, mysql, redis,
//     valkey, badger, ristretto) treat a negative exp as no expiry too, so a
//     middleware that computes a negative duration keeps its value, whichever
//     of them it runs on, instead of losing it.
//   - Set with an empty key or an empty value does nothing and returns nil.
//   - Delete of a key with no value, or of the empty key, returns nil.
//   - Reset deletes every record in the store's directory.
//
// Keys are hashed by filestore before they reach the filesystem, so any
// string is a safe key, and keys never appear in errors or logs. A key
// longer than filestore.MaxIDLength bytes cannot be stored: Set returns an
// error matching filestore.ErrInvalidID. Get and Delete of such a key treat
// it as absent (nil, nil and nil), because the session middleware takes
// its key from a client's cookie and turns any Get error into a panic, which
// Fiber does not recover from by default: one over-long cookie must not be
// able to take a server down. A value longer than the store's
// Options.MaxRecordSize makes Set return an error matching
// filestore.ErrTooLarge.
//
// Other errors are the filestore's, and match its sentinels with errors.Is:
// a record file that cannot be decoded is filestore.ErrCorrupt, and a
// context that ends while a method waits for a lock is the context's error.
//
// Each Fiber middleware should have a directory of its own: keys of
// different middlewares are not namespaced, and Reset clears the whole
// directory.
package fiberstore

import (
	"context"
	"errors"
	"sync/atomic"
	"time"

	"github.com/filestore-go/filestore"
	"github.com/gofiber/fiber/v3"
)

var _ fiber.Storage = (*Storage)(nil)

// Storage is a fiber.Storage backed by a filestore.Store. Create it with New
// or Open.
//
// A Storage is safe for concurrent use by multiple goroutines, and any
// number of processes may have Storages on the same directory. Reads take no
// lock; writes, deletes and Reset wait for the store's per-record locks,
// which other processes sharing the directory may hold.
type Storage struct {
	store  *filestore.Store
	owned  bool // Close closes store
	closed atomic.Bool
}

// New returns a Storage that keeps its values in s. The caller keeps
// ownership of s: closing the Storage does not close s, which the caller
// closes (stopping its sweeper) when every user of it is done. This lets
// one Store be used directly and through the Storage at the same time.
//
// New does not block.
func New(s *filestore.Store) *Storage {
	return &Storage{store: s}
}

// Open opens (creating it if needed) the filestore in dir with opts, as
// filestore.Open does, and returns a Storage that owns it: the Storage's
// Close closes the store and stops its background sweeper.
//
// Open is safe to call from multiple goroutines and processes on the same
// directory; it blocks on filesystem I/O only.
func Open(dir string, opts *filestore.Options) (*Storage, error) {
	s, err := filestore.Open(dir, opts)
	if err != nil {
		return nil, err
	}
	return &Storage{store: s, owned: true}, nil
}

// Conn returns the underlying store, for operations fiber.Storage does not
// have, such as filestore.Store.Update or ForEach. It is safe for concurrent
// use.
func (s *Storage) Conn() *filestore.Store { return s.store }

// begin returns filestore.ErrClosed after Close, or ctx's error if it has
// ended, so that those come first whatever the key.
func (s *Storage) begin(ctx context.Context) error {
	if s.closed.Load() {
		return filestore.ErrClosed
	}
	return ctx.Err()
}

// GetWithContext returns the value stored for key, or nil, nil if there is
// no live value for it (see the package documentation for the empty and
// over-long keys). The returned slice belongs to the caller.
//
// It is safe for concurrent use. It takes no lock and does not wait on other
// writers; it fails with ctx's error if ctx has already ended.
func (s *Storage) GetWithContext(ctx context.Context, key string) ([]byte, error) {
	if err := s.begin(ctx); err != nil {
		return nil, err
	}
	rec, err := s.store.Load(ctx, key)
	if errors.Is(err, filestore.ErrNotFound) || errors.Is(err, filestore.ErrInvalidID) {
		// A key the store rejects (empty or over-long) can have no
		// value; see the package documentation for why that is a miss.
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	if len(rec.Data) == 0 {
		// Set never stores an empty value, and a non-nil empty slice
		// would read as a present but undecodable one.
		return nil, nil
	}
	return rec.Data, nil
}

// Get is GetWithContext with context.Background.
func (s *Storage) Get(key string) ([]byte, error) {
	return s.GetWithContext(context.Background(), key)
}

// SetWithContext stores val under key, replacing any value there and its
// expiry, to expire exp from now, or never if exp is 0 or negative. An empty
// key or val is ignored. Set does not keep val after it returns.
//
// It is safe for concurrent use. It waits, honouring ctx, for the key's lock
// in the store, then writes (and, unless the store has NoSync, fsyncs)
// while holding it.
func (s *Storage) SetWithContext(ctx context.Context, key string, val []byte, exp time.Duration) error {
	if err := s.begin(ctx); err != nil {
		return err
	}
	if key == "" || len(val) == 0 {
		// The gofiber/storage drivers ignore these, whatever their
		// backend accepts; an over-long key goes on to the store, which
		// rejects it with ErrInvalidID.
		return nil
	}
	var expiry time.Time // the zero Time: never
	if exp > 0 {
		expiry = time.Now().Add(exp)
	}
	return s.store.Save(ctx, key, val, expiry)
}

// Set is SetWithContext with context.Background.
func (s *Storage) Set(key string, val []byte, exp time.Duration) error {
	return s.SetWithContext(context.Background(), key, val, exp)
}

// DeleteWithContext removes the value for key. A key with no value is not
// an error.
//
// It is safe for concurrent use. It waits, honouring ctx, for the key's lock
// in the store.
func (s *Storage) DeleteWithContext(ctx context.Context, key string) error {
	if err := s.begin(ctx); err != nil {
		return err
	}
	err := s.store.Delete(ctx, key)
	if errors.Is(err, filestore.ErrInvalidID) {
		return nil // no value can exist under a key the store rejects
	}
	return err
}

// Delete is DeleteWithContext with context.Background.
func (s *Storage) Delete(key string) error {
	return s.DeleteWithContext(context.Background(), key)
}

// ResetWithContext deletes every record in the store's directory, including
// records written by other processes or by other users of the same Store,
// and removes expired ones that the sweeper has not yet reached. Values set
// while Reset runs may survive it.
//
// Records that cannot be decoded are left in place (a corrupt file is
// evidence for the operator, see filestore) and reported, after everything
// else is deleted, by an error matching filestore.ErrCorrupt.
//
// It is safe for concurrent use. It waits, honouring ctx, for each record's
// lock in turn, and stops with ctx's error when ctx ends.
func (s *Storage) ResetWithContext(ctx context.Context) error {
	if err := s.begin(ctx); err != nil {
		return err
	}
	err := s.store.ForEach(ctx, func(r filestore.Record) error {
		return s.store.Delete(ctx, r.ID)
	})
	if err != nil && !errors.Is(err, filestore.ErrCorrupt) {
		return err // ErrCorrupt: files left for the operator, reported below
	}
	// ForEach skips expired records, which Get already treats as absent;
	// sweep them so that Reset leaves an empty directory behind.
	if _, serr := s.store.DeleteExpired(ctx); serr != nil {
		return errors.Join(err, serr)
	}
	return err
}

// Reset is ResetWithContext with context.Background.
func (s *Storage) Reset() error {
	return s.ResetWithContext(context.Background())
}

// Close makes every later method call return filestore.ErrClosed. If the
// Storage was created by Open, Close also closes the store, stopping its
// background sweeper and waiting for a sweep in progress to finish; a
// Storage from New leaves the store open for its owner to close.
//
// Close is safe for concurrent use and may be called more than once; calls
// after the first do nothing and return nil. It does not wait for other
// methods running concurrently, which complete normally.
func (s *Storage) Close() error {
	if !s.closed.CompareAndSwap(false, true) {
		return nil
	}
	if s.owned {
		return s.store.Close()
	}
	return nil
}
