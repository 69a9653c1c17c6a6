package filestore

import (
	"bufio"
	"errors"
	"fmt"
	"io"
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

// Cross-process tests re-run this test binary as workers, as cmd/go's
// lockedfile tests do. A worker is the same test function run with
// workerEnv set to its name; it reads its job from the environment and
// reports on stdout, one "ack ..." line per acknowledged operation.
const (
	workerEnv    = "FILESTORE_TEST_WORKER"
	workerDirEnv = "FILESTORE_TEST_DIR"
	workerArgEnv = "FILESTORE_TEST_ARG"
)

// worker reports whether this process is a worker for t, and its dir and arg.
func worker(t *testing.T) (dir, arg string, ok bool) {
	if os.Getenv(workerEnv) != t.Name() {
		return "", "", false
	}
	return os.Getenv(workerDirEnv), os.Getenv(workerArgEnv), true
}

// startWorker starts a worker process for t and returns it with its stdout.
func startWorker(t *testing.T, dir, arg string) (*exec.Cmd, io.ReadCloser) {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^"+t.Name()+"$", "-test.count=1")
	cmd.Env = append(os.Environ(), workerEnv+"="+t.Name(), workerDirEnv+"="+dir, workerArgEnv+"="+arg)
	cmd.Stderr = os.Stderr
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

// TestCrossProcessUpdate runs 8 processes x 200 Update increments of one id
// while a reader process checks every record it sees.
func TestCrossProcessUpdate(t *testing.T) {
	const procs, each = 8, 200
	if dir, arg, ok := worker(t); ok {
		s := workerStore(dir, nil)
		switch arg {
		case "writer":
			waitForFile(filepath.Join(dir, "go"))
			for range each {
				if err := s.Update(bg, "counter", increment); err != nil {
					fail("update: %v", err)
				}
			}
		case "reader":
			// Read until told to stop: a record is never torn or corrupt,
			// and the counter never goes backwards.
			last, reads := 0, 0
			stop := filepath.Join(dir, "stop")
			for reads%64 != 0 || !exists(stop) {
				r, err := s.Load(bg, "counter")
				reads++
				if errors.Is(err, ErrNotFound) {
					continue
				}
				if err != nil {
					fail("load: %v", err)
				}
				n, err := strconv.Atoi(string(r.Data))
				if err != nil || n < last {
					fail("counter read %q after %d", r.Data, last)
				}
				last = n
			}
			fmt.Printf("ack reads=%d last=%d\n", reads, last)
		}
		return
	}

	dir := filepath.Join(t.TempDir(), "store")
	s2, err := Open(dir, &Options{SweepInterval: -1})
	require.NoError(t, err)
	defer s2.Close()

	reader, rout := startWorker(t, dir, "reader")
	var readerAcks []string
	readerDone := make(chan struct{})
	go func() { readerAcks = acks(rout); close(readerDone) }()
	var writers []*exec.Cmd
	for range procs {
		cmd, out := startWorker(t, dir, "writer")
		go func() { _, _ = io.Copy(io.Discard, out) }()
		writers = append(writers, cmd)
	}
	require.NoError(t, os.WriteFile(filepath.Join(dir, "go"), nil, 0o600))
	for _, w := range writers {
		require.NoError(t, w.Wait())
	}
	require.NoError(t, os.WriteFile(filepath.Join(dir, "stop"), nil, 0o600))
	<-readerDone
	require.NoError(t, reader.Wait())
	require.Equal(t, procs*each, readCounter(t, s2, "counter"))
	require.Len(t, readerAcks, 1)
	t.Logf("reader: %s", readerAcks[0])
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
		rounds = 15
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

	dir := filepath.Join(t.TempDir(), "store")
	s, err := Open(dir, &Options{SweepInterval: -1})
	require.NoError(t, err)
	defer s.Close()
	const dead = 100
	for i := range dead {
		require.NoError(t, s.Save(bg, fmt.Sprintf("dead-%d", i), nil, time.Now().Add(-time.Minute)))
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
	live := 0
	require.NoError(t, s.ForEach(bg, func(r Record) error {
		require.Equal(t, "fresh", string(r.Data))
		live++
		return nil
	}))
	require.Equal(t, writers*idsEach, live)
	require.Len(t, files(t, s), writers*idsEach, "every expired record removed, no temp file left")
}

// TestCrashKill SIGKILLs a worker that saves, updates and deletes in a loop,
// at random points, and checks what survives each death.
func TestCrashKill(t *testing.T) {
	trials := 100
	if testing.Short() {
		trials = 20
	}
	if dir, _, ok := worker(t); ok {
		s := workerStore(dir, nil)
		fmt.Println("ack ready")
		payload := make([]byte, 4096)
		for i := 0; ; i++ {
			id := fmt.Sprintf("s%d", i%16)
			switch i % 3 {
			case 0:
				if err := s.Save(bg, id, payload, time.Time{}); err != nil {
					fail("save: %v", err)
				}
			case 1:
				if err := s.Delete(bg, id); err != nil {
					fail("delete: %v", err)
				}
			}
			var n int
			err := s.Update(bg, "counter", func(cur *Record) (*Record, error) {
				next, err := increment(cur)
				if err == nil {
					n, _ = strconv.Atoi(string(next.Data))
				}
				return next, err
			})
			if err != nil {
				fail("update: %v", err)
			}
			fmt.Printf("ack %d\n", n)
		}
	}

	dir := filepath.Join(t.TempDir(), "store")
	s, err := Open(dir, &Options{SweepInterval: -1})
	require.NoError(t, err)
	defer s.Close()
	acked := 0
	for trial := range trials {
		cmd, out := startWorker(t, dir, "")
		lines := make(chan string)
		go func() {
			sc := bufio.NewScanner(out)
			for sc.Scan() {
				lines <- sc.Text()
			}
			close(lines)
		}()
		require.Equal(t, "ack ready", <-lines)
		time.Sleep(time.Duration(rand.IntN(20000)) * time.Microsecond)
		require.NoError(t, cmd.Process.Signal(syscall.SIGKILL))
		for l := range lines {
			if v, ok := strings.CutPrefix(l, "ack "); ok {
				acked, _ = strconv.Atoi(v)
			}
		}
		err := cmd.Wait()
		var exit *exec.ExitError
		require.ErrorAs(t, err, &exit, "trial %d: worker must die by the signal", trial)

		// Every record decodes or is absent.
		require.NoError(t, s.ForEach(bg, func(Record) error { return nil }), "trial %d", trial)
		// No acknowledged increment is lost, and at most the one in flight
		// when the worker died was written beyond it.
		if acked > 0 {
			n := readCounter(t, s, "counter")
			require.GreaterOrEqual(t, n, acked, "trial %d", trial)
			require.LessOrEqual(t, n, acked+1, "trial %d", trial)
			acked = n
		}
		// No lock stays held: the dead process's flocks died with it.
		for i := range s.locks.stripes {
			release, err := s.fs.Lock(bg, s.locks.stripePath(i), true)
			require.NoError(t, err, "trial %d: stripe %d still locked", trial, i)
			require.NoError(t, release())
		}
	}
	require.Positive(t, acked, "the worker never got an update through")

	temps := 0
	for _, p := range files(t, s) {
		if _, ok := tempOwner(filepath.Base(p)); ok {
			temps++
		}
	}
	t.Logf("%d trials, counter at %d, %d orphaned temp files", trials, acked, temps)
	// Past the grace period one sweep reclaims every orphaned temp file.
	s.now = func() time.Time { return time.Now().Add(2 * staleTempAge) }
	_, err = s.DeleteExpired(bg)
	require.NoError(t, err)
	for _, p := range files(t, s) {
		require.True(t, isRecordName(filepath.Base(p)), "left behind: %s", p)
	}
}
