package filestore

import (
	"bufio"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gofrs/flock"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// Guarantees that a mutation review found unprotected: each test here
// fails when the engine is changed to break its guarantee, which
// RELIABILITY.md's mutation table records, change by change.
//
// They work through the public API, the on-disk format (file names are the
// SHA-256 of the id, temp files are .tmp-<hash>-<random>, a record's stripe
// in a store created now is the first byte of that hash, locks/sweep.lock
// is the sweep lock) and real processes, so that they keep working when
// the engine's locks and its OS layer are rebuilt. They use no unexported
// name of the engine, only test helpers: openTest, checkHygiene, increment
// and readCounter (filestore_test.go); worker, its environment variables,
// workerStore, startWorker and fail (process_test.go).
//
// A lock another store holds is held by a worker process (holdInWorker):
// flock(2) excludes open file descriptions, so two Stores of one process
// exclude each other as two processes do, but a worker is what a deployment
// runs.

// waitLimit bounds every wait in a test for something that should happen
// promptly: a lock released, a worker started or exited. When it passes, the
// test fails with a message instead of hanging until go test's -timeout.
// Nothing here takes more than a few milliseconds when the code is right,
// even under -race on a loaded machine.
const waitLimit = 30 * time.Second

// stillBlocked is how long an operation that must wait for a lock held
// elsewhere is given before the test concludes that it is waiting, as
// cmd/go's lockedfile tests call it "probably still blocked". A wrong
// implementation returns in microseconds.
const stillBlocked = 150 * time.Millisecond

// bounded returns a context that ends after waitLimit, or when the test
// does: for an operation that waits for a lock and must not wait forever
// if a bug leaves that lock held.
func bounded(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
	t.Cleanup(cancel)
	return ctx
}

// await receives from ch, failing t if nothing comes within waitLimit.
func await[T any](t testing.TB, ch <-chan T, what string) T {
	t.Helper()
	select {
	case v := <-ch:
		return v
	case <-time.After(waitLimit):
		t.Fatalf("%s: still waiting after %v", what, waitLimit)
		panic("unreachable")
	}
}

// closeInCleanup closes s when the test ends, waiting a bounded time:
// Close waits for every lock s holds, and a test that failed because a lock
// was never released must still end, with its failure reported. Close has
// nothing to wait for once the test's own goroutines are done, so the
// bound is short, and shorter still after a failure, which is the likely
// reason for a lock to be stuck.
func closeInCleanup(t testing.TB, s *Store) {
	t.Cleanup(func() {
		limit := waitLimit / 3
		if t.Failed() {
			limit = 2 * time.Second
		}
		done := make(chan error, 1)
		go func() { done <- s.Close() }()
		select {
		case <-done:
		case <-time.After(limit):
			t.Errorf("Close still blocked after %v: a lock of the store was never released", limit)
		}
	})
}

// openAgain opens a second Store on s's directory, closed when the test
// ends.
func openAgain(t testing.TB, s *Store, opts *Options) *Store {
	t.Helper()
	if opts == nil {
		opts = &Options{SweepInterval: -1}
	}
	o, err := Open(s.Dir(), opts)
	require.NoError(t, err)
	closeInCleanup(t, o)
	return o
}

// recordFile is where a store with the given layout keeps id's record:
// data/, a directory per 2 hex digits of the hash for "1x2", and the hash.
func recordFile(root, layout, id string) string {
	h := hashHex(id)
	switch layout {
	case "flat":
		return filepath.Join(root, "data", h)
	case "1x2":
		return filepath.Join(root, "data", h[:2], h)
	}
	panic("recordFile: layout " + layout)
}

func hashHex(id string) string {
	sum := sha256.Sum256([]byte(id))
	return hex.EncodeToString(sum[:])
}

// stripeOfID is id's lock stripe in a store created now: the first byte of
// its hash (RELIABILITY.md, "Stripes follow shards").
func stripeOfID(id string) int { return int(sha256.Sum256([]byte(id))[0]) }

// requireWaits runs op with a context that ends after stillBlocked and
// requires that op waited for it: that it returned the context's error.
func requireWaits(t *testing.T, what string, op func(ctx context.Context) error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), stillBlocked)
	defer cancel()
	err := op(ctx)
	require.ErrorIs(t, err, context.DeadlineExceeded, "%s did not wait for a lock held elsewhere", what)
}

// lockHolder is a worker process that holds one record's lock inside an
// Update until it is released.
type lockHolder struct {
	stdin io.WriteCloser
	lines chan string   // the worker's ack lines; closed at its exit
	done  chan struct{} // closed once the worker has exited
	err   error         // cmd.Wait's result, set before done is closed
}

// holdInWorker starts a worker process that opens the store in dir and
// calls Update on id; the Update's fn reports that it holds the lock and
// waits for release. With mode "keep" fn returns an error, so the record is
// left as it was; with "refresh" it writes a live record holding
// "refreshed". The test function must start with runLockHolder.
//
// If the test fails first, its Cleanup closes the worker's stdin, which
// releases the lock, and kills the worker if it does not exit.
func holdInWorker(t *testing.T, dir, id, mode string) *lockHolder {
	t.Helper()
	cmd := workerCommand(t, dir, mode+" "+id)
	stdin, err := cmd.StdinPipe()
	require.NoError(t, err)
	out, err := cmd.StdoutPipe()
	require.NoError(t, err)
	require.NoError(t, cmd.Start())
	h := &lockHolder{stdin: stdin, lines: make(chan string, 8), done: make(chan struct{})}
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			if v, ok := strings.CutPrefix(sc.Text(), "ack "); ok {
				h.lines <- v
			}
		}
		close(h.lines)
		h.err = cmd.Wait() // after the last read, as os/exec requires
		close(h.done)
	}()
	t.Cleanup(func() {
		_ = stdin.Close() // error deliberately ignored: it only lets the worker go
		select {
		case <-h.done:
		case <-time.After(waitLimit):
			_ = cmd.Process.Kill() // error deliberately ignored: it may have exited just now
			<-h.done
		}
	})
	require.Equal(t, "held", h.next(t), "the lock holder's first report")
	return h
}

// next returns the worker's next ack line, or "" when it has exited.
func (h *lockHolder) next(t *testing.T) string {
	t.Helper()
	select {
	case l := <-h.lines:
		return l
	case <-time.After(waitLimit):
		t.Fatalf("lock holder: no report after %v", waitLimit)
		return ""
	}
}

// release lets the worker's Update finish and requires that it did.
func (h *lockHolder) release(t *testing.T) {
	t.Helper()
	_, err := io.WriteString(h.stdin, "release\n")
	require.NoError(t, err)
	require.Equal(t, "done", h.next(t), "the lock holder's Update")
	await(t, h.done, "the lock holder's exit")
	require.NoError(t, h.err, "the lock holder")
}

// errKeep is the lock holder's fn's error in mode "keep": change nothing.
var errKeep = errors.New("keep the record as it is")

// runLockHolder runs the worker side of holdInWorker, if this process is
// one for t, and reports whether it was.
func runLockHolder(t *testing.T) bool {
	dir, arg, ok := worker(t)
	if !ok {
		return false
	}
	mode, id, _ := strings.Cut(arg, " ")
	in := bufio.NewReader(os.Stdin)
	if mode == "old-refresh" {
		// A process of an earlier release: it takes the record's stripe
		// lock file exclusively and writes the record under it.
		release, err := flockFile(context.Background(), filepath.Join(dir, "locks", fmt.Sprintf("stripe-%04x.lock", stripeOfID(id))), false)
		if err != nil {
			fail("lock: %v", err)
		}
		fmt.Println("ack held")
		_, _ = in.ReadString('\n') // error deliberately ignored: a line or EOF lets go
		path := recordFile(dir, "flat", id)
		tmp := path + ".old-release-tmp"
		b := encodeRecord(id, []byte("refreshed"), time.Now().Add(time.Hour), 1, false)
		if err := os.WriteFile(tmp, b, 0o600); err != nil {
			fail("write: %v", err)
		}
		if err := os.Rename(tmp, path); err != nil {
			fail("rename: %v", err)
		}
		if err := release(); err != nil {
			fail("unlock: %v", err)
		}
		fmt.Println("ack done")
		return true
	}
	s := workerStore(dir, nil)
	err := s.Update(context.Background(), id, func(cur *Record) (*Record, error) {
		fmt.Println("ack held")
		// A line, or EOF when the parent is gone: either lets go.
		_, _ = in.ReadString('\n') // error deliberately ignored, see above
		if mode == "refresh" {
			return &Record{Data: []byte("refreshed"), Expiry: time.Now().Add(time.Hour)}, nil
		}
		return nil, errKeep
	})
	if err != nil && !errors.Is(err, errKeep) {
		fail("update: %v", err)
	}
	if err := s.Close(); err != nil {
		fail("close: %v", err)
	}
	fmt.Println("ack done")
	return true
}

// TestGoroutinesInTwoStoresExclude runs several goroutines incrementing
// one counter in each of two Stores on one directory. Goroutines of one
// Store share its lock file descriptor, on which flock(2) is a no-op for a
// second locker: only the in-process lock, released after LOCK_UN and never
// before, keeps a second goroutine from slipping in while the first one's
// late LOCK_UN lets the other Store in. Every increment must count.
func TestGoroutinesInTwoStoresExclude(t *testing.T) {
	checkHygiene(t)
	const goroutines = 4
	each := 150
	if testing.Short() {
		each = 40
	}
	a := openTest(t, &Options{SweepInterval: -1, NoSync: true})
	b := openAgain(t, a, &Options{SweepInterval: -1, NoSync: true})
	const id = "shared-counter"
	ctx := bounded(t)
	errs := make(chan error, 2*goroutines)
	var wg sync.WaitGroup
	for _, s := range []*Store{a, b} {
		for range goroutines {
			wg.Go(func() {
				for range each {
					if err := s.Update(ctx, id, increment); err != nil {
						errs <- err
						return
					}
				}
			})
		}
	}
	finished := make(chan struct{})
	go func() { wg.Wait(); close(finished) }()
	await(t, finished, "the incrementing goroutines")
	close(errs)
	for err := range errs {
		require.NoError(t, err)
	}
	got := readCounter(t, a, id)
	require.Equal(t, 2*goroutines*each, got, "%d increments lost", 2*goroutines*each-got)
}

// TestDeleteAndSweepExcludeOtherProcesses: while another process holds a
// record's lock, Save, Delete and Update all wait for it in this one, and
// the sweeper leaves the record alone. A Delete that did not would let a logout here be undone by
// the other process's Update, which writes after it.
func TestDeleteAndSweepExcludeOtherProcesses(t *testing.T) {
	if runLockHolder(t) {
		return
	}
	checkHygiene(t)
	s := openTest(t, nil)
	const id = "logged-in"
	path := recordFile(s.Dir(), "1x2", id)
	require.NoError(t, s.Save(bounded(t), id, []byte("old"), time.Now().Add(-time.Minute)))

	// An expired record, so that the sweeper wants it too.
	h := holdInWorker(t, s.Dir(), id, "keep")
	requireWaits(t, "Save", func(ctx context.Context) error { return s.Save(ctx, id, []byte("new"), time.Time{}) })
	requireWaits(t, "Delete", func(ctx context.Context) error { return s.Delete(ctx, id) })
	requireWaits(t, "Update", func(ctx context.Context) error {
		return s.Update(ctx, id, func(*Record) (*Record, error) {
			return nil, errors.New("fn ran while another process held the lock")
		})
	})
	// The sweeper does not wait for a record a writer holds: it leaves it
	// for a later sweep, since the writer is replacing or removing it.
	n, err := s.DeleteExpired(bounded(t))
	require.NoError(t, err)
	require.Zero(t, n, "the sweeper removed a record another process held")
	require.FileExists(t, path, "the record was removed under another process's lock")
	h.release(t)

	// A logout while the other process refreshes the session: the Delete
	// waits for the refresh and then removes it, so the session stays out.
	h = holdInWorker(t, s.Dir(), id, "refresh")
	deleted := make(chan error, 1)
	go func() { deleted <- s.Delete(bounded(t), id) }()
	select {
	case err := <-deleted:
		t.Fatalf("Delete returned (%v) while another process held the lock", err)
	case <-time.After(stillBlocked):
	}
	h.release(t)
	require.NoError(t, await(t, deleted, "the Delete"))
	_, err = s.Load(bounded(t), id)
	require.ErrorIs(t, err, ErrNotFound, "a logout was undone by another process's Update")
}

// TestWalkBeyondOneBatch puts 1,200 records in one directory (the flat
// layout), more than a walk reads at once: ForEach must visit every live
// one and the sweeper remove every expired one, not just the first batch's.
func TestWalkBeyondOneBatch(t *testing.T) {
	checkHygiene(t)
	const live, dead = 600, 600
	s := openTest(t, &Options{SweepInterval: -1, NoSync: true, Layout: "flat"})
	ctx := bounded(t)
	for i := range live {
		require.NoError(t, s.Save(ctx, fmt.Sprintf("live-%d", i), []byte("x"), time.Time{}))
	}
	for i := range dead {
		require.NoError(t, s.Save(ctx, fmt.Sprintf("dead-%d", i), []byte("x"), time.Now().Add(-time.Minute)))
	}
	ents, err := os.ReadDir(filepath.Join(s.Dir(), "data"))
	require.NoError(t, err)
	require.Len(t, ents, live+dead, "every record in one directory")

	seen := map[string]bool{}
	require.NoError(t, s.ForEach(ctx, func(r Record) error {
		require.False(t, seen[r.ID], "visited twice")
		seen[r.ID] = true
		return nil
	}))
	// Not fatal: the sweep below is checked whatever ForEach did.
	assert.Equal(t, live, len(seen), "ForEach visited %d of %d live records", len(seen), live)

	n, err := s.DeleteExpired(ctx)
	require.NoError(t, err)
	require.Equal(t, dead, n, "the sweeper removed %d of %d expired records", n, dead)
	ents, err = os.ReadDir(filepath.Join(s.Dir(), "data"))
	require.NoError(t, err)
	require.Len(t, ents, live)
}

// firstInWalkOrder returns the record that a walk of the store meets
// first: the first name, in directory order (getdents, which is neither
// sorted nor creation order on ext4), of the first shard directory.
func firstInWalkOrder(t *testing.T, s *Store) string {
	t.Helper()
	dir := filepath.Join(s.Dir(), "data")
	levels := map[string]int{"flat": 0, "1x2": 1}[s.Layout()]
	for range levels {
		names := dirOrder(t, dir)
		require.NotEmpty(t, names)
		dir = filepath.Join(dir, names[0])
	}
	names := dirOrder(t, dir)
	require.NotEmpty(t, names)
	return filepath.Join(dir, names[0])
}

// dirOrder lists dir in the order the kernel returns it.
func dirOrder(t *testing.T, dir string) []string {
	t.Helper()
	f, err := os.Open(dir)
	require.NoError(t, err)
	defer f.Close()
	names, err := f.Readdirnames(-1)
	require.NoError(t, err)
	return names
}

// TestForEachVisitsEverythingAfterACorruptRecord corrupts the record that
// the walk meets first, whatever the directory order happens to be, and
// one more: ForEach must still visit every other record, then report the
// corrupt ones by hashed name.
func TestForEachVisitsEverythingAfterACorruptRecord(t *testing.T) {
	for _, layout := range []string{"flat", "1x2"} {
		t.Run(layout, func(t *testing.T) {
			checkHygiene(t)
			s := openTest(t, &Options{SweepInterval: -1, NoSync: true, Layout: layout})
			ctx := bounded(t)
			const n = 300
			byPath := map[string]string{}
			for i := range n {
				id := fmt.Sprintf("session-%d", i)
				require.NoError(t, s.Save(ctx, id, []byte("x"), time.Time{}))
				byPath[recordFile(s.Dir(), layout, id)] = id
			}
			first := firstInWalkOrder(t, s)
			other := recordFile(s.Dir(), layout, "session-7")
			if other == first {
				other = recordFile(s.Dir(), layout, "session-8")
			}
			// Overwritten in place: the directory entries, and so their
			// order, stay as they were.
			require.NoError(t, os.WriteFile(first, []byte("garbage"), 0o600))
			require.NoError(t, os.WriteFile(other, make([]byte, 2<<20), 0o600)) // above MaxRecordSize

			seen := map[string]bool{}
			err := s.ForEach(ctx, func(r Record) error { seen[r.ID] = true; return nil })
			require.Equal(t, n-2, len(seen), "ForEach stopped at a corrupt record: %v", err)
			require.False(t, seen[byPath[first]] || seen[byPath[other]])
			require.ErrorIs(t, err, ErrCorrupt)
			require.ErrorIs(t, err, ErrTooLarge)
			require.Contains(t, err.Error(), filepath.Base(first))
			require.Contains(t, err.Error(), filepath.Base(other))
			require.NotContains(t, err.Error(), "session-")
		})
	}
}

// TestSweeperLeavesForeignFiles plants files the store did not create, all
// of them old, next to an expired record and a crashed writer's temp file:
// an NFS silly-rename file, an operator's notes, backups of a record (one
// under its own name plus ".bak", one under its name in upper case),
// names that look like temp files but are not the store's, and a creating
// Open's temp name where only the root has them. The sweeper removes the
// record and the temp file and nothing else, in every place it looks.
func TestSweeperLeavesForeignFiles(t *testing.T) {
	for _, layout := range []string{"flat", "1x2"} {
		t.Run(layout, func(t *testing.T) {
			checkHygiene(t)
			s := openTest(t, &Options{SweepInterval: -1, Layout: layout})
			ctx := bounded(t)
			const id = "expired-session"
			rec := recordFile(s.Dir(), layout, id)
			require.NoError(t, s.Save(ctx, id, []byte("x"), time.Now().Add(-time.Hour)))
			content, err := os.ReadFile(rec)
			require.NoError(t, err)
			shard, h := filepath.Dir(rec), filepath.Base(rec)
			data := filepath.Join(s.Dir(), "data")
			ours := filepath.Join(shard, ".tmp-"+h+"-crashed")

			foreign := map[string][]byte{
				filepath.Join(shard, ".nfs0000000000a1b2c300000001"):       []byte("open elsewhere"),
				filepath.Join(shard, "NOTES.txt"):                          []byte("operator's notes"),
				filepath.Join(shard, h+".bak"):                             content,
				filepath.Join(shard, h+"~"):                                content,
				filepath.Join(shard, strings.ToUpper(h)):                   content,
				filepath.Join(shard, ".tmp-"+strings.Repeat("g", 64)+"-x"): []byte("not a hash"),
				filepath.Join(shard, ".tmp-"+h):                            []byte("no random suffix"),
				filepath.Join(shard, ".tmp-"+h[:63]+"-x"):                  []byte("short hash"),
				filepath.Join(shard, ".filestore-init-x"):                  []byte("init temps live in the root"),
				filepath.Join(data, "NOTES.txt"):                           []byte("operator's notes"),
				filepath.Join(s.Dir(), "NOTES.txt"):                        []byte("operator's notes"),
				filepath.Join(s.Dir(), "filestore.json.bak"):               []byte("{}"),
				filepath.Join(s.Dir(), ".filestore-initx"):                 []byte("no dash"),
				filepath.Join(s.Dir(), "locks", "stripe-0000.lock.old"):    {},
			}
			if layout == "1x2" {
				foreign[filepath.Join(data, "zz", "old")] = []byte("not a shard")
				foreign[filepath.Join(data, h[:2]+".bak")] = []byte("not a shard")
			}
			ancient := time.Now().Add(-10 * 365 * 24 * time.Hour)
			for p, b := range foreign {
				require.NoError(t, os.MkdirAll(filepath.Dir(p), 0o700))
				require.NoError(t, os.WriteFile(p, b, 0o600))
				require.NoError(t, os.Chtimes(p, ancient, ancient))
			}
			require.NoError(t, os.WriteFile(ours, []byte("partial"), 0o600))
			require.NoError(t, os.Chtimes(ours, ancient, ancient))

			n, err := s.DeleteExpired(ctx)
			require.NoError(t, err)
			require.Equal(t, 1, n)
			require.NoFileExists(t, rec)
			require.NoFileExists(t, ours, "the crashed writer's temp file")
			for p, b := range foreign {
				got, err := os.ReadFile(p)
				require.NoError(t, err, "the sweeper removed %s", p)
				require.Equal(t, b, got, "the sweeper changed %s", p)
			}
		})
	}
}

// idsByStripe returns n ids whose records lie in n different stripes,
// ordered by stripe.
func idsByStripe(prefix string, n int) []string {
	var ids []string
	used := map[int]bool{}
	for i := 0; len(ids) < n; i++ {
		id := fmt.Sprintf("%s-%d", prefix, i)
		if st := stripeOfID(id); !used[st] {
			used[st] = true
			ids = append(ids, id)
		}
	}
	slices.SortFunc(ids, func(a, b string) int { return stripeOfID(a) - stripeOfID(b) })
	return ids
}

// TestFlatSweepLocksEachStripe: in the flat layout one directory holds
// records of every stripe, and the sweeper groups a batch's candidates by
// stripe, entering each stripe once per group. A process of an earlier
// release, which locks a stripe's file exclusively, holds the stripe of
// the expired record in the highest stripe of four (so it is never first
// in a group) and is about to refresh it. The sweeper removes the other
// three and must then wait for that stripe, leaving the record alone:
// removing it from within another stripe would delete a session the other
// process is refreshing (the race of Tomcat's CVE-2022-23181).
func TestFlatSweepLocksEachStripe(t *testing.T) {
	if runLockHolder(t) {
		return
	}
	checkHygiene(t)
	// A store an earlier release created (marker version 2), which such a
	// release may share; it refuses stores created now.
	root := filepath.Join(t.TempDir(), "v2")
	require.NoError(t, os.Mkdir(root, 0o700))
	require.NoError(t, os.WriteFile(filepath.Join(root, "filestore.json"),
		[]byte(`{"format":"filestore","version":2,"layout":"flat","stripes":256}`), 0o600))
	s, err := Open(root, &Options{SweepInterval: -1})
	require.NoError(t, err)
	closeInCleanup(t, s)
	ids := idsByStripe("expired", 4)
	for _, id := range ids {
		require.NoError(t, s.Save(bounded(t), id, []byte("x"), time.Now().Add(-time.Minute)))
	}
	held := ids[len(ids)-1]
	h := holdInWorker(t, s.Dir(), held, "old-refresh")

	var first int
	requireWaits(t, "DeleteExpired", func(ctx context.Context) error {
		var err error
		first, err = s.DeleteExpired(ctx)
		return err
	})
	require.FileExists(t, recordFile(s.Dir(), "flat", held), "removed under another stripe's lock")

	h.release(t)
	n, err := s.DeleteExpired(bounded(t))
	require.NoError(t, err)
	require.Equal(t, len(ids)-1, first+n, "the other expired records were removed")
	rec, err := s.Load(bounded(t), held)
	require.NoError(t, err)
	require.Equal(t, "refreshed", string(rec.Data))
}

// TestHugeFileNeverReadWhole plants sparse files far above the record size
// limit at a record path: 64 MiB, and 1 TiB, which no machine here could
// read into memory. Load, Update, ForEach and the sweeper must refuse each
// with ErrTooLarge after an fstat, without reading it.
func TestHugeFileNeverReadWhole(t *testing.T) {
	checkHygiene(t)
	s := openTest(t, nil)
	ctx := bounded(t)
	const id = "huge"
	path := recordFile(s.Dir(), "1x2", id)
	require.NoError(t, s.Save(ctx, id, []byte("x"), time.Time{})) // makes its shard directory

	ops := []struct {
		name string
		run  func() error
	}{
		{"load", func() error { _, err := s.Load(ctx, id); return err }},
		{"update", func() error {
			return s.Update(ctx, id, func(*Record) (*Record, error) { return nil, errors.New("fn ran") })
		}},
		{"foreach", func() error { return s.ForEach(ctx, func(Record) error { return errors.New("visited") }) }},
		{"sweep", func() error {
			n, err := s.DeleteExpired(ctx)
			if n != 0 {
				return fmt.Errorf("swept %d", n)
			}
			return err
		}},
	}
	for _, size := range []int64{64 << 20, 1 << 40} {
		require.NoError(t, os.WriteFile(path, nil, 0o600))
		if err := os.Truncate(path, size); err != nil {
			// A filesystem with a smaller file size limit (EFBIG): the
			// 64 MiB file has made the point already.
			require.NotEqual(t, int64(64<<20), size, "truncate: %v", err)
			t.Logf("no sparse file of %d bytes here: %v", size, err)
			break
		}
		for _, op := range ops {
			var before, after runtime.MemStats
			runtime.GC()
			runtime.ReadMemStats(&before)
			err := op.run()
			runtime.ReadMemStats(&after)
			grew := after.TotalAlloc - before.TotalAlloc
			require.Less(t, grew, uint64(4<<20), "%s of a %d-byte file allocated %d bytes", op.name, size, grew)
			require.ErrorIs(t, err, ErrTooLarge, "%s of a %d-byte file", op.name, size)
			fi, err := os.Stat(path)
			require.NoError(t, err)
			require.Equal(t, size, fi.Size(), "%s changed the file", op.name)
		}
	}
}

// TestTempFileRemovedOnlyUnderItsLock: a temp file is a write in progress
// for as long as its writer holds the record's lock, however old the file
// looks. While another process holds the lock, the sweeper leaves the
// record's temp file; once the lock is free it removes it.
func TestTempFileRemovedOnlyUnderItsLock(t *testing.T) {
	if runLockHolder(t) {
		return
	}
	checkHygiene(t)
	s := openTest(t, nil)
	// Not stripe 0: a temp file's stripe must come from its record's hash,
	// not from whatever its own name decodes to.
	id := idsByStripe("writing", 2)[1]
	require.NotZero(t, stripeOfID(id))
	require.NoError(t, s.Save(bounded(t), id, []byte("x"), time.Now().Add(time.Hour)))
	rec := recordFile(s.Dir(), "1x2", id)
	tmp := filepath.Join(filepath.Dir(rec), ".tmp-"+filepath.Base(rec)+"-slowdisk")
	require.NoError(t, os.WriteFile(tmp, []byte("partial"), 0o600))
	old := time.Now().Add(-time.Hour)
	require.NoError(t, os.Chtimes(tmp, old, old))

	h := holdInWorker(t, s.Dir(), id, "keep")
	n, err := s.DeleteExpired(bounded(t))
	require.NoError(t, err)
	require.Zero(t, n)
	require.FileExists(t, tmp, "a temp file was removed while its record's lock was held")
	h.release(t)

	n, err = s.DeleteExpired(bounded(t))
	require.NoError(t, err)
	require.Zero(t, n)
	require.NoFileExists(t, tmp)
	_, err = s.Load(bounded(t), id)
	require.NoError(t, err)
}

// TestDeleteExpiredWaitsForAnotherSweep: DeleteExpired waits while another
// process sweeps (holds locks/sweep.lock), as documented, and then sweeps;
// only the background sweeper skips a busy round.
func TestDeleteExpiredWaitsForAnotherSweep(t *testing.T) {
	checkHygiene(t)
	s := openTest(t, nil)
	require.NoError(t, s.Save(bounded(t), "expired", []byte("x"), time.Now().Add(-time.Minute)))
	// Another process's sweeper, as any release takes it: flock(2) on the
	// sweep lock file.
	other := flock.New(filepath.Join(s.Dir(), "locks", "sweep.lock"))
	ok, err := other.TryLock()
	require.NoError(t, err)
	require.True(t, ok)
	t.Cleanup(func() { _ = other.Unlock() })

	requireWaits(t, "DeleteExpired", func(ctx context.Context) error {
		_, err := s.DeleteExpired(ctx)
		return err
	})
	type result struct {
		n   int
		err error
	}
	swept := make(chan result, 1)
	go func() {
		n, err := s.DeleteExpired(bounded(t))
		swept <- result{n, err}
	}()
	select {
	case r := <-swept:
		t.Fatalf("DeleteExpired returned (%d, %v) while another process swept", r.n, r.err)
	case <-time.After(stillBlocked):
	}
	require.NoError(t, other.Unlock())
	r := await(t, swept, "DeleteExpired after the other sweep")
	require.NoError(t, r.err)
	require.Equal(t, 1, r.n)
}

// TestConcurrentCreateOneLayoutWins starts four Opens at once on a
// directory that does not exist yet, two asking for "flat" and two for
// "1x2", over many rounds. In every round exactly one layout wins: the
// marker on disk names it, each Open that asked for it gets a store with
// it, and each that asked for the other gets ErrLayout.
func TestConcurrentCreateOneLayoutWins(t *testing.T) {
	checkHygiene(t)
	rounds := 40
	if testing.Short() {
		rounds = 10
	}
	layouts := []string{"flat", "1x2", "flat", "1x2"}
	base := t.TempDir()
	wins := map[string]int{}
	for round := range rounds {
		dir := filepath.Join(base, fmt.Sprint(round))
		stores := make([]*Store, len(layouts))
		errs := make([]error, len(layouts))
		start := make(chan struct{})
		var wg sync.WaitGroup
		for i, l := range layouts {
			wg.Go(func() {
				<-start
				stores[i], errs[i] = Open(dir, &Options{SweepInterval: -1, Layout: l})
			})
		}
		close(start)
		finished := make(chan struct{})
		go func() { wg.Wait(); close(finished) }()
		await(t, finished, "the creating Opens")
		for _, s := range stores {
			if s != nil {
				require.NoError(t, s.Close())
			}
		}

		b, err := os.ReadFile(filepath.Join(dir, "filestore.json"))
		require.NoError(t, err)
		var m struct{ Layout string }
		require.NoError(t, json.Unmarshal(b, &m))
		wins[m.Layout]++
		for i, l := range layouts {
			if l == m.Layout {
				require.NoError(t, errs[i], "round %d: Open asking for the winning layout %s", round, l)
				require.Equal(t, l, stores[i].Layout())
			} else {
				require.ErrorIs(t, errs[i], ErrLayout, "round %d: Open asking for %s, the marker says %s", round, l, m.Layout)
			}
		}
	}
	t.Logf("%d rounds: layouts won %v", rounds, wins)
}

// TestOpenRefusesForeignMarker: a filestore.json whose format field is not
// "filestore" belongs to something else, however well the other fields
// fit. Open refuses it with ErrNotStore and writes nothing.
func TestOpenRefusesForeignMarker(t *testing.T) {
	checkHygiene(t)
	for _, format := range []string{`"other"`, `"Filestore"`, `""`, `null`, `1`} {
		dir := t.TempDir()
		marker := fmt.Sprintf(`{"format":%s,"version":2,"layout":"1x2","stripes":256}`, format)
		require.NoError(t, os.WriteFile(filepath.Join(dir, "filestore.json"), []byte(marker), 0o600))
		s, err := Open(dir, &Options{SweepInterval: -1})
		if err == nil {
			require.NoError(t, s.Close())
		}
		require.ErrorIs(t, err, ErrNotStore, "format %s", format)
		require.Equal(t, []string{"filestore.json"}, dirOrder(t, dir), "format %s: a refused Open wrote", format)
	}
	// Without the format field at all.
	dir := t.TempDir()
	require.NoError(t, os.WriteFile(filepath.Join(dir, "filestore.json"), []byte(`{"version":2,"layout":"1x2","stripes":256}`), 0o600))
	s, err := Open(dir, &Options{SweepInterval: -1})
	if err == nil {
		require.NoError(t, s.Close())
	}
	require.ErrorIs(t, err, ErrNotStore)
}

// TestTwoProcessesCreateOneStore is TestConcurrentCreateOneLayoutWins
// across processes: two worker processes, one asking for "flat" and one
// for "1x2", create a new store in each round, and exactly one of them
// wins each round. Each round starts both at the same instant: the
// parent holds an exclusive flock on the round's gate file, both workers
// wait for a shared one, and the kernel wakes them together when the
// parent lets go.
func TestTwoProcessesCreateOneStore(t *testing.T) {
	rounds := 20
	if testing.Short() {
		rounds = 5
	}
	if dir, arg, ok := worker(t); ok {
		var layout, gates string
		var n int
		if _, err := fmt.Sscan(arg, &layout, &n, &gates); err != nil {
			fail("arg %q: %v", arg, err)
		}
		for round := range n {
			gate := flock.New(filepath.Join(gates, fmt.Sprint(round)))
			fmt.Printf("ack %d waiting\n", round)
			if err := gate.RLock(); err != nil {
				fail("gate: %v", err)
			}
			_ = gate.Unlock() // error deliberately ignored: closing the descriptor unlocks
			s, err := Open(filepath.Join(dir, fmt.Sprint(round)), &Options{SweepInterval: -1, Layout: layout})
			switch {
			case err == nil:
				if got := s.Layout(); got != layout {
					fail("asked for %s, got a store with %s", layout, got)
				}
				_ = s.Close() // error deliberately ignored: nothing was written through it
				fmt.Printf("ack %d won\n", round)
			case errors.Is(err, ErrLayout):
				fmt.Printf("ack %d lost\n", round)
			default:
				fail("open: %v", err)
			}
		}
		return
	}

	checkHygiene(t)
	base, gates := t.TempDir(), t.TempDir()
	var held []*flock.Flock
	for round := range rounds {
		g := flock.New(filepath.Join(gates, fmt.Sprint(round)))
		require.NoError(t, g.Lock())
		held = append(held, g)
	}
	layouts := []string{"flat", "1x2"}
	type report struct{ round, result string }
	reports := make([]chan report, len(layouts))
	exited := make([]chan struct{}, len(layouts)) // closed when the worker has exited
	exitErr := make([]error, len(layouts))        // set before exited is closed
	for i, l := range layouts {
		cmd, out := startWorker(t, base, fmt.Sprintf("%s %d %s", l, rounds, gates))
		reports[i], exited[i] = make(chan report, 2*rounds), make(chan struct{})
		go func() {
			sc := bufio.NewScanner(out)
			for sc.Scan() {
				if a, ok := strings.CutPrefix(sc.Text(), "ack "); ok {
					r, res, _ := strings.Cut(a, " ")
					reports[i] <- report{r, res}
				}
			}
			close(reports[i])
			exitErr[i] = cmd.Wait() // after the last read, as os/exec requires
			close(exited[i])
		}()
		t.Cleanup(func() {
			select {
			case <-exited[i]:
			case <-time.After(waitLimit):
				_ = cmd.Process.Kill() // error deliberately ignored: it may have exited just now
				<-exited[i]
			}
		})
	}
	// Registered after the workers' Cleanups, so it runs first: a worker
	// waiting at a gate when the test fails goes on and exits.
	t.Cleanup(func() {
		for _, g := range held {
			_ = g.Unlock() // error deliberately ignored: unlocking twice is harmless here
		}
	})
	// next is worker i's next report, which must be for round.
	next := func(i, round int) string {
		t.Helper()
		r, ok := await(t, reports[i], "worker "+layouts[i]), true
		if r == (report{}) {
			ok = false // closed: the worker exited
		}
		require.True(t, ok, "worker %s exited before round %d", layouts[i], round)
		require.Equal(t, fmt.Sprint(round), r.round, "worker %s", layouts[i])
		return r.result
	}
	wins := map[string]int{}
	for round := range rounds {
		for i := range layouts {
			require.Equal(t, "waiting", next(i, round), "worker %s", layouts[i])
		}
		require.NoError(t, held[round].Unlock())
		results := make([]string, len(layouts))
		for i := range layouts {
			results[i] = next(i, round)
		}
		b, err := os.ReadFile(filepath.Join(base, fmt.Sprint(round), "filestore.json"))
		require.NoError(t, err)
		var m struct{ Layout string }
		require.NoError(t, json.Unmarshal(b, &m))
		wins[m.Layout]++
		for i, res := range results {
			want := "lost"
			if layouts[i] == m.Layout {
				want = "won"
			}
			require.Equal(t, want, res, "round %d: worker %s, marker %s", round, layouts[i], m.Layout)
		}
	}
	for i := range layouts {
		await(t, exited[i], "worker "+layouts[i]+" to exit")
		require.NoError(t, exitErr[i], "worker %s", layouts[i])
	}
	t.Logf("%d rounds: layouts won %v", rounds, wins)
}
