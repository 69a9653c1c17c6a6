package filestore

import (
	"bytes"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// Hygiene checks (issue 5, figure 9): a test that opens stores must leave
// no descriptor open and no goroutine running once they are closed, and a
// successful operation must leave no temp file behind.
//
// Usage, as the first line of a test that is not parallel:
//
//	checkHygiene(t)
//	s := openTest(t, nil) // closed by its own Cleanup, which runs first
//	...
//	requireNoTempFiles(t, s.Dir())
//
// The checks compare sets, not counts: a descriptor or goroutine that was
// there before may go away without hiding one this test leaked. They see
// the whole process, so they are meaningless in a test that runs in
// parallel with others (t.Parallel); sequential top-level tests never
// overlap parallel ones.

// settleTimeout bounds how long a hygiene check waits for descriptors and
// goroutines to go away: a goroutine that releases a lock after its waiter
// gave up, for example, finishes shortly after Close returns.
const settleTimeout = 10 * time.Second

// hygiene is a snapshot of the process's descriptors and goroutines.
type hygiene struct {
	fds        map[int]string // descriptor -> what it refers to
	goroutines map[int]bool   // goroutine ids
}

// checkHygiene snapshots the open descriptors and the live goroutines, and
// registers a Cleanup that fails t if, after every Cleanup registered later
// (such as the Close of a store opened by openTest) has run, a descriptor
// or goroutine that was not in the snapshot is still there. It returns the
// same check as a func, for tests that want to check at a point of their
// choosing as well; the check may run any number of times.
//
// Only a test's first call takes a snapshot; later calls return the first
// check. A store keeps lock files open between operations until it is
// closed, so a second snapshot taken while an earlier store is open would
// report that store's lock files, opened later, as leaked by the second.
// The first check runs last, after every store of the test is closed, and
// sees everything a later one would.
func checkHygiene(t testing.TB) func() {
	t.Helper()
	if check, ok := hygieneChecks.Load(t); ok {
		return check.(func())
	}
	warmUp()
	base := snapshotHygiene(t)
	check := func() {
		t.Helper()
		base.requireSettled(t)
	}
	hygieneChecks.Store(t, check)
	t.Cleanup(func() {
		check()
		hygieneChecks.Delete(t)
	})
	return check
}

// hygieneChecks maps a test to its hygiene check.
var hygieneChecks sync.Map

// warmUp makes the process allocate what it allocates once and keeps, so
// that it is in the baseline rather than reported as a leak: the runtime's
// netpoller (an epoll descriptor and an eventfd, made on first use of a
// pollable file) and the shared zstd coders.
func warmUp() {
	if r, w, err := os.Pipe(); err == nil {
		_ = r.Close()
		_ = w.Close()
	}
	_ = zstdEncoder()
	_ = zstdDecoder()
}

func snapshotHygiene(t testing.TB) hygiene {
	t.Helper()
	return hygiene{fds: openFDs(t), goroutines: goroutineIDs()}
}

// requireSettled waits until every descriptor and goroutine not in h is
// gone, and fails t naming those that are not.
func (h hygiene) requireSettled(t testing.TB) {
	t.Helper()
	var fds []string
	var gs []string
	deadline := time.Now().Add(settleTimeout)
	for {
		fds = h.newFDs(openFDs(t))
		gs = h.newGoroutines()
		if (len(fds) == 0 && len(gs) == 0) || time.Now().After(deadline) {
			break
		}
		time.Sleep(5 * time.Millisecond)
	}
	require.Empty(t, fds, "descriptors leaked")
	require.Empty(t, gs, "goroutines leaked")
}

func (h hygiene) newFDs(now map[int]string) []string {
	var out []string
	for fd, target := range now {
		if old, ok := h.fds[fd]; !ok || old != target {
			out = append(out, fmt.Sprintf("fd %d -> %s", fd, target))
		}
	}
	slices.Sort(out)
	return out
}

// newGoroutines returns the stacks of the goroutines not in h.
func (h hygiene) newGoroutines() []string {
	var out []string
	for _, g := range goroutineStacks() {
		if id, ok := goroutineID(g); ok && !h.goroutines[id] {
			out = append(out, g)
		}
	}
	return out
}

// openFDs returns this process's open descriptors and what each refers to,
// read from /proc/self/fd. Where there is no /proc it skips t.
func openFDs(t testing.TB) map[int]string {
	t.Helper()
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Skipf("cannot list open descriptors: %v", err)
	}
	fds := make(map[int]string, len(ents))
	for _, e := range ents {
		fd, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		// The descriptor ReadDir used is listed but closed by now, so its
		// link no longer resolves; skip it and any other that vanished.
		target, err := os.Readlink(filepath.Join("/proc/self/fd", e.Name()))
		if err != nil {
			continue
		}
		fds[fd] = target
	}
	return fds
}

func goroutineStacks() []string {
	buf := make([]byte, 1<<16)
	for {
		n := runtime.Stack(buf, true)
		if n < len(buf) {
			buf = buf[:n]
			break
		}
		buf = make([]byte, 2*len(buf))
	}
	var out []string
	for g := range bytes.SplitSeq(buf, []byte("\n\n")) {
		if len(g) > 0 {
			out = append(out, string(g))
		}
	}
	return out
}

func goroutineIDs() map[int]bool {
	ids := make(map[int]bool)
	for _, g := range goroutineStacks() {
		if id, ok := goroutineID(g); ok {
			ids[id] = true
		}
	}
	return ids
}

// goroutineID parses the id from a stack's first line, "goroutine 7 [...]".
func goroutineID(stack string) (int, bool) {
	rest, ok := strings.CutPrefix(stack, "goroutine ")
	if !ok {
		return 0, false
	}
	idStr, _, ok := strings.Cut(rest, " ")
	if !ok {
		return 0, false
	}
	id, err := strconv.Atoi(idStr)
	return id, err == nil
}

// tempFiles lists the temp files (a record write's .tmp-* or a creating
// Open's .filestore-init-*) anywhere under root.
func tempFiles(t testing.TB, root string) []string {
	t.Helper()
	var out []string
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if name := d.Name(); strings.HasPrefix(name, tempPrefix) || strings.HasPrefix(name, initPrefix) {
			out = append(out, p)
		}
		return nil
	})
	require.NoError(t, err)
	return out
}

// requireNoTempFiles fails t if any temp file remains under root.
func requireNoTempFiles(t testing.TB, root string) {
	t.Helper()
	require.Empty(t, tempFiles(t, root), "temp files left behind")
}

// TestHygieneCatchesLeaks checks the checks: an open descriptor, a running
// goroutine and a temp file are each reported, and a closed store leaves
// nothing behind.
func TestHygieneCatchesLeaks(t *testing.T) {
	t.Run("clean", func(t *testing.T) {
		check := checkHygiene(t)
		s, err := Open(filepath.Join(t.TempDir(), "store"), &Options{SweepInterval: time.Millisecond})
		require.NoError(t, err)
		require.NoError(t, s.Save(bg, "a", []byte("1"), time.Time{}))
		require.NoError(t, s.Update(bg, "a", increment))
		_, err = s.DeleteExpired(bg)
		require.NoError(t, err)
		requireNoTempFiles(t, s.Dir())
		require.NoError(t, s.Close())
		check()
	})
	t.Run("leaks", func(t *testing.T) {
		warmUp()
		base := snapshotHygiene(t)
		f, err := os.Open(t.TempDir())
		require.NoError(t, err)
		stop := make(chan struct{})
		go func() { <-stop }()
		require.Len(t, base.newFDs(openFDs(t)), 1)
		require.Len(t, base.newGoroutines(), 1)
		require.NoError(t, f.Close())
		close(stop)
		base.requireSettled(t)

		dir := t.TempDir()
		require.NoError(t, os.WriteFile(filepath.Join(dir, tempPrefix+"x"), nil, 0o600))
		require.Len(t, tempFiles(t, dir), 1)
	})
}
