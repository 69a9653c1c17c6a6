package filestore

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// Every wait in these tests is bounded (waitLimit, bounded and await in
// guarantees_test.go), and every lock a test takes is let go in a Cleanup
// registered after its stores', so that it runs before their Close: a lock
// test that fails ends with its failure, never a hang until -timeout.

// twoStores opens two Stores on one directory. Each has its own in-process
// mutexes, so only the lock files exclude one from the other, exactly as
// between two processes.
func twoStores(t *testing.T) (*Store, *Store) {
	a := openTest(t, nil)
	return a, openAgain(t, a, nil)
}

// holdLock makes s hold id's lock, in an Update, until the returned func is
// called; that func waits for the Update to return.
func holdLock(t *testing.T, s *Store, id string) (release func()) {
	t.Helper()
	held, done := make(chan struct{}), make(chan error, 1)
	stop := make(chan struct{})
	var once sync.Once
	let := func() { once.Do(func() { close(stop) }) }
	// If the test fails while the lock is held, let go before the stores'
	// Close (registered earlier, so run later) waits for it.
	t.Cleanup(let)
	ctx := bounded(t)
	go func() {
		done <- s.Update(ctx, id, func(r *Record) (*Record, error) {
			close(held)
			<-stop
			return r, nil
		})
	}()
	select {
	case <-held:
	case err := <-done: // the Update failed before its fn ran
		t.Fatalf("holding the lock: %v", err)
	}
	return func() {
		t.Helper()
		let()
		require.NoError(t, await(t, done, "the lock holder's Update"))
	}
}

// requireExcluded checks that s cannot take id's lock: a Save, a Delete and
// an Update each wait, and give up when their context ends, leaving the
// record as it was.
func requireExcluded(t *testing.T, s *Store, id string) {
	t.Helper()
	before, beforeErr := s.Load(bg, id)
	requireWaits(t, "Save", func(ctx context.Context) error { return s.Save(ctx, id, []byte("late"), time.Time{}) })
	requireWaits(t, "Delete", func(ctx context.Context) error { return s.Delete(ctx, id) })
	requireWaits(t, "Update", func(ctx context.Context) error {
		return s.Update(ctx, id, func(*Record) (*Record, error) {
			return nil, errors.New("fn ran while the lock was held elsewhere")
		})
	})
	after, afterErr := s.Load(bg, id)
	require.Equal(t, beforeErr, afterErr)
	require.Equal(t, before, after, "the record changed while its lock was held elsewhere")
}

// TestKeptLockFilesExclude: a store's kept-open lock files exclude another
// store both ways, whichever took its lock first, and a release lets the
// other in.
func TestKeptLockFilesExclude(t *testing.T) {
	ctx := bounded(t)
	a, b := twoStores(t)
	const id = "shared"
	require.NoError(t, a.Save(ctx, id, []byte("a"), time.Time{})) // a now keeps the stripe's lock file open

	release := holdLock(t, b, id)
	requireExcluded(t, a, id)
	release()
	require.NoError(t, a.Save(ctx, id, []byte("a2"), time.Time{}))

	release = holdLock(t, a, id)
	requireExcluded(t, b, id)
	release()
	require.NoError(t, b.Save(ctx, id, []byte("b"), time.Time{}))
}

// TestDeletedLockFilesStillExclude removes every lock file while two stores
// keep theirs open, as an operator "cleaning up stale locks" might. A store
// must notice that its kept descriptor no longer names the lock file and
// reopen the path, or the two would lock different inodes and exclude
// nothing.
func TestDeletedLockFilesStillExclude(t *testing.T) {
	ctx := bounded(t)
	a, b := twoStores(t)
	const id = "shared"
	require.NoError(t, a.Save(ctx, id, []byte("a"), time.Time{}))
	require.NoError(t, b.Save(ctx, id, []byte("b"), time.Time{}))

	locks, err := filepath.Glob(filepath.Join(a.Dir(), locksDir, "stripe-*.lock"))
	require.NoError(t, err)
	require.NotEmpty(t, locks)
	for _, p := range locks {
		require.NoError(t, os.Remove(p))
	}

	release := holdLock(t, b, id) // b recreates the lock file and locks it
	requireExcluded(t, a, id)     // a's old descriptor is for the removed file
	release()
	require.NoError(t, a.Save(ctx, id, []byte("a2"), time.Time{}))
	rec, err := b.Load(bg, id)
	require.NoError(t, err)
	require.Equal(t, "a2", string(rec.Data))

	for _, p := range locks {
		if fi, err := os.Stat(p); err == nil {
			require.Equal(t, os.FileMode(0o600), fi.Mode().Perm(), "recreated %s", filepath.Base(p))
		}
	}
}

// TestCloseWaitsForLockHolders: Close waits for an Update in flight to
// release its lock before closing the lock files, the Update completes
// normally, and nothing stays open.
func TestCloseWaitsForLockHolders(t *testing.T) {
	ctx := bounded(t)
	s := openTest(t, nil)
	const id = "busy"
	require.NoError(t, s.Save(ctx, id, []byte("1"), time.Time{}))
	release := holdLock(t, s, id)
	closed := make(chan error, 1)
	go func() { closed <- s.Close() }()
	select {
	case err := <-closed:
		t.Fatalf("Close returned (%v) while an Update held a lock", err)
	case <-time.After(50 * time.Millisecond):
	}
	release() // the Update returns nil: it completed normally
	require.NoError(t, await(t, closed, "Close"))
	require.ErrorIs(t, s.Close(), ErrClosed)
}

// TestLockerAfterClose: a stripe taken after the locker closed (by a method
// that was already running when Close was called) still excludes, through
// a fresh descriptor that it does not keep.
func TestLockerAfterClose(t *testing.T) {
	ctx := bounded(t)
	a, b := twoStores(t)
	const id = "late"
	r, err := a.refOf(id)
	require.NoError(t, err)
	a.locks.close()
	held, err := a.locks.lock(ctx, r.lk)
	require.NoError(t, err)
	unlockOnce := sync.OnceFunc(held.unlock)
	t.Cleanup(unlockOnce) // before a's Close, which waits for it
	requireExcluded(t, b, id)
	unlockOnce()
	require.Nil(t, a.locks.stripes[r.lk.stripe].file, "a closed locker kept a lock file open")
	require.NoError(t, b.Save(ctx, id, []byte("b"), time.Time{}))
}

// TestStripesFollowShards: in a store created now (marker version 2) every
// record of a shard directory maps to one stripe, in every sharded layout,
// which is what lets the sweeper take one lock for a run of candidates;
// and the ids still spread over all 256 stripes.
func TestStripesFollowShards(t *testing.T) {
	for _, l := range []string{"1x2", "1x3", "2x2"} {
		t.Run(l, func(t *testing.T) {
			s := openTest(t, &Options{Layout: l, SweepInterval: -1})
			require.True(t, s.locks.byPrefix)
			stripeOfDir := map[string]int{}
			used := map[int]bool{}
			for i := range 5000 {
				r, err := s.refOf(fmt.Sprintf("%s-session-%d", l, i))
				require.NoError(t, err)
				if st, ok := stripeOfDir[r.dirPath()]; ok {
					require.Equal(t, st, r.lk.stripe, "two records of shard %s in different stripes", r.dirPath())
				}
				stripeOfDir[r.dirPath()] = r.lk.stripe
				require.Equal(t, r.lk.stripe, s.locks.of(sumOfHex(r.hex)).stripe, "the sweeper's stripe differs from the writers'")
				used[r.lk.stripe] = true
			}
			require.Len(t, used, defaultStripes)
		})
	}
}

// TestVersion1StoreKeepsItsStripes: a store created by an earlier release
// (marker version 1) keeps that release's stripe mapping, the hash's first
// two bytes modulo the stripe count, so a process of the earlier release
// sharing the store still excludes this one: a lock it holds on the lock
// file it computes makes a Save here wait. A marker of a later version is
// refused, as the earlier release refuses version 2.
func TestVersion1StoreKeepsItsStripes(t *testing.T) {
	checkHygiene(t)
	ctx := bounded(t)
	root := filepath.Join(t.TempDir(), "old")
	require.NoError(t, os.Mkdir(root, 0o700))
	require.NoError(t, os.WriteFile(filepath.Join(root, markerName),
		[]byte(`{"format":"filestore","version":1,"layout":"1x2","stripes":256}`), 0o600))
	s, err := Open(root, &Options{SweepInterval: -1})
	require.NoError(t, err)
	defer s.Close()
	require.False(t, s.locks.byPrefix)

	const id = "old-release-session"
	sum, _ := hashID(id)
	oldStripe := (int(sum[0])<<8 | int(sum[1])) % 256
	r, err := s.refOf(id)
	require.NoError(t, err)
	require.Equal(t, oldStripe, r.lk.stripe)

	// The earlier release locks the same file this way.
	oldPath := filepath.Join(root, locksDir, fmt.Sprintf("stripe-%04x.lock", oldStripe))
	release, err := flockFile(bg, oldPath, true)
	require.NoError(t, err)
	released := false
	t.Cleanup(func() {
		if !released {
			_ = release() // error deliberately ignored: the test has failed already
		}
	})
	requireExcluded(t, s, id)
	released = true
	require.NoError(t, release())
	require.NoError(t, s.Save(ctx, id, []byte("now"), time.Time{}))

	for _, v := range []int{0, 4} {
		bad := filepath.Join(t.TempDir(), "v")
		require.NoError(t, os.Mkdir(bad, 0o700))
		require.NoError(t, os.WriteFile(filepath.Join(bad, markerName),
			fmt.Appendf(nil, `{"format":"filestore","version":%d,"layout":"1x2","stripes":256}`, v), 0o600))
		_, err := Open(bad, &Options{SweepInterval: -1})
		require.ErrorIs(t, err, ErrNotStore, "version %d", v)
	}
}

// TestRemovedShardDirectory: an operator removes a shard directory while
// two stores (two processes, as far as the kernel is concerned) keep its
// descriptor open. The store that writes next recreates the directory, and
// the other, whose descriptor now names the removed directory, still loads
// that record, deletes it durably and saves again, by noticing that its
// descriptor's directory has no links left.
func TestRemovedShardDirectory(t *testing.T) {
	ctx := bounded(t)
	a, b := twoStores(t)
	const id = "moved-out"
	require.NoError(t, a.Save(ctx, id, []byte("1"), time.Time{}))
	_, err := b.Load(bg, id) // b now holds the shard's descriptor too
	require.NoError(t, err)
	r, err := a.refOf(id)
	require.NoError(t, err)
	require.NotNil(t, b.dirs.slots[r.shard].Load(), "b did not cache the shard directory")

	require.NoError(t, os.RemoveAll(r.dirPath()))
	_, err = b.Load(bg, id)
	require.ErrorIs(t, err, ErrNotFound)

	require.NoError(t, a.Save(ctx, id, []byte("2"), time.Time{})) // recreates the directory
	rec, err := b.Load(bg, id)
	require.NoError(t, err, "a stale shard descriptor hid a record")
	require.Equal(t, "2", string(rec.Data))

	require.NoError(t, os.RemoveAll(r.dirPath()))
	require.NoError(t, a.Save(ctx, id, []byte("3"), time.Time{}))
	require.NoError(t, b.Delete(ctx, id))
	_, err = a.Load(bg, id)
	require.ErrorIs(t, err, ErrNotFound, "a Delete through a stale descriptor removed nothing")

	require.NoError(t, os.RemoveAll(r.dirPath()))
	require.NoError(t, b.Save(ctx, id, []byte("4"), time.Time{}))
	rec, err = a.Load(bg, id)
	require.NoError(t, err)
	require.Equal(t, "4", string(rec.Data))
}

// TestCloseWithLoadsInFlight: Loads running while Close closes the cached
// shard directories either complete or report ErrClosed; none uses a
// descriptor after it is closed (which could name another file by then),
// and every descriptor is closed in the end (the hygiene check).
func TestCloseWithLoadsInFlight(t *testing.T) {
	rounds := 100 // under -race, enough to catch a descriptor closed in use
	if testing.Short() {
		rounds = 20
	}
	for range rounds {
		s := openTest(t, nil)
		for i := range 64 {
			require.NoError(t, s.Save(bg, benchID(i), []byte("x"), time.Time{}))
		}
		var wg sync.WaitGroup
		start := make(chan struct{})
		for g := range 4 {
			wg.Go(func() {
				<-start
				for i := 0; ; i++ {
					_, err := s.Load(bg, benchID(g*16+i%16))
					if errors.Is(err, ErrClosed) {
						return
					}
					require.NoError(t, err)
				}
			})
		}
		close(start)
		time.Sleep(time.Millisecond)
		require.NoError(t, s.Close())
		wg.Wait()
	}
}
