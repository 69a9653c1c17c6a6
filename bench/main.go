// Command bench measures filestore on your machine and filesystem, and
// answers three questions: which shard layout fits my session count, how
// does filestore compare with the alternatives, and what does the read
// cache buy, without ever serving a session another process has changed.
//
//	go run . -sessions 200000 -tmpfs -out out
//
// It prints a table on stdout (progress goes to stderr) and, with -out,
// writes results.csv, storage.csv and chart.svg. Every filestore figure is
// measured next to its baselines, in interleaved rounds, so that the
// ratios hold on a noisy machine. See README.md.
package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/filestore-go/filestore"
)

// config is one benchmark run.
type config struct {
	dir        string // the user's filesystem; "" skips it
	tmpfs      bool
	tmpfsSize  string
	pops       []int // layout grid populations
	opsPop     int   // population of the comparison section
	payloads   []int
	layouts    []string
	procs      []int
	sections   []string
	round      time.Duration
	rounds     int
	maxOps     int64
	sessions   int
	cacheBytes int64 // filestore-cache's CacheBytes; 0 sizes it to the population
	out        string
	keep       bool
	quick      bool   // a smoke run: every path, small and short
	command    string // as typed, for the report
}

// Sections of a run.
const (
	secCompare = "compare" // filestore against baselines and competitors
	secLayouts = "layouts" // filestore and raw across the layout grid
	secProcs   = "procs"   // 1, 2, 4 processes sharing a store
	secCache   = "cache"   // the read cache against another process's writes
)

func main() {
	if os.Getenv(workerEnv) != "" {
		os.Exit(workerMain(os.Stdin, os.Stdout))
	}
	cfg, err := parseFlags(os.Args[1:], flag.ExitOnError)
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(2)
	}
	if err := run(cfg, os.Stdout, os.Stderr); err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
}

func parseFlags(args []string, handling flag.ErrorHandling) (config, error) {
	fl := flag.NewFlagSet("bench", handling)
	var c config
	var pops, payloadList, layouts, procs, sections string
	var million bool
	fl.StringVar(&c.dir, "dir", "_bench-data", "directory on the filesystem to measure (created and removed); empty to skip")
	fl.BoolVar(&c.tmpfs, "tmpfs", false, "also measure on a RAM filesystem (mounts tmpfs when root, else uses /dev/shm)")
	fl.StringVar(&c.tmpfsSize, "tmpfs-size", "10g", "size of the tmpfs mount")
	fl.StringVar(&pops, "pops", "10000,100000", "session populations of the layout grid")
	fl.BoolVar(&million, "1m", false, "add a population of 1,000,000 sessions to the layout grid (slow; ~8 GB on tmpfs)")
	fl.IntVar(&c.opsPop, "compare-pop", 100000, "session population of the comparison with other stores")
	fl.StringVar(&payloadList, "payloads", "1024,8192", "session payload sizes in bytes")
	fl.StringVar(&layouts, "layouts", "flat,1x2,1x3,2x2", "shard layouts of the grid")
	fl.StringVar(&procs, "procs", "1,2,4", "process counts of the multi-process section")
	fl.StringVar(&sections, "sections", "compare,cache,layouts,procs", "sections to run")
	fl.DurationVar(&c.round, "round", 400*time.Millisecond, "length of one measuring round per subject")
	fl.IntVar(&c.rounds, "rounds", 3, "interleaved rounds per measurement")
	fl.IntVar(&c.sessions, "sessions", 0, "your session count, for the layout recommendation (default: largest population)")
	fl.Int64Var(&c.cacheBytes, "cache-bytes", 0, "CacheBytes of the cached filestore subject (default: a fifth of the population's payload bytes)")
	fl.StringVar(&c.out, "out", "", "directory for results.csv, storage.csv and chart.svg")
	fl.BoolVar(&c.quick, "quick", false, "small populations and short rounds: finishes in under a minute")
	fl.BoolVar(&c.keep, "keep", false, "keep the data directories")
	if err := fl.Parse(args); err != nil {
		return c, err
	}
	c.command = strings.TrimSpace("go run . " + strings.Join(args, " "))
	c.maxOps = 1 << 62
	if c.quick {
		// Quick keeps every section, layout and payload, so that it
		// exercises the same paths as a full run.
		set := map[string]bool{}
		fl.Visit(func(f *flag.Flag) { set[f.Name] = true })
		if !set["pops"] {
			pops = "1000"
		}
		if !set["compare-pop"] {
			c.opsPop = 1000
		}
		if !set["round"] {
			c.round = 40 * time.Millisecond
		}
		if !set["rounds"] {
			c.rounds = 1
		}
	}
	var err error
	if c.pops, err = intList(pops); err != nil {
		return c, fmt.Errorf("-pops: %w", err)
	}
	if million {
		c.pops = append(c.pops, 1_000_000)
	}
	if c.payloads, err = intList(payloadList); err != nil {
		return c, fmt.Errorf("-payloads: %w", err)
	}
	for _, p := range c.payloads {
		if p < 64 || p > maxPayload {
			return c, fmt.Errorf("-payloads: %d not in [64, %d]", p, maxPayload)
		}
	}
	if c.procs, err = intList(procs); err != nil {
		return c, fmt.Errorf("-procs: %w", err)
	}
	c.layouts = strings.Split(layouts, ",")
	for _, l := range c.layouts {
		if shardCount(l) == 0 {
			return c, fmt.Errorf("-layouts: bad layout %q", l)
		}
	}
	c.sections = strings.Split(sections, ",")
	for _, s := range c.sections {
		if s != secCompare && s != secLayouts && s != secProcs && s != secCache {
			return c, fmt.Errorf("-sections: unknown section %q", s)
		}
	}
	if c.opsPop < 10 || c.rounds < 1 || c.round <= 0 || c.cacheBytes < 0 {
		return c, errors.New("-compare-pop, -rounds, -round and -cache-bytes must be positive")
	}
	if c.sessions == 0 {
		c.sessions = slices.Max(c.pops)
	}
	if c.dir == "" && !c.tmpfs {
		return c, errors.New("nothing to measure: -dir is empty and -tmpfs is off")
	}
	return c, nil
}

func intList(s string) ([]int, error) {
	var out []int
	for f := range strings.SplitSeq(s, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || n < 1 {
			return nil, fmt.Errorf("bad number %q", f)
		}
		out = append(out, n)
	}
	return out, nil
}

// shardCount returns how many leaf directories a layout has, or 0 for a
// malformed layout.
func shardCount(l string) int {
	if l == "flat" {
		return 1
	}
	var levels, width int
	if n, err := fmt.Sscanf(l, "%dx%d", &levels, &width); n != 2 || err != nil || levels < 1 || width < 1 || levels*width > 4 {
		return 0
	}
	return 1 << (4 * levels * width)
}

// target is one filesystem to measure.
type target struct {
	name string // "disk" or "tmpfs"
	kind string // the filesystem type, from /proc/mounts
	root string
	note string
}

// run runs cfg and writes the report to stdout.
func run(cfg config, stdout, stderr io.Writer) error {
	start := time.Now()
	var cleanups []func()
	cleanup := func() {
		for i := len(cleanups) - 1; i >= 0; i-- {
			cleanups[i]()
		}
		cleanups = nil
	}
	defer cleanup()
	// Unmount and remove on Ctrl-C too.
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, os.Interrupt, syscall.SIGTERM)
	defer func() {
		signal.Stop(sig)
		close(sig) // ends the goroutine below
	}()
	go func() {
		if _, ok := <-sig; ok {
			fmt.Fprintln(stderr, "\nbench: interrupted, cleaning up")
			cleanup()
			os.Exit(130)
		}
	}()

	var targets []target
	if cfg.dir != "" {
		root, undo, err := makeRunDir(cfg.dir, cfg.keep)
		if err != nil {
			return err
		}
		cleanups = append(cleanups, undo)
		targets = append(targets, target{name: "disk", kind: fsType(root), root: root})
	}
	if cfg.tmpfs {
		t, undo, err := mountTmpfs(cfg.tmpfsSize)
		if err != nil {
			return err
		}
		cleanups = append(cleanups, undo)
		targets = append(targets, t)
	}

	b := &bench{cfg: cfg, progress: newProgress(stderr)}
	for _, t := range targets {
		if b.recFS == "" || t.name == "disk" {
			b.recFS = t.name // recommend for the user's own filesystem
		}
	}
	for _, t := range targets {
		b.plan(t)
	}
	if err := b.execute(); err != nil {
		return err
	}
	b.progress.done()
	rep := report{cfg: cfg, targets: targets, rows: b.rows, storage: b.storage, confirmed: b.confirmed, took: time.Since(start)}
	rep.write(stdout)
	if cfg.out != "" {
		wrote, err := rep.files(cfg.out)
		if err != nil {
			return err
		}
		if len(wrote) > 0 {
			fmt.Fprintf(stdout, "\nWrote %s\n", strings.Join(wrote, ", "))
		}
	}
	return nil
}

// makeRunDir creates this run's own folder, run-<pid>, inside dir, and
// returns it with the function that removes what the run created: the
// folder and whichever of dir and its parents did not exist before. A
// directory the user made, even an empty one, is never removed. With keep,
// nothing is removed.
func makeRunDir(dir string, keep bool) (string, func(), error) {
	abs, err := filepath.Abs(dir)
	if err != nil {
		return "", nil, err
	}
	// Note which ancestors are missing before MkdirAll creates them, deepest
	// first, so that cleanup can remove exactly those, in that order.
	var made []string
	for d := abs; ; d = filepath.Dir(d) {
		if _, err := os.Lstat(d); err == nil || filepath.Dir(d) == d {
			break
		}
		made = append(made, d)
	}
	root := filepath.Join(abs, fmt.Sprintf("run-%d", os.Getpid()))
	if err := os.MkdirAll(root, 0o700); err != nil {
		return "", nil, err
	}
	undo := func() {
		if keep {
			return
		}
		// On Ctrl-C a task may still be creating files here, which makes
		// RemoveAll fail with ENOTEMPTY: try again.
		for range 3 {
			if os.RemoveAll(root) == nil {
				break
			}
		}
		for _, d := range made {
			// os.Remove, not RemoveAll: if anything else appeared in a
			// directory the run created, it stays.
			_ = os.Remove(d) // error deliberately ignored: only if empty
		}
	}
	return root, undo, nil
}

// fsType returns the type of the filesystem holding path, from the longest
// matching mount point in /proc/mounts.
func fsType(path string) string {
	b, err := os.ReadFile("/proc/mounts")
	if err != nil {
		return "unknown"
	}
	best, kind := "", "unknown"
	for line := range strings.SplitSeq(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) < 3 {
			continue
		}
		mp := f[1]
		if (path == mp || strings.HasPrefix(path, strings.TrimSuffix(mp, "/")+"/")) && len(mp) > len(best) {
			best, kind = mp, f[2]
		}
	}
	return kind
}

// mountTmpfs mounts a fresh tmpfs, or falls back to /dev/shm when it is a
// tmpfs, and returns it with the function that undoes it.
func mountTmpfs(size string) (target, func(), error) {
	dir, err := os.MkdirTemp("", "filestore-bench-tmpfs-")
	if err != nil {
		return target{}, nil, err
	}
	err = syscall.Mount("tmpfs", dir, "tmpfs", 0, "size="+size+",mode=0700")
	if err == nil {
		undo := func() {
			if syscall.Unmount(dir, 0) != nil {
				_ = syscall.Unmount(dir, syscall.MNT_DETACH) // error deliberately ignored: best effort
			}
			_ = os.Remove(dir) // error deliberately ignored: best effort
		}
		return target{name: "tmpfs", kind: "tmpfs", root: dir, note: "fresh tmpfs mount, size " + size}, undo, nil
	}
	_ = os.Remove(dir) // error deliberately ignored: unused
	if fsType("/dev/shm") != "tmpfs" {
		return target{}, nil, fmt.Errorf("-tmpfs: cannot mount tmpfs (%v) and /dev/shm is not a tmpfs", err)
	}
	dir, err2 := os.MkdirTemp("/dev/shm", "filestore-bench-")
	if err2 != nil {
		return target{}, nil, fmt.Errorf("-tmpfs: cannot mount tmpfs (%v) nor use /dev/shm: %w", err, err2)
	}
	undo := func() { _ = os.RemoveAll(dir) } // error deliberately ignored: best effort
	return target{name: "tmpfs", kind: "tmpfs", root: dir, note: fmt.Sprintf("mount failed (%v): using /dev/shm", err)}, undo, nil
}

// progress prints a one-line status to stderr, rewritten in place.
type progress struct {
	w     io.Writer
	start time.Time
	total int
	n     int
	last  int
}

func newProgress(w io.Writer) *progress { return &progress{w: w, start: time.Now()} }

func (p *progress) step(label string) {
	p.n++
	p.show(label)
}

func (p *progress) show(label string) {
	el := time.Since(p.start).Round(time.Second)
	line := fmt.Sprintf("[%d/%d %s] %s", p.n, p.total, el, label)
	pad := max(p.last-len(line), 0)
	p.last = len(line)
	fmt.Fprintf(p.w, "\r%s%s", line, strings.Repeat(" ", pad))
}

func (p *progress) done() {
	fmt.Fprintf(p.w, "\r%s\r", strings.Repeat(" ", p.last))
}

// defaultLayout is the layout of the comparison section: the core's.
var defaultLayout = filestore.DefaultLayout
