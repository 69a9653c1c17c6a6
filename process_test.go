package filestore

import (
	"bufio"
	"crypto/sha256"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/filestore-go/filestore/internal/testkit"
	"github.com/stretchr/testify/require"
)

// Cross-process tests re-run this test binary as workers, through the
// harness every module's tests share (internal/testkit), as cmd/go's
// lockedfile tests do. A worker is the same test function run by
// workerCommand; it finds the store's directory in workerDirEnv and its
// job in its argument, and reports on stdout, one "ack ..." line per
// acknowledged operation.
const workerDirEnv = "FILESTORE_TEST_DIR"

// worker reports whether this process is a worker for t, and its dir and arg.
func worker(t *testing.T) (dir, arg string, ok bool) {
	arg, ok = testkit.Worker(t)
	return os.Getenv(workerDirEnv), arg, ok
}

// workerCommand is the command, not started, that runs a worker for t on
// the store in dir with arg.
func workerCommand(t *testing.T, dir, arg string) *exec.Cmd {
	cmd := testkit.Command(t, arg)
	cmd.Env = append(cmd.Env, workerDirEnv+"="+dir)
	cmd.Stderr = os.Stderr
	return cmd
}

// startWorker starts a worker process for t and returns it with its stdout.
func startWorker(t *testing.T, dir, arg string) (*exec.Cmd, io.ReadCloser) {
	t.Helper()
	cmd := workerCommand(t, dir, arg)
	out, err := cmd.StdoutPipe()
	require.NoError(t, err)
	require.NoError(t, cmd.Start())
	return cmd, out
}

// acks collects a worker's "ack" lines until its stdout closes.
func acks(r io.Reader) []string {
	var out []string
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "ack "); ok {
			out = append(out, v)
		}
	}
	return out
}

// workerStore opens the shared store in a worker; failures exit non-zero.
func workerStore(dir string, opts *Options) *Store {
	if opts == nil {
		opts = &Options{SweepInterval: -1}
	}
	s, err := Open(dir, opts)
	if err != nil {
		fmt.Fprintln(os.Stderr, "worker open:", err)
		os.Exit(2)
	}
	return s
}

func fail(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "worker: "+format+"\n", args...)
	os.Exit(3)
}

// waitForFile blocks until path exists.
func waitForFile(path string) {
	for {
		if _, err := os.Stat(path); err == nil {
			return
		}
		time.Sleep(time.Millisecond)
	}
}

func exists(path string) bool {
	_, err := os.Stat(path)
	return err == nil
}

// TestSweeperVsRefresh has writer processes flip their sessions between
// expired and refreshed while another process sweeps in a tight loop. A
// refreshed session must never be removed; every expired one must be.
func TestSweeperVsRefresh(t *testing.T) {
	const writers, idsEach = 2, 40
	rounds := 60
	if testing.Short() {
		rounds = 5 // TestContentionSweeperVsRefresh covers the same race
	}
	if dir, arg, ok := worker(t); ok {
		s := workerStore(dir, nil)
		stop := filepath.Join(dir, "stop")
		if arg == "sweeper" {
			sweeps, removed := 0, 0
			for !exists(stop) {
				n, err := s.DeleteExpired(bg)
				if err != nil {
					fail("sweep: %v", err)
				}
				sweeps++
				removed += n
			}
			fmt.Printf("ack sweeps=%d removed=%d\n", sweeps, removed)
			return
		}
		waitForFile(filepath.Join(dir, "go"))
		for range rounds {
			for i := range idsEach {
				id := fmt.Sprintf("%s-%d", arg, i)
				if err := s.Save(bg, id, []byte("stale"), time.Now().Add(-time.Second)); err != nil {
					fail("save expired: %v", err)
				}
				if err := s.Save(bg, id, []byte("fresh"), time.Now().Add(time.Hour)); err != nil {
					fail("refresh: %v", err)
				}
				// Only this process writes id: once refreshed, it is live
				// until we touch it again, whatever the sweeper does.
				r, err := s.Load(bg, id)
				if err != nil || string(r.Data) != "fresh" {
					fail("refreshed session lost: %v", err)
				}
			}
		}
		return
	}

	var dead []string
	for i := range 100 {
		dead = append(dead, fmt.Sprintf("dead-%d", i))
	}
	raceSweeper(t, dead, writers, writers*idsEach)
}

// raceSweeper is the parent's side of a sweeper-against-refresh test: it
// saves the dead ids already expired, starts a "sweeper" worker and
// writers workers "w0", "w1", ..., lets them go, stops the sweeper once
// the writers are done, sweeps once more and checks that exactly live
// records remain, each "fresh", and no other file.
func raceSweeper(t *testing.T, dead []string, writers, live int) {
	checkHygiene(t)
	dir := filepath.Join(t.TempDir(), "store")
	s, err := Open(dir, &Options{SweepInterval: -1})
	require.NoError(t, err)
	defer s.Close()
	for _, id := range dead {
		require.NoError(t, s.Save(bg, id, nil, time.Now().Add(-time.Minute)))
	}
	sweeper, sout := startWorker(t, dir, "sweeper")
	var sweepAcks []string
	sweepDone := make(chan struct{})
	go func() { sweepAcks = acks(sout); close(sweepDone) }()
	var ws []*exec.Cmd
	for w := range writers {
		cmd, out := startWorker(t, dir, fmt.Sprintf("w%d", w))
		go func() { _, _ = io.Copy(io.Discard, out) }()
		ws = append(ws, cmd)
	}
	require.NoError(t, os.WriteFile(filepath.Join(dir, "go"), nil, 0o600))
	for _, w := range ws {
		require.NoError(t, w.Wait())
	}
	require.NoError(t, os.WriteFile(filepath.Join(dir, "stop"), nil, 0o600))
	<-sweepDone
	require.NoError(t, sweeper.Wait())
	t.Logf("sweeper: %v", sweepAcks)

	_, err = s.DeleteExpired(bg)
	require.NoError(t, err)
	n := 0
	require.NoError(t, s.ForEach(bg, func(r Record) error {
		require.Equal(t, "fresh", string(r.Data))
		n++
		return nil
	}))
	require.Equal(t, live, n)
	require.Len(t, files(t, s), live, "every expired record removed, no temp file left")
}

// stripeIDs returns n ids with prefix whose records all lie in lock stripe
// 0 (their hashes start with a zero byte).
func stripeIDs(prefix string, n int) []string {
	var ids []string
	for i := 0; len(ids) < n; i++ {
		id := fmt.Sprintf("%s-%d", prefix, i)
		if sum := sha256.Sum256([]byte(id)); sum[0] == 0 {
			ids = append(ids, id)
		}
	}
	return ids
}

// TestSweepRunVsRefresh is TestSweeperVsRefresh with every session in one
// lock stripe, so that the sweeper finds runs of candidates and removes
// them under one lock of the whole stripe (locker.lockRun), while writer
// processes, and a goroutine of the sweeper's own process, flip their
// sessions between expired and refreshed. A refreshed session must never
// be removed.
func TestSweepRunVsRefresh(t *testing.T) {
	const writers, idsEach, rounds = 2, 24, 20
	if dir, arg, ok := worker(t); ok {
		// Without fsyncs: the race is between locks, and the rounds go
		// faster.
		s := workerStore(dir, &Options{SweepInterval: -1, NoSync: true})
		refresh := func(name string) {
			for range rounds {
				for _, id := range stripeIDs(name, idsEach) {
					if err := s.Save(bg, id, []byte("stale"), time.Now().Add(-time.Second)); err != nil {
						fail("save expired: %v", err)
					}
					if err := s.Save(bg, id, []byte("fresh"), time.Now().Add(time.Hour)); err != nil {
						fail("refresh: %v", err)
					}
					if r, err := s.Load(bg, id); err != nil || string(r.Data) != "fresh" {
						fail("refreshed session lost: %v", err)
					}
				}
			}
		}
		if arg == "sweeper" {
			done := make(chan struct{})
			go func() { refresh("own"); close(done) }()
			sweeps, removed := 0, 0
			for !exists(filepath.Join(dir, "stop")) {
				n, err := s.DeleteExpired(bg)
				if err != nil {
					fail("sweep: %v", err)
				}
				sweeps++
				removed += n
			}
			<-done
			fmt.Printf("ack sweeps=%d removed=%d\n", sweeps, removed)
			return
		}
		waitForFile(filepath.Join(dir, "go"))
		refresh(arg)
		return
	}

	raceSweeper(t, stripeIDs("dead", 60), writers, (writers+1)*idsEach)
}
