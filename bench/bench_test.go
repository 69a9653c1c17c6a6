package main

import (
	"bytes"
	"encoding/csv"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestMain lets the test binary act as a worker process of the
// multi-process section, as the bench binary does.
func TestMain(m *testing.M) {
	if os.Getenv(workerEnv) != "" {
		os.Exit(workerMain(os.Stdin, os.Stdout))
	}
	os.Exit(m.Run())
}

// TestQuickRun runs every section on a tiny population, so that the tool
// cannot rot: it must produce rows for every section, a CSV and a chart,
// and filestore must make no errors. It asserts nothing about speed.
func TestQuickRun(t *testing.T) {
	tmp := t.TempDir()
	out := filepath.Join(tmp, "out")
	cfg, err := parseFlags([]string{
		"-quick", "-dir", filepath.Join(tmp, "data"), "-out", out,
		"-pops", "300", "-compare-pop", "300", "-round", "5ms", "-procs", "1,2",
		"-sessions", "250000",
	}, 0)
	if err != nil {
		t.Fatal(err)
	}
	var stdout, stderr bytes.Buffer
	if err := run(cfg, &stdout, &stderr); err != nil {
		t.Fatalf("run: %v\nstderr: %s", err, stderr.String())
	}
	report := stdout.String()
	for _, want := range []string{"== Comparison", "== Layout grid", "== Processes", "== How filestore compares here", "== Recommendation", "use Layout", "== Cache", "stale reads"} {
		if !strings.Contains(report, want) {
			t.Errorf("report lacks %q", want)
		}
	}

	// The output speaks to users: nothing about where its checks came
	// from, nothing it did not measure.
	for _, bad := range []string{"issue", "#4", "not measured", "target"} {
		if strings.Contains(strings.ToLower(report), bad) {
			t.Errorf("report mentions %q", bad)
		}
	}

	f, err := os.Open(filepath.Join(out, "results.csv"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	recs, err := csv.NewReader(f).ReadAll()
	if err != nil {
		t.Fatal(err)
	}
	col := map[string]int{}
	for i, name := range recs[0] {
		col[name] = i
	}
	seen := map[string]bool{}
	for _, r := range recs[1:] {
		sec, w, subj := r[col["section"]], r[col["workload"]], r[col["subject"]]
		seen[sec+"/"+w+"/"+subj] = true
		if r[col["errors"]] != "0" && isFilestore(subj) {
			t.Errorf("%s %s %s %s: %s errors", sec, w, r[col["layout"]], subj, r[col["errors"]])
		}
		// An event-lag row counts only events later than their change,
		// and on a synced store there may be none.
		if r[col["ops"]] == "0" && w != wlEventLag {
			t.Errorf("%s %s %s: no operations", sec, w, subj)
		}
		if st := r[col["stale"]]; st != "" && st != "0" {
			t.Errorf("%s %s: %s stale reads after another process's change", sec, w, st)
		}
	}
	for _, want := range []string{
		"compare/load/filestore", "compare/load/raw", "compare/load/gorilla", "compare/load/diskv",
		"compare/load/bbolt", "compare/load/memstore", "compare/save/filestore-nosync",
		"compare/churn/filestore", "compare/sweep/filestore", "compare/sweep/bbolt",
		"layouts/load/filestore", "layouts/sweep/raw", "procs/load/filestore", "procs/mixed/raw",
		"compare/load-hot/filestore-cache", "compare/read-hot/bbolt", "compare/save/filestore-cache",
		"compare/save/filestore-watch", "compare/load/memcopy",
		"cache/load/filestore-cache", "cache/after-delete/filestore-cache", "cache/after-save/filestore-cache",
	} {
		if !seen[want] {
			t.Errorf("results.csv has no row for %s", want)
		}
	}
	// Sweeps must remove exactly the expired 30%.
	for _, r := range recs[1:] {
		if r[col["workload"]] == wlSweep && r[col["removed"]] != "90" {
			t.Errorf("%s sweep of %s on %s removed %s records, want 90", r[col["subject"]], r[col["sessions"]], r[col["layout"]], r[col["removed"]])
		}
	}

	svg, err := os.ReadFile(filepath.Join(out, "chart.svg"))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.HasPrefix(svg, []byte("<svg")) || !bytes.Contains(svg, []byte("<rect")) {
		t.Errorf("chart.svg is not a bar chart: %.80s", svg)
	}
	if bytes.Contains(svg, []byte("not measured")) {
		t.Error("chart.svg has an empty panel")
	}
	if _, err := os.Stat(filepath.Join(tmp, "data")); err == nil {
		if ents, _ := os.ReadDir(filepath.Join(tmp, "data")); len(ents) > 0 {
			t.Errorf("data directory not cleaned up: %d entries left", len(ents))
		}
	}
}

// gridReport returns a report whose layout grid scored flat against 1x2
// (the default) at the given rates, with the given paired rounds.
func gridReport(flat, def float64, ratios []float64) report {
	r := report{cfg: config{sessions: 10000, layouts: []string{"flat", defaultLayout}}, targets: []target{{name: "disk"}}}
	for _, w := range []string{wlLoad, wlRead, wlSave, wlSweep} {
		r.rows = append(r.rows,
			row{FS: "disk", Section: secLayouts, Workload: w, Pop: 10000, Layout: "flat", Subject: subjFilestore, OpsPerSec: flat},
			row{FS: "disk", Section: secLayouts, Workload: w, Pop: 10000, Layout: defaultLayout, Subject: subjFilestore, OpsPerSec: def})
	}
	if ratios != nil {
		r.confirmed = []*confirmation{{fs: "disk", best: "flat", ref: defaultLayout, pop: 10000, ratios: ratios}}
	}
	return r
}

// TestRecommendKeepsDefaultWithinNoise checks that a layout ahead of the
// default in the grid replaces it only when the paired rounds put its lead
// beyond the run's noise, and that otherwise the report says they tie.
func TestRecommendKeepsDefaultWithinNoise(t *testing.T) {
	for _, tc := range []struct {
		name   string
		ratios []float64
		want   string
		tie    bool
	}{
		// 0.89 against 0.87 in the grid, and rounds that disagree.
		{"noisy rounds", []float64{1.04, 0.98, 1.03, 0.99, 1.02}, defaultLayout, true},
		// A steady lead smaller than the floor is not worth a move.
		{"small steady lead", []float64{1.01, 1.012, 1.011, 1.009}, defaultLayout, true},
		{"slower in the rounds", []float64{0.95, 0.97, 0.96}, defaultLayout, false},
		{"slower within noise", []float64{0.92, 1.03, 0.97}, defaultLayout, true},
		{"clear lead", []float64{1.10, 1.12, 1.09, 1.11}, "flat", false},
		{"never confirmed", nil, defaultLayout, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := gridReport(0.89, 0.87, tc.ratios)
			got := r.recommend()
			if !strings.Contains(got, `use Layout "`+tc.want+`"`) {
				t.Errorf("recommend() = %q, want %s", got, tc.want)
			}
			if strings.Contains(got, "the layouts tie here (within") != tc.tie {
				t.Errorf("recommend() = %q: says they tie: %v, want %v", got, !tc.tie, tc.tie)
			}
		})
	}
}

// TestRecommendDefaultBest checks that no confirmation is needed when the
// default layout scored best.
func TestRecommendDefaultBest(t *testing.T) {
	r := gridReport(500, 1000, nil)
	if got := r.recommend(); !strings.Contains(got, `use Layout "`+defaultLayout+`"`) || strings.Contains(got, "tie") {
		t.Errorf("recommend() = %q, want %s without a tie", got, defaultLayout)
	}
}

// TestDecideAndSettled checks the noise arithmetic: the interval shrinks
// as steady rounds are added, and rounds stop once the lead is clear.
func TestDecideAndSettled(t *testing.T) {
	if _, _, wins := decide([]float64{1.2}); wins {
		t.Error("one round decided a lead: there is no noise to compare with")
	}
	lead, noise, wins := decide([]float64{1.05, 1.06, 1.05, 1.06, 1.05, 1.06})
	if !wins || lead < 0.05 || lead > 0.06 || noise < minLead {
		t.Errorf("steady 5.5%% lead: lead %.3f noise %.3f wins %v", lead, noise, wins)
	}
	if _, noise2, _ := decide([]float64{1.05, 1.06}); noise2 <= noise {
		t.Errorf("two rounds gave noise %.3f, not above six rounds' %.3f", noise2, noise)
	}
	if settled([]float64{1.08, 0.93, 1.05}) {
		t.Error("rounds that disagree settled")
	}
	if !settled([]float64{0.90, 0.91, 0.90}) {
		t.Error("a steady 10% loss did not settle")
	}
}

func TestHistogramQuantiles(t *testing.T) {
	var h hist
	for i := 1; i <= 100; i++ {
		h.add(time.Duration(i) * time.Microsecond)
	}
	if p50 := h.quantile(0.5); p50 < 45 || p50 > 56 {
		t.Errorf("p50 = %.1fµs, want about 50", p50)
	}
	if p99 := h.quantile(0.99); p99 < 88 || p99 > 112 {
		t.Errorf("p99 = %.1fµs, want about 100", p99)
	}
}

func TestParseFlagsRejectsBadInput(t *testing.T) {
	for _, args := range [][]string{
		{"-layouts", "3x3"}, {"-pops", "ten"}, {"-payloads", "1"}, {"-sections", "everything"}, {"-dir", ""},
	} {
		if _, err := parseFlags(args, 0); err == nil {
			t.Errorf("parseFlags(%q) succeeded", args)
		}
	}
}

// TestRunDirRemovesOnlyWhatItMade checks that a run removes its own folder
// and the directories it had to create, never a directory that was there
// before, even an empty one, nor anything else put in it.
func TestRunDirRemovesOnlyWhatItMade(t *testing.T) {
	t.Run("existing empty dir", func(t *testing.T) {
		dir := filepath.Join(t.TempDir(), "mine")
		if err := os.Mkdir(dir, 0o700); err != nil {
			t.Fatal(err)
		}
		root, undo, err := makeRunDir(dir, false)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(undo)
		if filepath.Dir(root) != dir {
			t.Fatalf("run folder %s is not inside %s", root, dir)
		}
		if err := os.WriteFile(filepath.Join(root, "f"), nil, 0o600); err != nil {
			t.Fatal(err)
		}
		undo()
		if _, err := os.Stat(root); !os.IsNotExist(err) {
			t.Errorf("run folder still there: %v", err)
		}
		if _, err := os.Stat(dir); err != nil {
			t.Errorf("the user's directory was removed: %v", err)
		}
	})
	t.Run("missing dirs", func(t *testing.T) {
		base := t.TempDir()
		dir := filepath.Join(base, "a", "b")
		_, undo, err := makeRunDir(dir, false)
		if err != nil {
			t.Fatal(err)
		}
		undo()
		if _, err := os.Stat(filepath.Join(base, "a")); !os.IsNotExist(err) {
			t.Errorf("directories the run created are still there: %v", err)
		}
		if _, err := os.Stat(base); err != nil {
			t.Errorf("a directory that existed before was removed: %v", err)
		}
	})
	t.Run("missing dir that gained a file", func(t *testing.T) {
		dir := filepath.Join(t.TempDir(), "new")
		_, undo, err := makeRunDir(dir, false)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, "theirs"), nil, 0o600); err != nil {
			t.Fatal(err)
		}
		undo()
		if _, err := os.Stat(filepath.Join(dir, "theirs")); err != nil {
			t.Errorf("a file the run did not write was removed: %v", err)
		}
	})
	t.Run("keep", func(t *testing.T) {
		root, undo, err := makeRunDir(filepath.Join(t.TempDir(), "k"), true)
		if err != nil {
			t.Fatal(err)
		}
		undo()
		if _, err := os.Stat(root); err != nil {
			t.Errorf("-keep removed the run folder: %v", err)
		}
	})
}

// staleKV is a filestore with a cache that is never invalidated: the
// mistake the cache section exists to catch.
type staleKV struct {
	fileKV
	memo map[string][]byte
}

func (s *staleKV) Load(id string) ([]byte, error) {
	if b, ok := s.memo[id]; ok {
		return b, nil
	}
	b, err := s.fileKV.Load(id)
	if err == nil {
		s.memo[id] = bytes.Clone(b)
	}
	return b, err
}

// TestChangesCatchStaleCache checks that the cache section notices a cache
// that serves sessions another process has deleted or replaced, and that
// it sees such a cache's hits as cached.
func TestChangesCatchStaleCache(t *testing.T) {
	cfg, err := parseFlags([]string{"-quick", "-compare-pop", "40", "-round", "5ms", "-sections", "cache"}, 0)
	if err != nil {
		t.Fatal(err)
	}
	var stderr bytes.Buffer
	b := &bench{cfg: cfg, progress: newProgress(&stderr)}
	root := t.TempDir()
	s := setting{fs: "disk", section: secCache, payload: cfg.payloads[0], pop: cfg.cachePop(), layout: defaultLayout, procs: 1}
	a := &arena{kvs: map[string]kv{}, drivers: map[string]*driver{}}
	t.Cleanup(a.close)
	if err := b.open(a, s, root, cacheSubjects); err != nil {
		t.Fatal(err)
	}
	fk := a.kvs[subjFilestoreCache].(fileKV)
	a.kvs[subjFilestoreCache] = &staleKV{fileKV: fk, memo: map[string][]byte{}}
	if err := b.measureChanges(a, s, root); err != nil {
		t.Fatal(err)
	}
	for _, x := range b.rows {
		if x.Workload != wlAfterDelete && x.Workload != wlAfterSave {
			continue
		}
		if x.Trials == 0 || x.Stale == 0 {
			t.Errorf("%s: %d trials, %d stale reads from a cache that is never invalidated", x.Workload, x.Trials, x.Stale)
		}
		// Another goroutine's read (the Watch's) can fall between the
		// samples of a trial, so most, not all, must be seen as cached.
		if readSyscalls() >= 0 && x.Cached < x.Trials/2 {
			t.Errorf("%s: %d of %d trials seen as cached, want most", x.Workload, x.Cached, x.Trials)
		}
	}
}
