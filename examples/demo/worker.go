package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/filestore-go/filestore"
)

// shutdownTimeout is how long a worker waits for requests in flight when
// it is told to stop.
const shutdownTimeout = 10 * time.Second

// cacheBytes is the size of each worker's read cache.
const cacheBytes = 1 << 20

// readyLine is what a worker writes to its stdout once it is listening.
const readyLine = "ready"

// serveWorker runs worker number n: it serves the demo on cfg.addr, sharing
// the port with its siblings, until SIGTERM or SIGINT arrives or its stdin
// (a pipe from the supervisor) reaches EOF, which means the supervisor is
// gone. It returns the exit code.
func serveWorker(cfg config, n int, stdout, stderr io.Writer) int {
	pid := os.Getpid()
	log := slog.New(slog.NewTextHandler(stderr, nil)).With("worker", n, "pid", pid)

	// The signals stay registered until the process exits: unregistering
	// them (the stop func NotifyContext returns) would restore SIGTERM's
	// default action, and a SIGTERM still in flight, or a second one from
	// Pdeathsig (sent when the supervisor thread that started us exits,
	// go.dev/issue/27505), would then kill the worker before it had shut
	// down cleanly. Likewise the lifeline ends the worker through its own
	// cancel, not through stop.
	sigCtx, _ := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	ctx, cancel := context.WithCancel(sigCtx)
	defer cancel()
	go func() {
		// Pdeathsig covers this on Linux; the pipe covers every system,
		// and a supervisor that was killed with SIGKILL.
		_, _ = io.Copy(io.Discard, os.Stdin)
		cancel()
	}()

	// The read cache is safe across processes (a counter shared by every
	// worker says when a cached record is stale), so the panel's requests
	// to all workers test it too.
	fs, err := filestore.Open(cfg.dataDir, &filestore.Options{Logger: log, CacheBytes: cacheBytes})
	if err != nil {
		log.Error("open session store", "error", err)
		return 1
	}
	defer fs.Close()

	lc := net.ListenConfig{Control: reusePort}
	ln, err := lc.Listen(ctx, "tcp", cfg.addr)
	if err != nil {
		log.Error("listen", "error", err)
		return 1
	}
	info := workerInfo{n: n, workers: cfg.workers, pid: pid, started: time.Now()}
	changes := startFeed(ctx, fs, n, log)
	srv := &http.Server{
		Handler:           newHandler(newSessionManager(fs, log), info, changes, ctx.Done(), log),
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       time.Minute,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelWarn),
	}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()
	if _, err := fmt.Fprintln(stdout, readyLine); err != nil {
		log.Error("report readiness", "error", err)
		return 1
	}

	select {
	case err := <-served:
		log.Error("serve", "error", err)
		return 1
	case <-ctx.Done():
	}
	sctx, cancelShutdown := context.WithTimeout(context.Background(), shutdownTimeout)
	defer cancelShutdown()
	if err := srv.Shutdown(sctx); err != nil {
		log.Error("shutdown", "error", err)
		return 1
	}
	if err := <-served; !errors.Is(err, http.ErrServerClosed) {
		log.Error("serve", "error", err)
		return 1
	}
	return 0
}
