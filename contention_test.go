package filestore

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// Contention (issue 5, figure 1). Writer processes increment counters with
// Update while reader processes check every record they load, and a sweeper
// process sweeps every 10 ms while writers refresh sessions that are about
// to expire. Workers are this test binary re-executed (see process_test.go).
//
// The stores run with NoSync: an fsync changes what survives a power loss,
// not which interleavings of processes are possible, and without it the
// runs are long enough to matter yet short enough for CI. The process
// crash tests (crash_test.go) run with fsync on.

// contentionSize is how many increments each writer process makes.
func contentionSize() int {
	if testing.Short() {
		return 100
	}
	return 1000
}

// writerGoroutines is how many goroutines each writer process runs. A
// real server updates sessions from many goroutines at once, and
// goroutines of one process share its lock file descriptors: with one
// goroutine per process, a lock released in the wrong order within the
// process (the in-process mutex before the flock) would go unnoticed.
const writerGoroutines = 3

// contentionWorker runs the worker side of the counter tests. arg is
// "writer <n> <ids>" or "reader <ids>", where ids is how many counters
// there are (named by counterID). A writer makes n increments in all,
// spread over writerGoroutines goroutines.
func contentionWorker(dir, arg string) {
	s := workerStore(dir, &Options{SweepInterval: -1, NoSync: true})
	defer s.Close()
	f := strings.Fields(arg)
	ids, _ := strconv.Atoi(f[len(f)-1])
	switch f[0] {
	case "writer":
		n, _ := strconv.Atoi(f[1])
		done := make([]atomic.Int64, ids)
		waitForFile(filepath.Join(dir, "go"))
		var wg sync.WaitGroup
		for g := range writerGoroutines {
			wg.Go(func() {
				for k := g; k < n; k += writerGoroutines {
					i := rand.IntN(ids)
					if err := s.Update(bg, counterID(i), increment); err != nil {
						fail("update: %v", err)
					}
					done[i].Add(1)
				}
			})
		}
		wg.Wait()
		for i := range done {
			fmt.Printf("ack %d %d\n", i, done[i].Load())
		}
	case "reader":
		// A counter is never torn, corrupt or going backwards. Read
		// until told to stop, and at least once after the stop file
		// appears, when every writer has finished.
		last := make([]int, ids)
		reads := 0
		stop := filepath.Join(dir, "stop")
		for done := false; !done; {
			done = exists(stop)
			// Leave the writers some CPU: the machine may have 2 cores.
			time.Sleep(50 * time.Microsecond)
			for i := range ids {
				r, err := s.Load(bg, counterID(i))
				reads++
				if errors.Is(err, ErrNotFound) {
					if last[i] > 0 {
						fail("counter %d vanished after %d", i, last[i])
					}
					continue
				}
				if err != nil {
					fail("load: %v", err)
				}
				n, err := strconv.Atoi(string(r.Data))
				if err != nil || n < last[i] {
					fail("counter %d read %q after %d", i, r.Data, last[i])
				}
				last[i] = n
			}
		}
		fmt.Printf("ack reads=%d\n", reads)
	}
}

func counterID(i int) string { return fmt.Sprintf("counter-%02d", i) }

// runCounterContention runs procs writers and 2 readers over ids counters
// and checks the final counters against the writers' acknowledgements.
func runCounterContention(t *testing.T, procs, ids int) {
	if dir, arg, ok := worker(t); ok {
		contentionWorker(dir, arg)
		return
	}
	checkHygiene(t)
	each := contentionSize()
	s := openTest(t, &Options{SweepInterval: -1, NoSync: true})
	dir := s.Dir()

	type result struct {
		acks []string
		err  error
	}
	run := func(arg string) chan result {
		cmd, out := startWorker(t, dir, arg)
		ch := make(chan result, 1)
		go func() {
			a := acks(out)
			ch <- result{a, cmd.Wait()}
		}()
		return ch
	}
	var readers, writers []chan result
	for range 2 {
		readers = append(readers, run(fmt.Sprintf("reader %d", ids)))
	}
	for range procs {
		writers = append(writers, run(fmt.Sprintf("writer %d %d", each, ids)))
	}
	require.NoError(t, os.WriteFile(filepath.Join(dir, "go"), nil, 0o600))

	want := make([]int, ids)
	for w, ch := range writers {
		r := <-ch
		require.NoError(t, r.err, "writer %d", w)
		require.Len(t, r.acks, ids, "writer %d", w)
		for _, a := range r.acks {
			var i, n int
			_, err := fmt.Sscan(a, &i, &n)
			require.NoError(t, err)
			want[i] += n
		}
	}
	require.NoError(t, os.WriteFile(filepath.Join(dir, "stop"), nil, 0o600))
	for i, ch := range readers {
		r := <-ch
		require.NoError(t, r.err, "reader %d saw a bad record", i)
		require.Len(t, r.acks, 1)
		t.Logf("reader %d: %s", i, r.acks[0])
	}

	total := 0
	for i := range ids {
		if want[i] == 0 {
			_, err := s.Load(bg, counterID(i))
			require.ErrorIs(t, err, ErrNotFound)
			continue
		}
		require.Equal(t, want[i], readCounter(t, s, counterID(i)), "counter %d", i)
		total += want[i]
	}
	require.Equal(t, procs*each, total)
	require.NoError(t, s.ForEach(bg, func(Record) error { return nil }), "no corrupt record")
	requireNoTempFiles(t, dir)
	t.Logf("%d writers (%d goroutines each) x %d updates over %d ids: total %d, 0 corrupt", procs, writerGoroutines, each, ids, total)
}

// TestContentionOneCounter: 8 processes x 1,000 Updates of one id, each
// process running writerGoroutines goroutines, end at exactly 8,000 while
// 2 reader processes watch it.
func TestContentionOneCounter(t *testing.T) { runCounterContention(t, 8, 1) }

// TestContentionManyCounters: the same over 64 ids, which spreads the
// writers over many stripes and shards; each id's total matches the sum of
// the increments the writers acknowledged for it.
func TestContentionManyCounters(t *testing.T) { runCounterContention(t, 8, 64) }

// sweepCounter is a slog.Handler for the sweeper worker: it adds up the
// records the background sweeper reports removed and counts warnings and
// errors, which a clean store never produces.
type sweepCounter struct {
	removed, problems atomic.Int64
}

func (h *sweepCounter) Enabled(context.Context, slog.Level) bool { return true }
func (h *sweepCounter) WithAttrs([]slog.Attr) slog.Handler       { return h }
func (h *sweepCounter) WithGroup(string) slog.Handler            { return h }

func (h *sweepCounter) Handle(_ context.Context, r slog.Record) error {
	if r.Level >= slog.LevelWarn {
		h.problems.Add(1)
		fmt.Fprintln(os.Stderr, "sweeper:", r.Message)
	}
	r.Attrs(func(a slog.Attr) bool {
		if a.Key == "removed" {
			h.removed.Add(a.Value.Int64())
		}
		return true
	})
	return nil
}

// TestContentionSweeperVsRefresh runs the background sweeper every 10 ms in
// one process while writer processes keep refreshing sessions whose expiry
// is only a few milliseconds away, so that the sweeper keeps finding
// records that are expired when it peeks at them and refreshed by the time
// it holds their lock. A writer that finds a session gone before the expiry
// it last gave it has caught the sweeper deleting a live record; that must
// never happen. Each writer also leaves sessions to expire, which the
// sweeper must remove.
func TestContentionSweeperVsRefresh(t *testing.T) {
	const (
		writers = 4
		liveIDs = 16 // per writer, refreshed
		deadIDs = 16 // per writer, left to expire
		ttl     = 40 * time.Millisecond
	)
	rounds := 40
	if testing.Short() {
		rounds = 10
	}
	if dir, arg, ok := worker(t); ok {
		if arg == "sweeper" {
			h := new(sweepCounter)
			s := workerStore(dir, &Options{SweepInterval: 10 * time.Millisecond, NoSync: true, Logger: slog.New(h)})
			waitForFile(filepath.Join(dir, "stop"))
			if err := s.Close(); err != nil {
				fail("close: %v", err)
			}
			fmt.Printf("ack %d %d\n", h.removed.Load(), h.problems.Load())
			return
		}
		s := workerStore(dir, &Options{SweepInterval: -1, NoSync: true})
		defer s.Close()
		// The parent passes its round count: a worker runs without -short.
		var n, rounds int
		if _, err := fmt.Sscan(arg, &n, &rounds); err != nil {
			fail("arg %q: %v", arg, err)
		}
		for i := range deadIDs {
			if err := s.Save(bg, fmt.Sprintf("dead-%d-%d", n, i), []byte("x"), time.Now().Add(ttl)); err != nil {
				fail("save: %v", err)
			}
		}
		last := make([]time.Time, liveIDs) // the expiry each session was last given
		count := make([]int, liveIDs)
		lost, lapsed := 0, 0
		for round := range rounds + 1 {
			for i := range liveIDs {
				exp := time.Now().Add(ttl)
				if round == rounds {
					exp = time.Time{} // the final write never expires
				}
				err := s.Update(bg, fmt.Sprintf("live-%d-%d", n, i), func(cur *Record) (*Record, error) {
					switch {
					case cur != nil:
						if string(cur.Data) != strconv.Itoa(count[i]) {
							return nil, fmt.Errorf("session holds %q, want %d", cur.Data, count[i])
						}
					case round == 0:
					case time.Now().Before(last[i]):
						lost++ // gone while live: the sweeper removed a live record
					default:
						lapsed++ // expired before we got to it: fair game
					}
					count[i]++
					return &Record{Data: []byte(strconv.Itoa(count[i])), Expiry: exp}, nil
				})
				if err != nil {
					fail("update: %v", err)
				}
				last[i] = exp
			}
		}
		fmt.Printf("ack %d %d\n", lost, lapsed)
		return
	}

	checkHygiene(t)
	s := openTest(t, &Options{SweepInterval: -1, NoSync: true})
	dir := s.Dir()
	sweeper, sout := startWorker(t, dir, "sweeper")
	sweepAcks := make(chan []string, 1)
	go func() { sweepAcks <- acks(sout) }()
	var ws []*exec.Cmd
	var outs []chan []string
	for w := range writers {
		cmd, out := startWorker(t, dir, fmt.Sprintf("%d %d", w, rounds))
		ch := make(chan []string, 1)
		go func() { ch <- acks(out) }()
		ws = append(ws, cmd)
		outs = append(outs, ch)
	}
	lapsed := 0
	for w, cmd := range ws {
		a := <-outs[w]
		require.NoError(t, cmd.Wait(), "writer %d", w)
		require.Len(t, a, 1)
		var lost, l int
		_, err := fmt.Sscan(a[0], &lost, &l)
		require.NoError(t, err)
		require.Zero(t, lost, "writer %d: the sweeper deleted %d live sessions", w, lost)
		lapsed += l
	}
	// Let the sweeper run past the last dead session's expiry, then stop it.
	deadline := time.Now().Add(30 * time.Second)
	for remaining(t, s, "dead-") > 0 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	require.NoError(t, os.WriteFile(filepath.Join(dir, "stop"), nil, 0o600))
	a := <-sweepAcks
	require.NoError(t, sweeper.Wait())
	require.Len(t, a, 1)
	var removed, problems int
	_, err := fmt.Sscan(a[0], &removed, &problems)
	require.NoError(t, err)
	require.Zero(t, problems, "the sweeper logged warnings or errors")

	require.Zero(t, remaining(t, s, "dead-"), "every expired session was swept")
	require.GreaterOrEqual(t, removed, writers*deadIDs)
	for w := range writers {
		for i := range liveIDs {
			// Each session was written rounds+1 times, the last without
			// expiry; lapses restart nothing, the count is in the writer.
			r, err := s.Load(bg, fmt.Sprintf("live-%d-%d", w, i))
			require.NoError(t, err)
			require.Equal(t, strconv.Itoa(rounds+1), string(r.Data))
		}
	}
	requireNoTempFiles(t, dir)
	t.Logf("%d writers x %d sessions x %d refreshes: 0 live sessions swept, %d lapsed before their refresh, sweeper removed %d",
		writers, liveIDs, rounds, lapsed, removed)
}

// remaining counts the records on disk whose id starts with prefix.
func remaining(t *testing.T, s *Store, prefix string) int {
	n := 0
	err := s.walk(bg, eachName(func(dir dir, name string) error {
		if !isRecordName(name) {
			return nil
		}
		d, err := s.readIn(dir, name)
		if errors.Is(err, ErrNotFound) {
			return nil
		}
		if err != nil {
			return err
		}
		if strings.HasPrefix(d.id, prefix) {
			n++
		}
		return nil
	}), nil)
	require.NoError(t, err)
	return n
}
