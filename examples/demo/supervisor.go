package main

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/filestore-go/filestore"
)

// startTimeout bounds how long the supervisor waits for every worker to
// listen.
const startTimeout = 30 * time.Second

// stopTimeout bounds how long the supervisor waits for workers to exit
// after SIGTERM before it kills them.
const stopTimeout = shutdownTimeout + 5*time.Second

// Restart backoff. A worker that dies is started again after minRestart;
// each further death doubles the wait, up to maxRestart, so a worker that
// cannot start (its port taken, its directory gone) costs one attempt
// every few seconds instead of a busy loop. A worker that stayed up for
// stableUptime has proved its setup works: its next death waits minRestart
// again.
const (
	minRestart   = 100 * time.Millisecond
	maxRestart   = 5 * time.Second
	stableUptime = 30 * time.Second
)

// backoff is the restart delay of one worker slot. Its zero value is ready
// to use.
type backoff struct {
	next time.Duration
}

// delay returns how long to wait before restarting a worker that was up
// for up, and doubles the wait for the next time.
func (b *backoff) delay(up time.Duration) time.Duration {
	if b.next == 0 || up >= stableUptime {
		b.next = minRestart
	}
	d := b.next
	b.next = min(2*b.next, maxRestart)
	return d
}

// child is one running worker process.
type child struct {
	n        int
	cmd      *exec.Cmd
	started  time.Time
	lifeline *os.File // write end of the worker's stdin; closing it stops the worker
}

// event is something a worker did: became ready, or exited (err is the
// result of Wait).
type event struct {
	c      *child
	exited bool
	err    error
}

// supervise starts cfg.workers workers, prints the URL, restarts workers
// that die, and stops them all on SIGINT or SIGTERM. It returns the exit
// code: 0 after a clean shutdown.
func supervise(cfg config, stdout, stderr io.Writer) int {
	log := slog.New(slog.NewTextHandler(stderr, nil)).With("supervisor", os.Getpid())
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	dataDir, err := filepath.Abs(cfg.dataDir)
	if err != nil {
		log.Error("data directory", "error", err)
		return 1
	}
	fmt.Fprintf(stdout, "filestore demo: sessions in %s\n", dataDir)
	// Create or check the store here, so that a bad directory fails once
	// with a clear message rather than in every worker.
	fs, err := filestore.Open(dataDir, &filestore.Options{SweepInterval: -1})
	if err != nil {
		log.Error("open session store", "error", err)
		return 1
	}
	fs.Close()

	// Listen without SO_REUSEPORT first: that fails if anything, even
	// another demo, already listens on the address, which the workers
	// would otherwise silently share. It also resolves port 0.
	probe, err := net.Listen("tcp", cfg.addr)
	if err != nil {
		log.Error("listen", "error", err)
		return 1
	}
	addr := probe.Addr().String()
	probe.Close()

	exe, err := os.Executable()
	if err != nil {
		log.Error("find own executable", "error", err)
		return 1
	}
	start := func(n int, events chan<- event) (*child, error) {
		return startWorker(exe, n, cfg.workers, addr, dataDir, stdout, stderr, events)
	}
	events := make(chan event)
	live := map[int]*child{}
	for n := 1; n <= cfg.workers; n++ {
		c, err := start(n, events)
		if err != nil {
			log.Error("start worker", "worker", n, "error", err)
			stopWorkers(live, events, log)
			return 1
		}
		live[n] = c
	}

	// Wait until every worker listens, so the URL printed works. A worker
	// that fails now is a setup problem, not bad luck: give up.
	timeout := time.After(startTimeout)
	for ready := 0; ready < cfg.workers; {
		select {
		case ev := <-events:
			if ev.exited {
				delete(live, ev.c.n)
				ev.c.lifeline.Close()
				log.Error("worker failed to start", "worker", ev.c.n, "error", exitError(ev.err))
				stopWorkers(live, events, log)
				return 1
			}
			ready++
		case <-ctx.Done():
			stopWorkers(live, events, log)
			return 0
		case <-timeout:
			log.Error("workers did not start in time")
			stopWorkers(live, events, log)
			return 1
		}
	}
	fmt.Fprintf(stdout, "filestore demo: %d workers serving http://%s (Ctrl-C stops them)\n", cfg.workers, addr)

	// Each dead worker's slot has one restart timer at most, so the
	// channel's buffer always has room and a timer never blocks.
	restart := make(chan int, cfg.workers)
	timers := map[int]*time.Timer{}
	backoffs := make([]backoff, cfg.workers+1)
	schedule := func(n int, d time.Duration) {
		timers[n] = time.AfterFunc(d, func() { restart <- n })
	}
	for {
		select {
		case ev := <-events:
			if !ev.exited {
				log.Info("worker restarted", "worker", ev.c.n, "pid", ev.c.cmd.Process.Pid)
				continue
			}
			// The others go on serving meanwhile: the kernel stops
			// routing connections to a closed listener, and sessions
			// live on disk, so no user loses one.
			delete(live, ev.c.n)
			ev.c.lifeline.Close()
			d := backoffs[ev.c.n].delay(time.Since(ev.c.started))
			log.Warn("worker exited; restarting it", "worker", ev.c.n, "error", exitError(ev.err), "in", d)
			schedule(ev.c.n, d)
		case n := <-restart:
			delete(timers, n)
			c, err := start(n, events)
			if err != nil {
				d := backoffs[n].delay(0)
				log.Error("restart worker", "worker", n, "error", err, "retry in", d)
				schedule(n, d)
				continue
			}
			live[n] = c
		case <-ctx.Done():
			stop() // a second Ctrl-C kills the supervisor outright
			log.Info("stopping workers")
			for _, t := range timers {
				t.Stop() // one that fired already only fills the buffer
			}
			if !stopWorkers(live, events, log) {
				return 1
			}
			return 0
		}
	}
}

// startWorker starts worker n of workers and reports its readiness and
// exit on events.
func startWorker(exe string, n, workers int, addr, dataDir string, stdout, stderr io.Writer, events chan<- event) (*child, error) {
	stdinR, stdinW, err := os.Pipe()
	if err != nil {
		return nil, err
	}
	stdoutR, stdoutW, err := os.Pipe()
	if err != nil {
		stdinR.Close()
		stdinW.Close()
		return nil, err
	}
	cmd := exec.Command(exe, "-addr", addr, "-data", dataDir, "-workers", strconv.Itoa(workers))
	cmd.Env = append(os.Environ(), workerEnv+"="+strconv.Itoa(n))
	cmd.Stdin = stdinR
	cmd.Stdout = stdoutW
	cmd.Stderr = stderr
	cmd.SysProcAttr = workerAttr()
	err = cmd.Start()
	// The worker holds its own copies now.
	stdinR.Close()
	stdoutW.Close()
	if err != nil {
		stdinW.Close()
		stdoutR.Close()
		return nil, err
	}
	c := &child{n: n, cmd: cmd, started: time.Now(), lifeline: stdinW}

	scanned := make(chan struct{})
	go func() {
		defer close(scanned)
		defer stdoutR.Close()
		br := bufio.NewReader(stdoutR)
		line, err := br.ReadString('\n')
		if err != nil || strings.TrimSpace(line) != readyLine {
			return // the worker exits, or has exited; Wait reports why
		}
		events <- event{c: c}
		_, _ = io.Copy(stdout, br)
	}()
	go func() {
		<-scanned
		events <- event{c: c, exited: true, err: cmd.Wait()}
	}()
	return c, nil
}

// stopWorkers asks every live worker to shut down gracefully, waits for
// them, and kills those that take longer than stopTimeout. It reports
// whether all of them exited cleanly.
func stopWorkers(live map[int]*child, events <-chan event, log *slog.Logger) bool {
	for _, c := range live {
		// The lifeline stays open until the worker has exited: closing it
		// now would race the SIGTERM, and a worker that saw EOF first
		// could be killed by the signal while it shut down.
		if err := c.cmd.Process.Signal(syscall.SIGTERM); err != nil {
			log.Warn("signal worker", "worker", c.n, "error", err)
			c.lifeline.Close() // the worker may not be alive to get a signal
		}
	}
	clean := true
	timeout := time.After(stopTimeout)
	for len(live) > 0 {
		select {
		case ev := <-events:
			if !ev.exited {
				continue
			}
			delete(live, ev.c.n)
			ev.c.lifeline.Close()
			if ev.err != nil {
				log.Error("worker did not stop cleanly", "worker", ev.c.n, "error", ev.err)
				clean = false
			}
		case <-timeout:
			for _, c := range live {
				log.Error("worker did not stop in time; killing it", "worker", c.n)
				_ = c.cmd.Process.Kill()
			}
			timeout = nil // now wait for the kills to be reaped
			clean = false
		}
	}
	return clean
}

// exitError describes how a worker exited, for logs.
func exitError(err error) any {
	if err == nil {
		return "exit status 0"
	}
	return err
}
