package filestore

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"runtime"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// TestForEachCallsFnOneAtATime: ForEach reads on several goroutines, but
// fn runs on the caller's, never two calls at once, and sees each live
// record once.
func TestForEachCallsFnOneAtATime(t *testing.T) {
	s := openTest(t, &Options{SweepInterval: -1, NoSync: true, Layout: "1x2"})
	const n = 2000
	for i := range n {
		require.NoError(t, s.Save(bg, fmt.Sprintf("session-%d", i), []byte(fmt.Sprint(i)), time.Time{}))
	}
	var inFn atomic.Int32
	seen := map[string]bool{} // unguarded: the race detector catches calls from two goroutines
	require.NoError(t, s.ForEach(bg, func(r Record) error {
		require.Equal(t, int32(1), inFn.Add(1), "two calls of fn at once")
		defer inFn.Add(-1)
		require.False(t, seen[r.ID], "visited twice")
		seen[r.ID] = true
		runtime.Gosched() // give a reader the chance to call fn, were it to
		return nil
	}))
	require.Equal(t, n, len(seen))
}

// TestForEachReadsAheadBoundedly: however slowly fn takes records, the
// readers open at most the batches ForEach may hold ahead of it.
func TestForEachReadsAheadBoundedly(t *testing.T) {
	const n = 5000
	s, ffs := faultStore(t, "1x2", n)
	scanned, k := 0, 0
	opened := func() int { // record files opened so far
		ffs.mu.Lock()
		defer ffs.mu.Unlock()
		for _, c := range ffs.calls[scanned:] {
			if c.op == "open" && isRecordName(filepath.Base(c.path)) {
				k++
			}
		}
		scanned = len(ffs.calls)
		return k
	}
	ahead := (2*s.readers() + 1) * readBatchRecords
	ffs.arm(0, false, 0)
	defer ffs.disarm()
	calls, most := 0, 0
	require.NoError(t, s.ForEach(bg, func(Record) error {
		calls++
		// Let the readers run ahead as far as they can.
		for range 20 {
			runtime.Gosched()
		}
		k := opened()
		most = max(most, k-calls)
		require.LessOrEqual(t, k, calls+ahead, "read %d records ahead of fn", k-calls)
		return nil
	}))
	require.Equal(t, n, calls)
	t.Logf("read at most %d records ahead of fn (bound %d)", most, ahead)
}

// TestForEachStopsItsReaders: when fn fails, or ctx ends, ForEach returns
// with that error, and only once its readers have stopped: the store makes
// no filesystem call after it returns, and no goroutine of it is left.
func TestForEachStopsItsReaders(t *testing.T) {
	s, ffs := faultStore(t, "2x2", 3000)
	fsCalls := func() int { // calls the store made on the filesystem so far
		ffs.mu.Lock()
		defer ffs.mu.Unlock()
		return len(ffs.calls)
	}
	before := runtime.NumGoroutine()
	settled := func() {
		t.Helper()
		for i := 0; runtime.NumGoroutine() > before; i++ {
			if i == 1000 {
				buf := make([]byte, 1<<16)
				t.Fatalf("%d goroutines left after ForEach, %d before:\n%s", runtime.NumGoroutine(), before, buf[:runtime.Stack(buf, true)])
			}
			time.Sleep(time.Millisecond)
		}
	}
	ffs.arm(0, false, 0)
	defer ffs.disarm()

	stop := errors.New("stop")
	calls := 0
	err := s.ForEach(bg, func(Record) error { calls++; return stop })
	atReturn := fsCalls()
	require.Same(t, stop, err)
	require.Equal(t, 1, calls, "fn was called after it failed")
	settled()
	require.Equal(t, atReturn, fsCalls(), "the filesystem was used after ForEach returned")

	ctx, cancel := context.WithCancel(bg)
	calls = 0
	err = s.ForEach(ctx, func(Record) error {
		calls++
		if calls == 100 {
			cancel()
		}
		return nil
	})
	atReturn = fsCalls()
	require.ErrorIs(t, err, context.Canceled)
	require.Less(t, calls, 3000)
	settled()
	require.Equal(t, atReturn, fsCalls(), "the filesystem was used after ForEach returned")
}

// TestForEachWalkErrorStopsIt: when the filesystem fails under the walk,
// ForEach returns the failure, wrapped, and fn sees no record after it.
func TestForEachWalkErrorStopsIt(t *testing.T) {
	s, ffs := faultStore(t, "1x2", 2000)
	// From the 300th call on, every call fails: record opens, which
	// ForEach skips and reports, and shard directory opens, which end
	// the walk.
	ffs.arm(300, true, syscall.EIO)
	defer ffs.disarm()
	calls := 0
	err := s.ForEach(bg, func(Record) error { calls++; return nil })
	require.ErrorIs(t, err, syscall.EIO)
	require.True(t, strings.HasPrefix(err.Error(), "filestore: foreach"), "%v", err)
	require.Less(t, calls, 2000)
}

// faultStore opens a store in layout over a faultFS, not armed, and saves
// n sessions in it.
func faultStore(t *testing.T, layout string, n int) (*Store, *faultFS) {
	t.Helper()
	ffs := &faultFS{inner: osFS{}}
	s, err := open(filepath.Join(t.TempDir(), "store"), &Options{SweepInterval: -1, NoSync: true, Layout: layout}, ffs)
	require.NoError(t, err)
	t.Cleanup(func() { _ = s.Close() })
	for i := range n {
		require.NoError(t, s.Save(bg, fmt.Sprintf("session-%d", i), []byte("x"), time.Time{}))
	}
	return s, ffs
}
