package filestore

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// Record locks are per record, not per stripe (lock.go): an Update's fn may
// call Save, Delete, Update and Load on any other id, including ids whose
// records share its lock file, in this process and while another process's
// fn does the same.

// hangLimit bounds a wait that only a deadlock would make long. It is a
// guard against hanging the run, not a measure of speed.
const hangLimit = 2 * time.Minute

// finishes runs fn and fails the test if it does not return within
// hangLimit.
func finishes(t *testing.T, what string, fn func() error) {
	t.Helper()
	done := make(chan error, 1)
	go func() { done <- fn() }()
	select {
	case err := <-done:
		require.NoError(t, err, what)
	case <-time.After(hangLimit):
		t.Fatalf("%s: still blocked after %v: deadlock", what, hangLimit)
	}
}

// sameStripe returns n ids whose records share id's stripe lock file.
func sameStripe(t *testing.T, s *Store, id string, n int) []string {
	r, err := s.refOf(id)
	require.NoError(t, err)
	var out []string
	for i := 0; len(out) < n; i++ {
		other := fmt.Sprintf("session-%d", i)
		o, err := s.refOf(other)
		require.NoError(t, err)
		if o.lk.stripe == r.lk.stripe && other != id {
			out = append(out, other)
		}
	}
	return out
}

// requireRangeLocks skips a test of what needs per-record locks across
// processes, which only Linux has (lock.go).
func requireRangeLocks(t *testing.T, s *Store) {
	if !s.locks.ranges {
		t.Skip("no per-record locks across processes on this system")
	}
}

func nestedCount() int {
	if testing.Short() {
		return 200
	}
	return 1000
}

// TestUpdateFnWritesOtherIDs: fn saves 1,000 other ids, some in its own
// record's stripe, and deletes, updates and loads ids of that stripe; the
// Update finishes and everything fn wrote is there.
func TestUpdateFnWritesOtherIDs(t *testing.T) {
	s := openTest(t, nil)
	const outer = "session-a"
	mates := sameStripe(t, s, outer, 3)
	n := nestedCount()
	want := map[string]string{outer: "outer", mates[0]: "nested"}
	for i := range n {
		if id := fmt.Sprintf("session-%d", i); id != mates[0] && id != mates[1] {
			want[id] = "inner"
		}
	}
	finishes(t, "Update whose fn writes other ids", func() error {
		return s.Update(bg, outer, func(*Record) (*Record, error) {
			for i := range n {
				if err := s.Save(bg, fmt.Sprintf("session-%d", i), []byte("inner"), time.Time{}); err != nil {
					return nil, err
				}
			}
			if err := s.Update(bg, mates[0], func(*Record) (*Record, error) {
				return &Record{Data: []byte("nested")}, nil
			}); err != nil {
				return nil, err
			}
			if err := s.Delete(bg, mates[1]); err != nil {
				return nil, err
			}
			if _, err := s.Load(bg, mates[2]); err != nil && !errors.Is(err, ErrNotFound) {
				return nil, err
			}
			return &Record{Data: []byte("outer")}, nil
		})
	})
	got := map[string]string{}
	require.NoError(t, s.ForEach(bg, func(r Record) error {
		got[r.ID] = string(r.Data)
		return nil
	}))
	require.Equal(t, want, got)
}

// TestSameStripeWritersRunTogether: while one goroutine's Update holds a
// record, another goroutine of the same process saves a record of the same
// stripe without waiting for it.
func TestSameStripeWritersRunTogether(t *testing.T) {
	s := openTest(t, nil)
	const id = "held"
	release := holdLock(t, s, id)
	for _, other := range sameStripe(t, s, id, 4) {
		finishes(t, "Save of a record in a held stripe", func() error {
			return s.Save(bg, other, []byte("x"), time.Time{})
		})
	}
	requireExcludedSelf(t, s, id)
	release()
}

// requireExcludedSelf checks that a Save of id by s itself waits (for an
// Update of s that holds it) and gives up when its context ends.
func requireExcludedSelf(t *testing.T, s *Store, id string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(bg, 100*time.Millisecond)
	defer cancel()
	require.ErrorIs(t, s.Save(ctx, id, []byte("late"), time.Time{}), context.DeadlineExceeded)
}

// TestAbandonedLockWait: a Save that gives up waiting for a record another
// store holds leaves nothing wedged. Other records of the same stripe can
// be saved meanwhile, the record itself can be saved once it is released,
// and Close returns.
func TestAbandonedLockWait(t *testing.T) {
	a, b := twoStores(t)
	requireRangeLocks(t, b)
	const id = "contended"
	release := holdLock(t, a, id)
	requireExcluded(t, b, id) // b's wait is abandoned, and still pending
	requireExcluded(t, b, id) // and a second one behind it
	for _, other := range sameStripe(t, b, id, 2) {
		finishes(t, "Save of another record of the stripe", func() error {
			return b.Save(bg, other, []byte("b"), time.Time{})
		})
	}
	release()
	finishes(t, "Save once the record is free", func() error {
		return b.Save(bg, id, []byte("b"), time.Time{})
	})
	rec, err := a.Load(bg, id)
	require.NoError(t, err)
	require.Equal(t, "b", string(rec.Data))
	finishes(t, "Close", b.Close)
}

// TestUpdateFnWritesOtherIDsAcrossProcesses: two processes each run an
// Update whose fn, once both are inside their fns, saves the same 1,000
// other ids, in opposite orders. Each outer record's stripe is written by
// the other process's fn while it holds its own, which deadlocked when a
// record's lock was its stripe's. Both finish, and every id holds one of
// the two writers' values.
func TestUpdateFnWritesOtherIDsAcrossProcesses(t *testing.T) {
	n := nestedCount()
	if dir, arg, ok := worker(t); ok {
		s := workerStore(dir, nil)
		defer s.Close()
		w, _ := strconv.Atoi(arg)
		err := s.Update(bg, fmt.Sprintf("outer-%d", w), func(*Record) (*Record, error) {
			if err := os.WriteFile(filepath.Join(dir, fmt.Sprintf("in-%d", w)), nil, 0o600); err != nil {
				return nil, err
			}
			waitForFile(filepath.Join(dir, fmt.Sprintf("in-%d", 1-w)))
			for k := range n {
				i := k
				if w == 1 {
					i = n - 1 - k
				}
				if err := s.Save(bg, fmt.Sprintf("inner-%d", i), []byte(arg), time.Time{}); err != nil {
					return nil, err
				}
			}
			return &Record{Data: []byte(arg)}, nil
		})
		if err != nil {
			fail("update: %v", err)
		}
		fmt.Println("ack done")
		return
	}

	s := openTest(t, nil)
	requireRangeLocks(t, s)
	dir := s.Dir()
	var cmds []*exec.Cmd
	results := make(chan []string, 2)
	for w := range 2 {
		cmd, out := startWorker(t, dir, strconv.Itoa(w))
		cmds = append(cmds, cmd)
		go func() { results <- acks(out) }()
	}
	t.Cleanup(func() {
		for _, c := range cmds {
			_ = c.Process.Kill() // error deliberately ignored: it may have exited
		}
	})
	for range 2 {
		select {
		case a := <-results:
			require.Equal(t, []string{"done"}, a)
		case <-time.After(hangLimit):
			t.Fatalf("workers still blocked after %v: deadlock", hangLimit)
		}
	}
	for _, c := range cmds {
		require.NoError(t, c.Wait())
	}
	for w := range 2 {
		rec, err := s.Load(bg, fmt.Sprintf("outer-%d", w))
		require.NoError(t, err)
		require.Equal(t, strconv.Itoa(w), string(rec.Data))
	}
	for i := range n {
		rec, err := s.Load(bg, fmt.Sprintf("inner-%d", i))
		require.NoError(t, err)
		require.Contains(t, []string{"0", "1"}, string(rec.Data))
	}
}
