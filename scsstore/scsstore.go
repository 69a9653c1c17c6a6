// Package scsstore adapts a filestore.Store to the session store interfaces
// of github.com/alexedwards/scs/v2, so that several processes on one host
// (preforked workers, a blue/green pair) can share scs sessions through a
// local directory:
//
//	fs, err := filestore.Open("/var/lib/myapp/sessions", nil)
//	...
//	sessionManager := scs.New()
//	sessionManager.Store = scsstore.New(fs)
//
// A Store implements scs.Store, scs.CtxStore, scs.IterableStore and
// scs.IterableCtxStore. It follows the scs contract: a token that is
// missing or expired, or that the filestore rejects as invalid
// (filestore.ErrInvalidID: empty, or longer than filestore.MaxIDLength), is
// reported as not found, and so is a record file that is not a readable
// record (filestore.ErrCorrupt), which is logged instead; errors are
// returned for system failures only.
package scsstore

import (
	"context"
	"errors"
	"log/slog"
	"time"

	"github.com/alexedwards/scs/v2"
	"github.com/filestore-go/filestore"
)

var (
	_ scs.Store            = (*Store)(nil)
	_ scs.CtxStore         = (*Store)(nil)
	_ scs.IterableStore    = (*Store)(nil)
	_ scs.IterableCtxStore = (*Store)(nil)
)

// Store is an scs session store backed by a filestore.Store. Create it with
// New.
//
// A Store is safe for concurrent use by multiple goroutines, and any number
// of processes may use Stores over the same directory at once. Its methods
// block only where the underlying filestore.Store does: Commit and Delete
// wait for the session's lock, Find never waits.
type Store struct {
	fs *filestore.Store

	// Logger receives the records that Find and All skip because they
	// cannot be read (corrupt or oversized files), which scs would
	// otherwise never hear of. Log lines name records by hashed path,
	// never by token. Nil means slog.Default(). Set it before the Store is
	// first used and do not change it afterwards.
	Logger *slog.Logger
}

// New returns a Store that keeps sessions in fs.
//
// The Store does not own fs: closing fs is the caller's job, after the
// last request that uses the session manager has finished. Methods called
// after fs is closed return an error matching filestore.ErrClosed.
func New(fs *filestore.Store) *Store {
	return &Store{fs: fs}
}

func (s *Store) logger() *slog.Logger {
	if s.Logger != nil {
		return s.Logger
	}
	return slog.Default()
}

// Find returns the data for the session token. It is FindCtx with
// context.Background().
func (s *Store) Find(token string) ([]byte, bool, error) {
	return s.FindCtx(context.Background(), token)
}

// FindCtx returns the data for the session token, and found=false with a nil
// error if there is no live session for it: the token is unknown, expired,
// empty or too long, or its record cannot be read (which is logged). The
// returned slice belongs to the caller.
//
// FindCtx takes no lock and does not wait.
func (s *Store) FindCtx(ctx context.Context, token string) ([]byte, bool, error) {
	rec, found, err := s.find(ctx, token)
	return rec.Data, found, err
}

// find loads the record for token, reading filestore's errors as FindCtx
// documents.
func (s *Store) find(ctx context.Context, token string) (filestore.Record, bool, error) {
	rec, err := s.fs.Load(ctx, token)
	switch {
	case err == nil:
		return rec, true, nil
	case errors.Is(err, filestore.ErrNotFound), errors.Is(err, filestore.ErrInvalidID):
		// ErrInvalidID: a token no session can have was presented,
		// which for scs is a malformed token, not a failure.
		return filestore.Record{}, false, nil
	case errors.Is(err, filestore.ErrCorrupt):
		// The file at the token's path is not a readable record (the
		// store's word for it, whatever the reason: damage, a planted
		// file, one too large to read). For scs the session is gone;
		// the log is where the operator hears of the file.
		s.logger().LogAttrs(ctx, slog.LevelWarn, "scsstore: skipping unreadable session record", slog.Any("error", err))
		return filestore.Record{}, false, nil
	}
	return filestore.Record{}, false, err
}

// Commit stores the session data for token. It is CommitCtx with
// context.Background().
func (s *Store) Commit(token string, b []byte, expiry time.Time) error {
	return s.CommitCtx(context.Background(), token, b, expiry)
}

// CommitCtx stores b for token until expiry, replacing both the data and
// the expiry of any session already stored under token. It returns an error
// matching filestore.ErrInvalidID for an empty or over-long token and
// filestore.ErrTooLarge for data over the store's MaxRecordSize.
//
// CommitCtx waits for the session's lock, honouring ctx, and returns once
// the write is durable (unless the filestore was opened with NoSync).
func (s *Store) CommitCtx(ctx context.Context, token string, b []byte, expiry time.Time) error {
	return s.fs.Save(ctx, token, b, expiry)
}

// Delete removes the session for token. It is DeleteCtx with
// context.Background().
func (s *Store) Delete(token string) error {
	return s.DeleteCtx(context.Background(), token)
}

// DeleteCtx removes the session for token. Deleting a session that does not
// exist, including one whose token is empty or too long to be stored, is
// not an error. A nil return means the removal is durable (unless the
// filestore was opened with NoSync), so a destroyed session cannot come
// back after a crash.
//
// DeleteCtx waits for the session's lock, honouring ctx.
func (s *Store) DeleteCtx(ctx context.Context, token string) error {
	err := s.fs.Delete(ctx, token)
	if errors.Is(err, filestore.ErrInvalidID) {
		// No session can have such a token, so there is none to delete.
		// scs itself deletes the empty token when a session that was
		// never committed is destroyed or renewed.
		return nil
	}
	return err
}

// All returns every live session. It is AllCtx with context.Background().
func (s *Store) All() (map[string][]byte, error) {
	return s.AllCtx(context.Background())
}

// AllCtx returns a map from token to data of every live session in the
// store. The map is never nil. Records that cannot be read are logged and
// left out. Sessions committed or deleted while AllCtx runs may or may not
// be included.
//
// AllCtx takes no lock. It reads every record, so its cost grows with the
// number of sessions; it stops early with ctx's error when ctx ends.
func (s *Store) AllCtx(ctx context.Context) (map[string][]byte, error) {
	m := make(map[string][]byte)
	err := s.fs.ForEach(ctx, func(rec filestore.Record) error {
		m[rec.ID] = rec.Data
		return nil
	})
	if errors.Is(err, filestore.ErrCorrupt) {
		// ForEach visits every readable record before it reports the
		// ones it skipped.
		s.logger().LogAttrs(ctx, slog.LevelWarn, "scsstore: skipped unreadable session records", slog.Any("error", err))
		err = nil
	}
	if err != nil {
		return nil, err
	}
	return m, nil
}
