package scsstore

import (
	"context"
	"errors"
	"time"

	"github.com/alexedwards/scs/v2"
)

// ExpiryFinder is a store that can tell, with a session's data, when the
// session expires. A Store is one. Fallback uses it to copy a session it
// found in its secondary store into the primary with the same expiry.
type ExpiryFinder interface {
	// FindExpiry is FindCtx, also returning the session's expiry.
	FindExpiry(ctx context.Context, token string) (b []byte, expiry time.Time, found bool, err error)
}

var _ ExpiryFinder = (*Store)(nil)

// FindExpiry returns the data and the expiry of the session token, with
// found=false for no live session, as FindCtx does. It takes no lock and
// does not wait.
func (s *Store) FindExpiry(ctx context.Context, token string) ([]byte, time.Time, bool, error) {
	rec, found, err := s.find(ctx, token)
	return rec.Data, rec.Expiry, found, err
}

// Fallback returns an scs store for moving sessions from secondary to
// primary, say from a filestore to Redis, without logging anyone out:
//
//   - Find reads from primary and, on a miss, from secondary. A session
//     found in secondary is copied into primary with its expiry, so the
//     user's next request finds it there.
//   - Commit writes to primary only.
//   - Delete removes the session from both, secondary first.
//
// An application deploys with Fallback(redisStore, fileStore), copies the
// old sessions over (the filestore tool's migrate command), and later
// drops the fallback: see the README's "When one host is not enough".
//
// The expiry of a session found in secondary comes from secondary's
// FindExpiry if it is an ExpiryFinder (as a Store is) and reports one;
// otherwise from the deadline that scs's default codec (scs.GobCodec)
// keeps in the data. A session whose expiry neither tells is served but
// not copied: the session manager's next Commit writes it to primary.
//
// A copy cannot bring back a session deleted meanwhile: after copying,
// Find looks in secondary again and removes the copy if the session is
// gone there, and Delete removes from secondary before primary, so that
// one of the two always sees the other's work.
//
// The returned store also implements scs.CtxStore, calling the ctx
// methods of the stores that have them, and scs.IterableStore and
// scs.IterableCtxStore: All merges both stores' sessions, primary's data
// winning, and fails if either store is not iterable. It is safe for
// concurrent use if both stores are, and blocks on what they block on.
func Fallback(primary, secondary scs.Store) scs.Store {
	return &fallback{primary: primary, secondary: secondary}
}

type fallback struct {
	primary, secondary scs.Store
}

var (
	_ scs.CtxStore         = (*fallback)(nil)
	_ scs.IterableStore    = (*fallback)(nil)
	_ scs.IterableCtxStore = (*fallback)(nil)
)

// ErrNotIterable is returned by the All and AllCtx of a Fallback store one
// of whose stores does not implement scs.IterableStore.
var ErrNotIterable = errors.New("scsstore: store cannot list its sessions")

func find(ctx context.Context, s scs.Store, token string) ([]byte, bool, error) {
	if c, ok := s.(scs.CtxStore); ok {
		return c.FindCtx(ctx, token)
	}
	return s.Find(token)
}

func commit(ctx context.Context, s scs.Store, token string, b []byte, expiry time.Time) error {
	if c, ok := s.(scs.CtxStore); ok {
		return c.CommitCtx(ctx, token, b, expiry)
	}
	return s.Commit(token, b, expiry)
}

func remove(ctx context.Context, s scs.Store, token string) error {
	if c, ok := s.(scs.CtxStore); ok {
		return c.DeleteCtx(ctx, token)
	}
	return s.Delete(token)
}

func all(ctx context.Context, s scs.Store) (map[string][]byte, error) {
	switch c := s.(type) {
	case scs.IterableCtxStore:
		return c.AllCtx(ctx)
	case scs.IterableStore:
		return c.All()
	}
	return nil, ErrNotIterable
}

func (f *fallback) Find(token string) ([]byte, bool, error) {
	return f.FindCtx(context.Background(), token)
}

func (f *fallback) FindCtx(ctx context.Context, token string) ([]byte, bool, error) {
	b, found, err := find(ctx, f.primary, token)
	if err != nil || found {
		return b, found, err
	}
	var expiry time.Time
	if ef, ok := f.secondary.(ExpiryFinder); ok {
		b, expiry, found, err = ef.FindExpiry(ctx, token)
	} else {
		b, found, err = find(ctx, f.secondary, token)
	}
	if err != nil || !found {
		return nil, false, err
	}
	if expiry.IsZero() {
		if deadline, _, derr := (scs.GobCodec{}).Decode(b); derr == nil {
			expiry = deadline
		}
	}
	if expiry.IsZero() || !expiry.After(time.Now()) {
		return b, true, nil
	}
	if err := commit(ctx, f.primary, token, b, expiry); err != nil {
		// The session was found; the copy is only ahead of time.
		return b, true, nil
	}
	// A Delete may have run between our read of secondary and our write
	// to primary: if the session is gone from secondary now, take the
	// copy back, as that Delete's removal from primary may have come
	// before our write.
	if _, still, err := find(ctx, f.secondary, token); err == nil && !still {
		_ = remove(ctx, f.primary, token) // error deliberately ignored: Delete's own removal from primary, which comes after, covers it
		return nil, false, nil
	}
	return b, true, nil
}

func (f *fallback) Commit(token string, b []byte, expiry time.Time) error {
	return f.CommitCtx(context.Background(), token, b, expiry)
}

func (f *fallback) CommitCtx(ctx context.Context, token string, b []byte, expiry time.Time) error {
	return commit(ctx, f.primary, token, b, expiry)
}

func (f *fallback) Delete(token string) error {
	return f.DeleteCtx(context.Background(), token)
}

// DeleteCtx removes the session from secondary, then from primary, and
// returns the first error; it tries primary even if secondary failed.
func (f *fallback) DeleteCtx(ctx context.Context, token string) error {
	err := remove(ctx, f.secondary, token)
	if perr := remove(ctx, f.primary, token); err == nil {
		err = perr
	}
	return err
}

func (f *fallback) All() (map[string][]byte, error) {
	return f.AllCtx(context.Background())
}

func (f *fallback) AllCtx(ctx context.Context) (map[string][]byte, error) {
	m, err := all(ctx, f.secondary)
	if err != nil {
		return nil, err
	}
	p, err := all(ctx, f.primary)
	if err != nil {
		return nil, err
	}
	for k, v := range p {
		m[k] = v
	}
	return m, nil
}
