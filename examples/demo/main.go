// Command demo is a small web application whose sessions live in a
// filestore shared by several worker processes serving one port.
//
// Run it from the repository root:
//
//	go run ./examples/demo
//
// The process started is the supervisor. It starts -workers copies of
// itself as workers; each opens the session directory (-data) and listens
// on -addr with SO_REUSEPORT, so the kernel spreads connections over them.
// The page asks every worker for the visitor's session at once, shows a
// live feed of the changes any worker makes (Store.Watch), and names each
// worker's pid and uptime. The supervisor restarts a worker that dies, with
// backoff. Ctrl-C (SIGINT) or SIGTERM shuts the workers down gracefully;
// workers exit on their own if the supervisor dies.
//
// Usage:
//
//	demo [-addr 127.0.0.1:8080] [-workers 4] [-data <user cache dir>/filestore-demo]
package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
)

// workerEnv is set, to the worker's 1-based number, in the environment of
// the worker processes the supervisor starts.
const workerEnv = "FILESTORE_DEMO_WORKER"

// maxWorkers bounds -workers.
const maxWorkers = 64

type config struct {
	addr    string
	workers int
	dataDir string
}

func parseFlags(args []string, stderr io.Writer) (config, error) {
	var cfg config
	fl := flag.NewFlagSet("demo", flag.ContinueOnError)
	fl.SetOutput(stderr)
	fl.StringVar(&cfg.addr, "addr", "127.0.0.1:8080", "`address` to listen on; port 0 picks a free port")
	fl.IntVar(&cfg.workers, "workers", 4, "number of worker processes")
	fl.StringVar(&cfg.dataDir, "data", "", "session `directory`, created if missing (default <user cache dir>/filestore-demo)")
	if err := fl.Parse(args); err != nil {
		return cfg, err
	}
	if cfg.dataDir == "" {
		// The user's cache directory, not the working directory: the
		// README runs the demo from the repository root, where a default
		// directory would show up as an untracked folder.
		dir, err := os.UserCacheDir()
		if err != nil {
			return cfg, fmt.Errorf("no default session directory (%v); pass -data", err)
		}
		cfg.dataDir = filepath.Join(dir, "filestore-demo")
	}
	if fl.NArg() > 0 {
		return cfg, fmt.Errorf("unexpected arguments %q", fl.Args())
	}
	if cfg.workers < 1 || cfg.workers > maxWorkers {
		return cfg, fmt.Errorf("-workers must be between 1 and %d", maxWorkers)
	}
	return cfg, nil
}

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

// run runs the supervisor, or a worker when workerEnv is set, and returns
// the exit code.
func run(args []string, stdout, stderr io.Writer) int {
	cfg, err := parseFlags(args, stderr)
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	if err != nil {
		fmt.Fprintln(stderr, "demo:", err)
		return 2
	}
	if s, ok := os.LookupEnv(workerEnv); ok {
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 {
			fmt.Fprintf(stderr, "demo: bad %s=%q\n", workerEnv, s)
			return 2
		}
		return serveWorker(cfg, n, stdout, stderr)
	}
	return supervise(cfg, stdout, stderr)
}
