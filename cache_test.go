package filestore

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// openCached opens a store with a read cache of n bytes in a fresh
// directory, or in dir if it is not empty.
func openCached(t *testing.T, dir string, n int64) *Store {
	t.Helper()
	if dir == "" {
		return openTest(t, &Options{SweepInterval: -1, CacheBytes: n})
	}
	s, err := Open(dir, &Options{SweepInterval: -1, CacheBytes: n})
	require.NoError(t, err)
	t.Cleanup(func() { _ = s.Close() })
	return s
}

// removeBehind removes id's record file without the store knowing, as no
// writer of any filestore process would: a Load that still returns the
// record answered from the cache.
func removeBehind(t *testing.T, s *Store, id string) {
	t.Helper()
	r, err := s.refOf(id)
	require.NoError(t, err)
	require.NoError(t, os.Remove(r.path()))
}

// TestCacheServesHits: a second Load is answered from memory (it still
// returns the record after its file is removed behind the store's back),
// with data the caller owns.
func TestCacheServesHits(t *testing.T) {
	s := openCached(t, "", 1<<20)
	require.NotNil(t, s.cache, "the cache is on here")
	exp := time.Now().Add(time.Hour)
	require.NoError(t, s.Save(bg, "id", []byte("hello"), exp))
	first, err := s.Load(bg, "id") // a miss: reads and caches
	require.NoError(t, err)
	first.Data[0] = 'J' // the caller's copy
	removeBehind(t, s, "id")
	rec, err := s.Load(bg, "id")
	require.NoError(t, err, "a cached record was not served")
	require.Equal(t, "hello", string(rec.Data))
	require.True(t, rec.Expiry.Equal(exp))
	rec.Data[0] = 'Y'
	again, err := s.Load(bg, "id")
	require.NoError(t, err)
	require.Equal(t, "hello", string(again.Data), "a caller's change reached the cache")
}

// TestCacheSeesOtherStores: another Store on the directory, as another
// process would, replaces and deletes a cached record; the next Load sees
// each change at once.
func TestCacheSeesOtherStores(t *testing.T) {
	s := openCached(t, "", 1<<20)
	other, err := Open(s.Dir(), &Options{SweepInterval: -1})
	require.NoError(t, err)
	defer other.Close()
	require.NoError(t, other.Save(bg, "id", []byte("v1"), time.Time{}))
	requireData(t, s, "id", "v1")
	requireData(t, s, "id", "v1") // cached now
	require.NoError(t, other.Save(bg, "id", []byte("v2"), time.Time{}))
	requireData(t, s, "id", "v2")
	require.NoError(t, other.Update(bg, "id", func(cur *Record) (*Record, error) {
		cur.Data = []byte("v3")
		return cur, nil
	}))
	requireData(t, s, "id", "v3")
	require.NoError(t, other.Delete(bg, "id"))
	_, err = s.Load(bg, "id")
	require.ErrorIs(t, err, ErrNotFound)

	require.NoError(t, other.Save(bg, "old", []byte("x"), time.Now().Add(-time.Second)))
	require.NoError(t, other.Save(bg, "id", []byte("v4"), time.Time{}))
	requireData(t, s, "id", "v4")
	n, err := other.DeleteExpired(bg)
	require.NoError(t, err)
	require.Equal(t, 1, n)
	requireData(t, s, "id", "v4")
}

func requireData(t *testing.T, s *Store, id, want string) {
	t.Helper()
	rec, err := s.Load(bg, id)
	require.NoError(t, err)
	require.Equal(t, want, string(rec.Data))
}

// TestCacheExpiry: a cached record that expires is not served.
func TestCacheExpiry(t *testing.T) {
	s := openCached(t, "", 1<<20)
	now := time.Now()
	s.now = func() time.Time { return now }
	require.NoError(t, s.Save(bg, "id", []byte("x"), now.Add(time.Minute)))
	requireData(t, s, "id", "x")
	removeBehind(t, s, "id")
	requireData(t, s, "id", "x") // served from the cache
	now = now.Add(time.Minute)
	_, err := s.Load(bg, "id")
	require.ErrorIs(t, err, ErrNotFound, "an expired cached record was served")
}

// TestCacheBound: the cache never holds more than CacheBytes, evicts the
// least recently used record first, and keeps a record in use.
func TestCacheBound(t *testing.T) {
	const limit = 64 << 10
	s := openCached(t, "", limit)
	data := bytes.Repeat([]byte("d"), 1024)
	for i := range 500 {
		require.NoError(t, s.Save(bg, fmt.Sprintf("id-%d", i), data, time.Time{}))
	}
	for i := range 500 {
		_, err := s.Load(bg, fmt.Sprintf("id-%d", i))
		require.NoError(t, err)
		// id-0 is loaded again after every other record: it stays recent.
		_, err = s.Load(bg, "id-0")
		require.NoError(t, err)
		require.LessOrEqual(t, s.cache.bytes(), int64(limit))
	}
	require.Greater(t, s.cache.bytes(), int64(limit/2), "the cache holds what it may")
	removeBehind(t, s, "id-0")
	requireData(t, s, "id-0", string(data)) // still cached
	removeBehind(t, s, "id-1")
	_, err := s.Load(bg, "id-1")
	require.ErrorIs(t, err, ErrNotFound, "the least recently used record was kept")
}

// TestCacheOffWithoutTable: where the counter table cannot be mapped, the
// store logs why once and works without the cache; so it does when the
// table file is not what it should be.
func TestCacheOffWithoutTable(t *testing.T) {
	var logs syncBuffer
	testOpenHook = func(s *Store) {
		s.mapTable = func(string, int) ([]byte, func([]byte) error, error) {
			return nil, nil, syscall.ENOMEM
		}
	}
	t.Cleanup(func() { testOpenHook = nil })
	s, err := Open(filepath.Join(t.TempDir(), "s"), &Options{SweepInterval: -1, CacheBytes: 1 << 20, Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	require.NoError(t, err)
	defer s.Close()
	testOpenHook = nil
	require.Nil(t, s.cache)
	require.Equal(t, 1, strings.Count(logs.String(), "read cache off"), logs.String())
	require.NoError(t, s.Save(bg, "id", []byte("x"), time.Time{}))
	requireData(t, s, "id", "x")
	removeBehind(t, s, "id")
	_, err = s.Load(bg, "id")
	require.ErrorIs(t, err, ErrNotFound, "served from a cache that should be off")

	// A table file cut short (by hand) is refused, not mapped: a counter
	// past its end would kill the process with SIGBUS.
	dir := filepath.Join(t.TempDir(), "short")
	first, err := Open(dir, &Options{SweepInterval: -1})
	require.NoError(t, err)
	require.NoError(t, first.Close())
	require.NoError(t, os.Truncate(filepath.Join(dir, tableName), 4096))
	logs = syncBuffer{}
	short, err := Open(dir, &Options{SweepInterval: -1, CacheBytes: 1 << 20, Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	require.NoError(t, err)
	defer short.Close()
	require.Nil(t, short.cache)
	require.Contains(t, logs.String(), "read cache off")
	require.NoError(t, short.Save(bg, "id", []byte("y"), time.Time{}))
	requireData(t, short, "id", "y")
}

// TestCacheTableFaults: an I/O error creating the table (injected into
// each call of a creating Open in turn) leaves a store that works, with
// the cache off, and no partial table: a later Open makes a whole one.
func TestCacheTableFaults(t *testing.T) {
	for k := 1; ; k++ {
		require.Less(t, k, 200)
		dir := filepath.Join(t.TempDir(), "s")
		ffs := &faultFS{inner: osFS{}}
		ffs.arm(k, false, syscall.EIO)
		s, err := open(dir, &Options{SweepInterval: -1, CacheBytes: 1 << 20}, ffs)
		calls := ffs.disarm()
		failed := false
		for _, c := range calls {
			failed = failed || c.failed
		}
		if err != nil {
			require.ErrorIs(t, err, syscall.EIO)
			continue
		}
		require.NoError(t, s.Save(bg, "id", []byte("x"), time.Time{}))
		requireData(t, s, "id", "x")
		require.NoError(t, s.Close())
		again := openCached(t, dir, 1<<20)
		require.NotNil(t, again.cache, "fail call %d: no table made afterwards", k)
		requireData(t, again, "id", "x")
		require.NoError(t, again.Close())
		if !failed {
			return // every call of a creating Open has had its fault
		}
	}
}

// TestCacheNeverStaleAcrossProcesses: a writer process saves and deletes
// a few hot sessions while this process, with the cache on, loads them
// all between writes. After each acknowledged write, this process's next
// Load sees it: 0 stale reads in 10,000 rounds. Some rounds the writer
// kills itself with SIGKILL at a step of its write (after the rename,
// before the second counter bump among them), or this process kills it at
// a random moment; a cached Load must then agree with an uncached one.
func TestCacheNeverStaleAcrossProcesses(t *testing.T) {
	const ids = 8
	if dir, _, ok := worker(t); ok {
		cacheWriter(dir, ids)
		return
	}
	rounds := 10_000
	if testing.Short() {
		rounds = 1_000
	}
	s := openCached(t, "", 1<<20)
	requireRangeLocks(t, s)
	plain, err := Open(s.Dir(), &Options{SweepInterval: -1}) // uncached: the oracle
	require.NoError(t, err)
	defer plain.Close()

	type writer struct {
		cmd *exec.Cmd
		in  *bufio.Writer
		out *bufio.Scanner
	}
	start := func() writer {
		cmd := workerCommand(t, s.Dir(), "")
		in, err := cmd.StdinPipe()
		require.NoError(t, err)
		out, err := cmd.StdoutPipe()
		require.NoError(t, err)
		require.NoError(t, cmd.Start())
		return writer{cmd, bufio.NewWriter(in), bufio.NewScanner(out)}
	}
	w := start()
	t.Cleanup(func() { _ = w.cmd.Process.Kill() })
	rng := rand.New(rand.NewPCG(1, 2))
	loadAll := func() {
		for i := range ids {
			_, err := s.Load(bg, cacheID(i))
			if err != nil && !errors.Is(err, ErrNotFound) {
				require.NoError(t, err)
			}
		}
	}
	// Loads in the background, racing every write, cache what they can.
	stop := make(chan struct{})
	loaderDone := make(chan struct{})
	go func() {
		defer close(loaderDone)
		for {
			select {
			case <-stop:
				return
			default:
			}
			for i := range ids {
				_, _ = s.Load(bg, cacheID(i)) // errors deliberately ignored: only the main loop checks
			}
		}
	}()
	defer func() { close(stop); <-loaderDone }()
	stale, crashes := 0, 0
	points := []string{hookTempCreated, hookWritten, hookRenamed, hookDirSynced, hookUnlinked}
	for round := range rounds {
		loadAll() // every hot session cached, at its current version
		id := rng.IntN(ids)
		del := rng.IntN(4) == 0
		die := "-"
		if round%97 == 96 {
			die = points[rng.IntN(len(points))]
		}
		shoot := round%211 == 210 // this process kills the writer at a random moment
		_, err := fmt.Fprintf(w.in, "%d %d %t %s\n", round, id, del, die)
		require.NoError(t, err)
		require.NoError(t, w.in.Flush())
		if shoot {
			time.Sleep(time.Duration(rng.IntN(200)) * time.Microsecond)
			_ = w.cmd.Process.Signal(syscall.SIGKILL) // error deliberately ignored: it may have exited
		}
		acked := w.out.Scan()
		if acked {
			want := "-"
			if !del {
				want = strconv.Itoa(round)
			}
			require.Equal(t, fmt.Sprintf("ack %d", round), w.out.Text())
			if got := cachedValue(t, s, cacheID(id)); got != want {
				stale++
				t.Errorf("round %d: acknowledged %s, then read %s", round, want, got)
			}
		}
		if acked && !shoot {
			continue
		}
		// The writer died, during the write or after it: the write may or
		// may not have happened. Whatever is on disk, a cached Load must
		// say the same as an uncached one.
		_ = w.cmd.Process.Kill() // error deliberately ignored: it may be dead already
		_ = w.cmd.Wait()         // error deliberately ignored: it was killed
		crashes++
		for i := range ids {
			require.Equal(t, cachedValue(t, plain, cacheID(i)), cachedValue(t, s, cacheID(i)),
				"round %d: after a crash the cache disagrees with the file", round)
		}
		w = start()
	}
	_ = w.in.Flush()
	_ = w.cmd.Process.Kill()
	_ = w.cmd.Wait()
	require.Zero(t, stale)
	require.Positive(t, crashes)
	t.Logf("%d rounds, %d writer crashes, 0 stale reads", rounds, crashes)
}

func cacheID(i int) string { return fmt.Sprintf("hot-%d", i) }

// cachedValue is id's data through s, or "-" if it has none.
func cachedValue(t *testing.T, s *Store, id string) string {
	t.Helper()
	rec, err := s.Load(bg, id)
	if errors.Is(err, ErrNotFound) {
		return "-"
	}
	require.NoError(t, err)
	return string(rec.Data)
}

// cacheWriter is the writer of TestCacheNeverStaleAcrossProcesses: it
// reads "round id delete die" lines, makes each write, and acknowledges
// it; with die set to a hook point it kills itself there.
func cacheWriter(dir string, ids int) {
	s := workerStore(dir, &Options{SweepInterval: -1, NoSync: true})
	in := bufio.NewScanner(os.Stdin)
	for in.Scan() {
		var (
			round, id int
			del       bool
			die       string
		)
		if _, err := fmt.Sscan(in.Text(), &round, &id, &del, &die); err != nil {
			fail("bad line %q: %v", in.Text(), err)
		}
		s.hook = func(point string) {
			if point == hookCounted && die != "-" {
				// Widen the window between the first counter bump and the
				// rename, for the other process's loads to fall into.
				time.Sleep(2 * time.Millisecond)
			}
			if point == die {
				_ = syscall.Kill(os.Getpid(), syscall.SIGKILL)
				time.Sleep(time.Hour) // the signal is on its way
			}
		}
		var err error
		if del {
			err = s.Delete(bg, cacheID(id))
		} else {
			err = s.Save(bg, cacheID(id), []byte(strconv.Itoa(round)), time.Time{})
		}
		if err != nil {
			fail("write: %v", err)
		}
		fmt.Printf("ack %d\n", round)
	}
}
