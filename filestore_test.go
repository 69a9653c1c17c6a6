package filestore

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

var bg = context.Background()

// openTest opens a store in a fresh directory with the sweeper off and
// closes it when the test ends.
func openTest(t testing.TB, opts *Options) *Store {
	t.Helper()
	// Fds and goroutines must be back to this baseline once the store is
	// closed (cleanups run last-registered first, so Close runs before).
	if _, ok := t.(*testing.T); ok {
		checkHygiene(t)
	}
	o := Options{SweepInterval: -1}
	if opts != nil {
		o = *opts
	}
	s, err := Open(filepath.Join(t.TempDir(), "store"), &o)
	require.NoError(t, err)
	closeInCleanup(t, s)
	return s
}

// files lists every path under the store's data directory.
func files(t testing.TB, s *Store) []string {
	t.Helper()
	var out []string
	err := filepath.WalkDir(s.data, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if !d.IsDir() {
			out = append(out, p)
		}
		return nil
	})
	require.NoError(t, err)
	return out
}

func TestRoundTrip(t *testing.T) {
	for _, compress := range []bool{false, true} {
		t.Run(fmt.Sprintf("compress=%v", compress), func(t *testing.T) {
			s := openTest(t, &Options{SweepInterval: -1, Compress: compress})
			exp := time.Now().Add(time.Hour).Round(0)
			payloads := map[string][]byte{
				"empty":  {},
				"small":  []byte("hello"),
				"repeat": bytes.Repeat([]byte("session-data "), 500),
				"binary": {0, 1, 2, 255, 254, 0},
			}
			for name, data := range payloads {
				require.NoError(t, s.Save(bg, name, data, exp))
			}
			for name, data := range payloads {
				r, err := s.Load(bg, name)
				require.NoError(t, err)
				require.Equal(t, name, r.ID)
				require.Equal(t, data, r.Data)
				require.True(t, exp.Equal(r.Expiry), "expiry %v != %v", r.Expiry, exp)
			}
			// Overwrite replaces data and expiry.
			require.NoError(t, s.Save(bg, "small", []byte("bye"), time.Time{}))
			r, err := s.Load(bg, "small")
			require.NoError(t, err)
			require.Equal(t, []byte("bye"), r.Data)
			require.True(t, r.Expiry.IsZero())
			// No temp files remain after successful writes.
			for _, p := range files(t, s) {
				require.True(t, isRecordName(filepath.Base(p)), "unexpected file %s", p)
			}
		})
	}
}

func TestCompressionShrinksRecords(t *testing.T) {
	checkHygiene(t)
	plain := openTest(t, nil)
	packed := openTest(t, &Options{SweepInterval: -1, Compress: true})
	size := func(s *Store) int64 {
		fi, err := os.Stat(files(t, s)[0])
		require.NoError(t, err)
		return fi.Size()
	}
	// 3.5 KB of JSON fits one 4 KiB block plain: compressing it would save
	// no disk, so it is stored plain.
	small := bytes.Repeat([]byte(`{"user":42,"cart":["apple","pear"]}`), 100)
	require.NoError(t, plain.Save(bg, "id", small, time.Time{}))
	require.NoError(t, packed.Save(bg, "id", small, time.Time{}))
	require.Equal(t, size(plain), size(packed), "a one-block record was compressed")
	// 14 KB takes four blocks plain and one compressed.
	data := bytes.Repeat(small, 4)
	require.NoError(t, plain.Save(bg, "id", data, time.Time{}))
	require.NoError(t, packed.Save(bg, "id", data, time.Time{}))
	require.Less(t, size(packed), size(plain)/4)
	// A store that does not compress still reads compressed records.
	reader, err := Open(packed.Dir(), &Options{SweepInterval: -1})
	require.NoError(t, err)
	defer reader.Close()
	r, err := reader.Load(bg, "id")
	require.NoError(t, err)
	require.Equal(t, data, r.Data)
}

func TestLoadReturnsCallerOwnedData(t *testing.T) {
	s := openTest(t, nil)
	data := []byte("original")
	require.NoError(t, s.Save(bg, "id", data, time.Time{}))
	data[0] = 'X' // Save must not keep data
	r, err := s.Load(bg, "id")
	require.NoError(t, err)
	require.Equal(t, "original", string(r.Data))
	r.Data[0] = 'Y'
	r2, err := s.Load(bg, "id")
	require.NoError(t, err)
	require.Equal(t, "original", string(r2.Data))
}

func TestNotFound(t *testing.T) {
	s := openTest(t, nil)
	_, err := s.Load(bg, "missing")
	require.ErrorIs(t, err, ErrNotFound)
	require.ErrorIs(t, err, fs.ErrNotExist)
	require.NotContains(t, err.Error(), "missing")
}

func TestExpiry(t *testing.T) {
	s := openTest(t, nil)
	now := time.Now()
	s.now = func() time.Time { return now }
	require.NoError(t, s.Save(bg, "a", []byte("x"), now.Add(time.Minute)))
	require.NoError(t, s.Save(bg, "never", []byte("x"), time.Time{}))
	require.NoError(t, s.Save(bg, "ancient", []byte("x"), time.Unix(-100, 0)))
	_, err := s.Load(bg, "a")
	require.NoError(t, err)
	_, err = s.Load(bg, "ancient")
	require.ErrorIs(t, err, ErrNotFound, "an expiry before 1970 is expired, not 'never'")

	now = now.Add(time.Minute) // a record expires at its expiry instant
	_, err = s.Load(bg, "a")
	require.ErrorIs(t, err, ErrNotFound)
	_, err = s.Load(bg, "never")
	require.NoError(t, err)

	n, err := s.DeleteExpired(bg)
	require.NoError(t, err)
	require.Equal(t, 2, n)
	require.Len(t, files(t, s), 1)
}

func TestDelete(t *testing.T) {
	s := openTest(t, nil)
	require.NoError(t, s.Delete(bg, "missing"))
	require.NoError(t, s.Save(bg, "id", []byte("x"), time.Time{}))
	require.NoError(t, s.Delete(bg, "id"))
	_, err := s.Load(bg, "id")
	require.ErrorIs(t, err, ErrNotFound)
	require.Empty(t, files(t, s))
}

func TestUpdate(t *testing.T) {
	s := openTest(t, nil)
	exp := time.Now().Add(time.Hour)

	// Missing: fn sees nil, and its record is stored.
	require.NoError(t, s.Update(bg, "id", func(cur *Record) (*Record, error) {
		require.Nil(t, cur)
		return &Record{Data: []byte("1"), Expiry: exp}, nil
	}))
	// Present: fn sees the record.
	require.NoError(t, s.Update(bg, "id", func(cur *Record) (*Record, error) {
		require.NotNil(t, cur)
		require.Equal(t, "id", cur.ID)
		require.Equal(t, "1", string(cur.Data))
		cur.Data = append(cur.Data, '2')
		return cur, nil
	}))
	r, err := s.Load(bg, "id")
	require.NoError(t, err)
	require.Equal(t, "12", string(r.Data))

	// An error changes nothing and comes back unwrapped.
	boom := errors.New("boom")
	err = s.Update(bg, "id", func(cur *Record) (*Record, error) {
		return &Record{Data: []byte("lost")}, boom
	})
	require.Same(t, boom, err)
	r, err = s.Load(bg, "id")
	require.NoError(t, err)
	require.Equal(t, "12", string(r.Data))

	// A record for another id is refused.
	err = s.Update(bg, "id", func(cur *Record) (*Record, error) {
		return &Record{ID: "other", Data: []byte("x")}, nil
	})
	require.ErrorIs(t, err, ErrInvalidID)

	// Too large is refused and changes nothing.
	err = s.Update(bg, "id", func(cur *Record) (*Record, error) {
		return &Record{Data: make([]byte, DefaultMaxRecordSize+1)}, nil
	})
	require.ErrorIs(t, err, ErrTooLarge)

	// Nil deletes.
	require.NoError(t, s.Update(bg, "id", func(cur *Record) (*Record, error) { return nil, nil }))
	_, err = s.Load(bg, "id")
	require.ErrorIs(t, err, ErrNotFound)

	// Expired: fn sees nil.
	require.NoError(t, s.Save(bg, "old", []byte("x"), time.Now().Add(-time.Second)))
	require.NoError(t, s.Update(bg, "old", func(cur *Record) (*Record, error) {
		require.Nil(t, cur)
		return &Record{Data: []byte("fresh")}, nil
	}))
	r, err = s.Load(bg, "old")
	require.NoError(t, err)
	require.Equal(t, "fresh", string(r.Data))
}

func TestUpdateConcurrentGoroutines(t *testing.T) {
	s := openTest(t, &Options{SweepInterval: -1, NoSync: true})
	const goroutines, each = 16, 50
	var wg sync.WaitGroup
	for range goroutines {
		wg.Go(func() {
			for range each {
				require.NoError(t, s.Update(bg, "counter", increment))
			}
		})
	}
	wg.Wait()
	require.Equal(t, goroutines*each, readCounter(t, s, "counter"))
}

// increment is an Update fn that adds one to a decimal counter.
func increment(cur *Record) (*Record, error) {
	n := 0
	if cur != nil {
		if _, err := fmt.Sscan(string(cur.Data), &n); err != nil {
			return nil, err
		}
	}
	return &Record{Data: fmt.Appendf(nil, "%d", n+1)}, nil
}

func readCounter(t testing.TB, s *Store, id string) int {
	t.Helper()
	r, err := s.Load(bg, id)
	require.NoError(t, err)
	var n int
	_, err = fmt.Sscan(string(r.Data), &n)
	require.NoError(t, err)
	return n
}

func TestInvalidInput(t *testing.T) {
	checkHygiene(t)
	s := openTest(t, &Options{SweepInterval: -1, MaxRecordSize: 100})
	for _, id := range []string{"", strings.Repeat("x", MaxIDLength+1)} {
		_, err := s.Load(bg, id)
		require.ErrorIs(t, err, ErrInvalidID)
		require.ErrorIs(t, s.Save(bg, id, nil, time.Time{}), ErrInvalidID)
		require.ErrorIs(t, s.Delete(bg, id), ErrInvalidID)
		require.ErrorIs(t, s.Update(bg, id, increment), ErrInvalidID)
	}
	// Hostile but valid ids are just hashed.
	for _, id := range []string{"../../etc/passwd", "a/b", "\x00", "\xff\xfe", "%2e%2e%2f", strings.Repeat("y", MaxIDLength)} {
		require.NoError(t, s.Save(bg, id, []byte("v"), time.Time{}))
		r, err := s.Load(bg, id)
		require.NoError(t, err)
		require.Equal(t, id, r.ID)
	}
	require.ErrorIs(t, s.Save(bg, "big", make([]byte, 101), time.Time{}), ErrTooLarge)
	require.NoError(t, s.Save(bg, "fits", make([]byte, 100), time.Time{}))

	for _, size := range []int{-1, maxMaxRecordSize + 1} {
		_, err := Open(t.TempDir(), &Options{MaxRecordSize: size})
		require.ErrorIs(t, err, ErrInvalidOption)
	}
}

func TestContextCancelled(t *testing.T) {
	s := openTest(t, nil)
	ctx, cancel := context.WithCancel(bg)
	cancel()
	require.ErrorIs(t, s.Save(ctx, "id", nil, time.Time{}), context.Canceled)
	_, err := s.Load(ctx, "id")
	require.ErrorIs(t, err, context.Canceled)
	require.ErrorIs(t, s.ForEach(ctx, func(Record) error { return nil }), context.Canceled)
}

func TestLockWaitHonoursContext(t *testing.T) {
	checkHygiene(t)
	s := openTest(t, nil)
	other := openAgain(t, s, nil)

	held, stop := make(chan struct{}), make(chan struct{})
	release := sync.OnceFunc(func() { close(stop) })
	// Let the Update go before the stores' Close, which waits for it, even
	// if the test fails while it holds the lock.
	t.Cleanup(release)
	done := make(chan error, 1)
	ctx := bounded(t)
	go func() {
		done <- s.Update(ctx, "id", func(*Record) (*Record, error) {
			close(held)
			<-stop
			return &Record{Data: []byte("first")}, nil
		})
	}()
	select {
	case <-held:
	case err := <-done:
		t.Fatalf("holding the lock: %v", err)
	}
	// Another Store (its own fds, its own mutexes) must wait on the flock
	// and give up when its context ends.
	ctx1, cancel := context.WithTimeout(bg, 50*time.Millisecond)
	defer cancel()
	err := other.Save(ctx1, "id", []byte("second"), time.Time{})
	require.ErrorIs(t, err, context.DeadlineExceeded)
	// So must a goroutine of the same Store.
	ctx2, cancel2 := context.WithTimeout(bg, 50*time.Millisecond)
	defer cancel2()
	require.ErrorIs(t, s.Delete(ctx2, "id"), context.DeadlineExceeded)
	release()
	require.NoError(t, await(t, done, "the lock holder's Update"))
	r, err := other.Load(bg, "id")
	require.NoError(t, err)
	require.Equal(t, "first", string(r.Data))
	// The abandoned flock waiter released the lock: it can be taken again.
	require.NoError(t, other.Save(ctx, "id", []byte("third"), time.Time{}))
}

func TestClose(t *testing.T) {
	checkHygiene(t)
	s, err := Open(filepath.Join(t.TempDir(), "s"), &Options{SweepInterval: time.Millisecond})
	require.NoError(t, err)
	require.NoError(t, s.Save(bg, "id", []byte("x"), time.Time{}))
	require.NoError(t, s.Close())
	require.ErrorIs(t, s.Close(), ErrClosed)
	_, err = s.Load(bg, "id")
	require.ErrorIs(t, err, ErrClosed)
	require.ErrorIs(t, s.Save(bg, "id", nil, time.Time{}), ErrClosed)
	require.ErrorIs(t, s.Delete(bg, "id"), ErrClosed)
	require.ErrorIs(t, s.Update(bg, "id", increment), ErrClosed)
	_, err = s.DeleteExpired(bg)
	require.ErrorIs(t, err, ErrClosed)
	require.ErrorIs(t, s.ForEach(bg, func(Record) error { return nil }), ErrClosed)
}

func TestForEach(t *testing.T) {
	for _, layout := range []string{"flat", "1x2", "2x2", "1x3"} {
		t.Run(layout, func(t *testing.T) {
			s := openTest(t, &Options{SweepInterval: -1, Layout: layout, NoSync: true})
			want := map[string]string{}
			for i := range 300 {
				id := fmt.Sprintf("session-%d", i)
				want[id] = fmt.Sprint(i)
				require.NoError(t, s.Save(bg, id, []byte(want[id]), time.Time{}))
			}
			require.NoError(t, s.Save(bg, "expired", []byte("x"), time.Now().Add(-time.Hour)))
			// Things a walker must skip: an NFS leftover, a stray dir, a symlink.
			require.NoError(t, os.WriteFile(filepath.Join(s.data, ".nfs000001"), nil, 0o600))
			require.NoError(t, os.Mkdir(filepath.Join(s.data, "zz"), 0o700))
			require.NoError(t, os.Symlink("/etc", filepath.Join(s.data, "ff00")))
			got := map[string]string{}
			err := s.ForEach(bg, func(r Record) error {
				_, dup := got[r.ID]
				require.False(t, dup, "visited twice")
				got[r.ID] = string(r.Data)
				// fn may call back into the store.
				return s.Delete(bg, r.ID)
			})
			require.NoError(t, err)
			require.Equal(t, want, got)

			stop := errors.New("stop")
			require.NoError(t, s.Save(bg, "one", nil, time.Time{}))
			require.Same(t, stop, s.ForEach(bg, func(Record) error { return stop }))
		})
	}
}

func TestForEachReportsCorruptRecords(t *testing.T) {
	s := openTest(t, nil)
	require.NoError(t, s.Save(bg, "good", []byte("x"), time.Time{}))
	require.NoError(t, s.Save(bg, "bad", []byte("y"), time.Time{}))
	r, _ := s.refOf("bad")
	require.NoError(t, os.WriteFile(r.path(), []byte("garbage"), 0o600))
	var seen []string
	err := s.ForEach(bg, func(r Record) error { seen = append(seen, r.ID); return nil })
	require.ErrorIs(t, err, ErrCorrupt)
	require.Equal(t, []string{"good"}, seen)
	require.NotContains(t, err.Error(), "bad\"")
	_, err = s.Load(bg, "bad")
	require.ErrorIs(t, err, ErrCorrupt)
	require.ErrorIs(t, s.Update(bg, "bad", increment), ErrCorrupt)
	// A corrupt record is never swept, but Delete removes it.
	s.now = func() time.Time { return time.Now().Add(24 * time.Hour) }
	_, err = s.DeleteExpired(bg)
	require.ErrorIs(t, err, ErrCorrupt)
	require.FileExists(t, r.path())
	require.NoError(t, s.Delete(bg, "bad"))
	require.NoFileExists(t, r.path())
}

func TestMisplacedRecordIsCorrupt(t *testing.T) {
	s := openTest(t, nil)
	require.NoError(t, s.Save(bg, "alice", []byte("alice's"), time.Time{}))
	a, _ := s.refOf("alice")
	m, _ := s.refOf("mallory")
	require.NoError(t, os.MkdirAll(m.dirPath(), 0o700))
	b, err := os.ReadFile(a.path())
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(m.path(), b, 0o600))
	_, err = s.Load(bg, "mallory")
	require.ErrorIs(t, err, ErrCorrupt)
}

func TestModes(t *testing.T) {
	checkHygiene(t)
	old := syscall.Umask(0o077 | 0o200) // trims the owner's write bit too
	defer syscall.Umask(old)
	s, err := Open(filepath.Join(t.TempDir(), "s"), &Options{SweepInterval: -1, Layout: "2x2"})
	require.NoError(t, err)
	defer s.Close()
	require.NoError(t, s.Save(bg, "id", []byte("x"), time.Time{}))
	syscall.Umask(0)
	s2, err := Open(filepath.Join(t.TempDir(), "s"), &Options{SweepInterval: -1})
	require.NoError(t, err)
	defer s2.Close()
	require.NoError(t, s2.Save(bg, "id", []byte("x"), time.Time{}))
	for _, st := range []*Store{s, s2} {
		err = filepath.WalkDir(st.root, func(p string, d fs.DirEntry, err error) error {
			require.NoError(t, err)
			fi, err := d.Info()
			require.NoError(t, err)
			want := fs.FileMode(0o600)
			if d.IsDir() {
				want = fs.ModeDir | 0o700
			}
			require.Equal(t, want, fi.Mode(), p)
			return nil
		})
		require.NoError(t, err)
	}
}

func TestOpenLayout(t *testing.T) {
	checkHygiene(t)
	dir := filepath.Join(t.TempDir(), "s")
	s, err := Open(dir, &Options{SweepInterval: -1, Layout: "2x2"})
	require.NoError(t, err)
	require.NoError(t, s.Save(bg, "id", []byte("x"), time.Time{}))
	require.NoError(t, s.Close())

	// The recorded layout wins over the default...
	s, err = Open(dir, &Options{SweepInterval: -1})
	require.NoError(t, err)
	require.Equal(t, "2x2", s.Layout())
	_, err = s.Load(bg, "id")
	require.NoError(t, err)
	require.NoError(t, s.Close())
	// ...and an explicit conflicting one is an error.
	_, err = Open(dir, &Options{Layout: "1x2"})
	require.ErrorIs(t, err, ErrLayout)

	for _, bad := range []string{"x", "0x2", "3x2", "1x0", "1x5", "2", "flatter"} {
		_, err := Open(t.TempDir(), &Options{Layout: bad})
		require.ErrorIs(t, err, ErrLayout, bad)
	}
	s, err = Open(t.TempDir(), nil)
	require.NoError(t, err)
	require.Equal(t, DefaultLayout, s.Layout())
	require.NoError(t, s.Close())
}

func TestOpenRefusesForeignDirectory(t *testing.T) {
	checkHygiene(t)
	dir := t.TempDir()
	require.NoError(t, os.WriteFile(filepath.Join(dir, "important.txt"), []byte("keep"), 0o600))
	_, err := Open(dir, nil)
	require.ErrorIs(t, err, ErrNotStore)
	ents, _ := os.ReadDir(dir)
	require.Len(t, ents, 1, "a refused Open must not write")

	bad := t.TempDir()
	require.NoError(t, os.WriteFile(filepath.Join(bad, markerName), []byte(`{"format":"other"}`), 0o600))
	_, err = Open(bad, nil)
	require.ErrorIs(t, err, ErrNotStore)
}

func TestOpenRefusesUnsafeRoot(t *testing.T) {
	checkHygiene(t)
	base := t.TempDir()
	ww := filepath.Join(base, "ww")
	require.NoError(t, os.Mkdir(ww, 0o700))
	require.NoError(t, os.Chmod(ww, 0o777))
	sticky := filepath.Join(base, "sticky")
	require.NoError(t, os.Mkdir(sticky, 0o700))
	require.NoError(t, os.Chmod(sticky, 0o1733|fs.ModeSticky))
	real := filepath.Join(base, "real")
	require.NoError(t, os.Mkdir(real, 0o700))
	link := filepath.Join(base, "link")
	require.NoError(t, os.Symlink(real, link))
	file := filepath.Join(base, "file")
	require.NoError(t, os.WriteFile(file, nil, 0o600))
	for _, dir := range []string{ww, sticky, link, file} {
		_, err := Open(dir, nil)
		require.ErrorIs(t, err, ErrUnsafeRoot, dir)
	}
	ents, _ := os.ReadDir(real)
	require.Empty(t, ents, "nothing written through the symlink")
}

func TestOpenConcurrentCreate(t *testing.T) {
	checkHygiene(t)
	dir := filepath.Join(t.TempDir(), "s")
	var wg sync.WaitGroup
	stores := make([]*Store, 8)
	errs := make([]error, 8)
	for i := range stores {
		wg.Go(func() { stores[i], errs[i] = Open(dir, &Options{SweepInterval: -1}) })
	}
	wg.Wait()
	for i, s := range stores {
		require.NoError(t, errs[i])
		require.NoError(t, s.Close())
	}
	ents, err := os.ReadDir(dir)
	require.NoError(t, err)
	var names []string
	for _, e := range ents {
		names = append(names, e.Name())
	}
	require.ElementsMatch(t, []string{markerName, dataDir, locksDir, tableName}, names)
}
