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

// child is one running worker process.
type child struct {
	n        int
	cmd      *exec.Cmd
	lifeline *os.File // write end of the worker's stdin; closing it stops the worker
}

// event is something a worker did: became ready, or exited (err is the
// result of Wait).
type event struct {
	c      *child
	exited bool
	err    error
}

// supervise starts cfg.workers workers, prints the URL, and stops them on
// SIGINT or SIGTERM. It returns the exit code: 0 after a clean shutdown.
func supervise(cfg config, stdout, stderr io.Writer) int {
	log := slog.New(slog.NewTextHandler(stderr, nil)).With("supervisor", os.Getpid())
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	dataDir, err := filepath.Abs(cfg.dataDir)
	if err != nil {
		log.Error("data directory", "error", err)
		return 1
	}
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
	events := make(chan event)
	live := map[int]*child{}
	for n := 1; n <= cfg.workers; n++ {
		c, err := startWorker(exe, n, addr, dataDir, stdout, stderr, events)
		if err != nil {
			log.Error("start worker", "worker", n, "error", err)
			stopWorkers(live, events, log)
			return 1
		}
		live[n] = c
	}

	// Wait until every worker listens, so the URL printed works.
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
	fmt.Fprintf(stdout, "filestore demo: %d workers serving http://%s (sessions in %s); press Ctrl-C to stop\n",
		cfg.workers, addr, dataDir)

	for {
		select {
		case ev := <-events:
			if !ev.exited {
				continue
			}
			// The others go on serving: the kernel stops routing
			// connections to a closed listener, and sessions live on
			// disk, so no user notices.
			delete(live, ev.c.n)
			ev.c.lifeline.Close()
			log.Warn("worker exited", "worker", ev.c.n, "error", exitError(ev.err), "remaining", len(live))
			if len(live) == 0 {
				log.Error("no workers left")
				return 1
			}
		case <-ctx.Done():
			stop() // a second Ctrl-C kills the supervisor outright
			log.Info("stopping workers")
			if !stopWorkers(live, events, log) {
				return 1
			}
			return 0
		}
	}
}

// startWorker starts worker n and reports its readiness and exit on events.
func startWorker(exe string, n int, addr, dataDir string, stdout, stderr io.Writer, events chan<- event) (*child, error) {
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
	cmd := exec.Command(exe, "-addr", addr, "-data", dataDir)
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
	c := &child{n: n, cmd: cmd, lifeline: stdinW}

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
