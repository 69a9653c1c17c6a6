package main

import (
	"encoding/csv"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"
)

// report renders the rows of a run.
type report struct {
	cfg     config
	targets []target
	rows    []row
	storage []usage
	// confirmed holds the paired rounds between the grid's best layout
	// and the default.
	confirmed []*confirmation
	took      time.Duration
}

func (r *report) write(w io.Writer) {
	fmt.Fprintf(w, "filestore bench  %s  %s/%s  %d CPUs  %s  took %s\n",
		time.Now().Format("2006-01-02 15:04 MST"), runtime.GOOS, runtime.GOARCH, runtime.NumCPU(), runtime.Version(), r.took.Round(time.Second))
	fmt.Fprintf(w, "kernel %s\ncommand: %s\n", kernel(), r.cfg.command)
	for _, t := range r.targets {
		fmt.Fprintf(w, "%-5s = %s (%s) %s\n", t.name, t.root, t.kind, t.note)
	}
	fmt.Fprintln(w, `
ops/s: operations per second (sweep: files examined per second; churn: a
login's Save and a logout's Delete count as two). p50/p99: latency of Load,
or of Save where a workload has no loads. vs raw: filestore / the raw
syscall recipe with the same fsyncs, measured alongside. load-hot and
read-hot send 90% of operations to 10% of the sessions. filestore-cache
has Options.CacheBytes set; its hits are the Loads that made no read
system call (from /proc/self/io, against the uncached filestore's reads
per Load). filestore-watch runs a Watch consumer in the same process.
memcopy is a Go map keyed by filestore.Key returning a copy: the least a
cached Load can cost.`)
	for _, sec := range []string{secCompare, secCache, secLayouts, secProcs} {
		var rows []row
		for _, x := range r.rows {
			if x.Section == sec && x.Trials == 0 {
				rows = append(rows, x)
			}
		}
		if len(rows) == 0 {
			continue
		}
		fmt.Fprintf(w, "\n== %s ==\n", sectionTitle(sec))
		var buf strings.Builder
		tw := tabwriter.NewWriter(&buf, 0, 0, 2, ' ', tabwriter.AlignRight)
		fmt.Fprintln(tw, "fs\tworkload\tpayload\tsessions\tlayout\tprocs\tsubject\tops/s\tp50 µs\tp99 µs\tallocs/op\tvs raw\t")
		prev := ""
		for _, x := range rows {
			// A blank line between settings; procs vary within one.
			k := x.key()
			if sec == secProcs {
				k = x.Workload + x.Subject
			}
			if k != prev && prev != "" {
				fmt.Fprintln(tw, "\t\t\t\t\t\t\t\t\t\t\t\t")
			}
			prev = k
			vs := ""
			if isFilestore(x.Subject) {
				if base, ok := r.find(x, rawOf(x.Subject)); ok && base.OpsPerSec > 0 {
					vs = fmt.Sprintf("%.2fx", x.OpsPerSec/base.OpsPerSec)
				}
			}
			subj := x.Subject
			if x.Errors > 0 {
				subj += fmt.Sprintf(" (%d errors: %s)", x.Errors, x.FirstErr)
			}
			if x.Workload == wlSweep && x.Removed > 0 {
				subj += fmt.Sprintf(" (removed %d)", x.Removed)
			}
			if h, ok := r.hitRate(x); ok {
				subj += fmt.Sprintf(" (%.0f%% hits)", 100*h)
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%d\t%s\t%s\t%s\t%s\t%.1f\t%s\t\n",
				x.FS, x.Workload, sizeName(x.Payload), count(x.Pop), x.Layout, x.Procs, subj,
				human(x.OpsPerSec), num(x.P50), num(x.P99), x.Allocs, vs)
		}
		_ = tw.Flush()
		for line := range strings.Lines(buf.String()) {
			fmt.Fprintln(w, strings.TrimRight(line, " \n"))
		}
		if sec == secCache {
			r.writeChanges(w)
		}
	}
	r.writeRatios(w)
	r.writeStorage(w)
	r.writeComparisons(w)
	if rec := r.recommend(); rec != "" {
		fmt.Fprintf(w, "\n== Recommendation ==\n%s\n", wrap(rec, 78))
	}
}

func sectionTitle(s string) string {
	switch s {
	case secCache:
		return "Cache: what a cached Load costs, and Loads right after another process's change"
	case secCompare:
		return "Comparison: filestore, the raw syscall recipes and other session stores (layout " + defaultLayout + ")"
	case secLayouts:
		return "Layout grid: filestore and the raw recipe on each shard layout"
	}
	return "Processes sharing one store (aggregate ops/s)"
}

// writeChanges prints the cache section's trials of another process's
// changes, for each filesystem.
func (r *report) writeChanges(w io.Writer) {
	for _, t := range r.targets {
		get := func(wl string) (row, bool) {
			for _, x := range r.rows {
				if x.FS == t.name && x.Section == secCache && x.Workload == wl && x.Trials > 0 {
					return x, true
				}
			}
			return row{}, false
		}
		del, okD := get(wlAfterDelete)
		sav, okS := get(wlAfterSave)
		if !okD && !okS {
			continue
		}
		fmt.Fprintf(w, "\n%s\n", wrap(fmt.Sprintf("%s, %s sessions of %s, CacheBytes %s: another process deletes or overwrites a session this one has just loaded twice, and answers with the time its call returned; right after the answer this process loads the session again. Stale reads are Loads that returned what the change had replaced; the time runs from the call's return to the Load that saw the change.",
			t.name, count(del.Pop), sizeName(del.Payload), human(float64(del.Cache))), 78))
		tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
		fmt.Fprintln(tw, "change\ttrials\tcached before\tstale reads\treturn -> Load saw it, p50\tp99")
		for _, x := range []row{del, sav} {
			if x.Trials == 0 {
				continue
			}
			fmt.Fprintf(tw, "%s\t%d\t%d\t%d\t%s µs\t%s µs\n", x.Workload, x.Trials, x.Cached, x.Stale, num(x.P50), num(x.P99))
		}
		_ = tw.Flush()
		cached := del.Cached + sav.Cached
		switch {
		case cached == 0:
			fmt.Fprintln(w, wrap("No session was served from the cache before its change (no Load made zero read system calls, or /proc/self/io is not available): these trials say nothing about the cache. Is Options.CacheBytes supported by this build of filestore?", 78))
		case del.Stale+sav.Stale == 0:
			fmt.Fprintln(w, wrap(fmt.Sprintf("No stale reads: in each of the %d trials with the session cached, the first Load after the answer saw the change, so the window is the answer's trip and one Load.", cached), 78))
		default:
			fmt.Fprintln(w, wrap(fmt.Sprintf("STALE READS: %d trials served what another process had already replaced.", del.Stale+sav.Stale), 78))
		}
		if ev, ok := get(wlEventLag); ok {
			switch {
			case ev.Ops > 0:
				fmt.Fprintln(w, wrap(fmt.Sprintf("Watch events of the same changes: %d of %d arrived after the call returned, %s µs (p50) and %s µs (p99) after it; %d before it (a synced call's fsync follows its rename or unlink). A cache dropped on events alone would serve stale data in that window.",
					ev.Ops, ev.Trials, num(ev.P50), num(ev.P99), ev.Early), 78))
			case ev.Early > 0:
				fmt.Fprintln(w, wrap(fmt.Sprintf("Watch events of the same changes: %d of %d arrived before the call returned (a synced call's fsync follows its rename or unlink), so here events alone would have been in time; on a busier machine or with NoSync they need not be.", ev.Early, ev.Trials), 78))
			}
		}
		// The cost of validating a hit: a cached Load against a map lookup
		// and copy, which validates nothing.
		var hit, mem, unc row
		for _, x := range r.rows {
			if x.FS == t.name && x.Section == secCache && x.Workload == wlLoad && x.Trials == 0 {
				switch x.Subject {
				case subjFilestoreCache:
					hit = x
				case subjMemcopy:
					mem = x
				case subjFilestore:
					unc = x
				}
			}
		}
		if h, ok := r.hitRate(hit); ok && h > 0.99 && mem.P50 > 0 && unc.P50 > 0 {
			fmt.Fprintln(w, wrap(fmt.Sprintf("A cached Load takes %s µs (p50) against %s µs uncached and %s µs for a map lookup and copy: validating a hit and the cache's bookkeeping cost at most %s µs a Load.",
				num(hit.P50), num(unc.P50), num(mem.P50), num(max(hit.P50-mem.P50, 0))), 78))
		}
	}
}

// find returns the row of subject measured alongside x.
func (r *report) find(x row, subject string) (row, bool) {
	for _, y := range r.rows {
		if y.Subject == subject && y.key() == x.key() {
			return y, true
		}
	}
	return row{}, false
}

// writeRatios prints, for each comparison setting, how filestore's figure
// compares with every other subject's.
func (r *report) writeRatios(w io.Writer) {
	if !slices.ContainsFunc(r.rows, func(x row) bool { return x.Section == secCompare }) {
		return
	}
	fmt.Fprintln(w, "\n== Ratios: filestore figure / other figure, same run, same setting ==")
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	for _, x := range r.rows {
		if x.Section != secCompare || !isFilestore(x.Subject) {
			continue
		}
		var parts []string
		for _, y := range r.rows {
			if y.key() != x.key() || isFilestore(y.Subject) || y.OpsPerSec == 0 {
				continue
			}
			// Compare like with like: synced writes with synced ones.
			synced := !strings.HasSuffix(x.Subject, "-nosync")
			if hasSyncVariant(y.Subject) && strings.HasSuffix(y.Subject, "-nosync") == synced {
				continue
			}
			parts = append(parts, fmt.Sprintf("%s %.2fx", y.Subject, x.OpsPerSec/y.OpsPerSec))
		}
		fmt.Fprintf(tw, "%s %s %s %s\t%s\t%s\n", x.FS, x.Workload, sizeName(x.Payload), count(x.Pop), x.Subject, strings.Join(parts, ", "))
	}
	_ = tw.Flush()
}

// hasSyncVariant reports whether subject is one of a synced and an
// unsynced pair.
func hasSyncVariant(subject string) bool {
	switch subject {
	case subjRaw, subjRawNoSync, subjBolt, subjBoltNoSync:
		return true
	}
	return false
}

func (r *report) writeStorage(w io.Writer) {
	if len(r.storage) == 0 {
		return
	}
	fmt.Fprintln(w, "\n== Space on disk after populating (30% of sessions expired, not yet swept) ==")
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "fs\tsection\tpayload\tsessions\tlayout\tstore\tbytes\tinodes\tbytes/session\t")
	for _, u := range r.storage {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%d\t%d\t\n", u.FS, u.Section, sizeName(u.Payload), count(u.Pop), u.Layout, u.Family,
			human(float64(u.Bytes)), u.Inodes, u.Bytes/int64(max(u.Pop, 1)))
	}
	_ = tw.Flush()
}

// comparison is one line of "How filestore compares here": a ratio of
// two figures measured in the same rounds of this run.
type comparison struct {
	fs      string
	what    string // filestore's figure
	against string // the other figure
	ratio   float64
	// limit is what the raw syscall recipe itself reaches against the same
	// competitor in the same rounds: no store that names files by path
	// can do better here. 0 where it does not apply.
	limit float64
	where string
	lower bool // a lower ratio is better
}

// ratio returns the rate of subject a over subject b in the comparison
// section, workload w and payload, and a's row.
func (r *report) ratio(fs, w string, payload int, a, b string) (float64, row, bool) {
	for _, x := range r.rows {
		if x.FS == fs && x.Section == secCompare && x.Workload == w && x.Payload == payload && x.Subject == a {
			if y, ok := r.find(x, b); ok && y.OpsPerSec > 0 && x.OpsPerSec > 0 {
				return x.OpsPerSec / y.OpsPerSec, x, true
			}
		}
	}
	return 0, row{}, false
}

// comparisons returns a line for every ratio this run measured, and none
// for what it did not.
func (r *report) comparisons() []comparison {
	var out []comparison
	if len(r.cfg.payloads) == 0 {
		return nil
	}
	p := r.cfg.payloads[0]
	for _, t := range r.targets {
		fs := t.name
		add := func(what, against, w, a, b string) {
			got, x, ok := r.ratio(fs, w, p, a, b)
			if !ok {
				return
			}
			c := comparison{fs: fs, what: what, against: against, ratio: got, where: fmt.Sprintf("%s %s", sizeName(p), count(x.Pop))}
			if a == subjFilestoreCache {
				if h, ok := r.hitRate(x); ok {
					c.where += fmt.Sprintf(", %.0f%% hits", 100*h)
				}
			} else if b != subjRaw && b != subjRawNoSync && !isFilestore(b) && !inMemory(b) {
				c.limit, _, _ = r.ratio(fs, w, p, rawOf(a), b)
			}
			out = append(out, c)
		}
		add("Load", "raw open+read+close", wlLoad, subjFilestore, subjRaw)
		add("Load", "gorilla Get", wlLoad, subjFilestore, subjGorilla)
		add("Load", "diskv Read", wlLoad, subjFilestore, subjDiskv)
		add("Load", "bbolt Find (scs)", wlLoad, subjFilestore, subjBolt)
		add("Save", "raw temp+rename, same fsyncs", wlSave, subjFilestore, subjRaw)
		add("Save, NoSync", "raw temp+rename, no fsync", wlSave, subjFilestoreNoSync, subjRawNoSync)
		add("Save", "gorilla Save (no fsync)", wlSave, subjFilestore, subjGorilla)
		add("Save, NoSync", "gorilla Save (no fsync)", wlSave, subjFilestoreNoSync, subjGorilla)
		add("Load, cache, hot set", "bbolt Find (scs)", wlLoadHot, subjFilestoreCache, subjBolt)
		add("Load, cache, hot set", "scs memstore Find", wlLoadHot, subjFilestoreCache, subjMemstore)
		add("Load, cache, hot set", "map lookup + copy", wlLoadHot, subjFilestoreCache, subjMemcopy)
		add("Load, cache, hot set", "Load, no cache", wlLoadHot, subjFilestoreCache, subjFilestore)
		add("Load, cache, uniform", "bbolt Find (scs)", wlLoad, subjFilestoreCache, subjBolt)
		add("Load, cache, uniform", "scs memstore Find", wlLoad, subjFilestoreCache, subjMemstore)
		add("Load, cache, uniform", "Load, no cache", wlLoad, subjFilestoreCache, subjFilestore)
		add("read-heavy, cache, hot set", "bbolt (scs)", wlReadHot, subjFilestoreCache, subjBolt)
		add("read-heavy, cache, hot set", "read-heavy, no cache", wlReadHot, subjFilestoreCache, subjFilestore)
		add("Save, cache", "Save, no cache", wlSave, subjFilestoreCache, subjFilestore)
		add("Save, Watch consumer running", "Save, no Watch", wlSave, subjFilestoreWatch, subjFilestore)
		if got, x, ok := r.procRatio(fs, wlLoad, subjFilestore); ok {
			c := comparison{fs: fs, what: fmt.Sprintf("Load, %d processes", x.Procs), against: "Load, 1 process", ratio: got,
				where: fmt.Sprintf("%s %s", sizeName(x.Payload), count(x.Pop))}
			c.limit, _, _ = r.procRatio(fs, wlLoad, subjRaw)
			out = append(out, c)
		}
		for _, l := range r.cfg.layouts {
			var got float64
			var pop int
			for _, x := range r.rows {
				if x.FS == fs && x.Section == secLayouts && x.Workload == wlSweep && x.Layout == l && x.Subject == subjFilestore && x.Pop >= pop {
					if y, found := r.find(x, subjRaw); found && y.OpsPerSec > 0 {
						got, pop = x.OpsPerSec/y.OpsPerSec, x.Pop
					}
				}
			}
			if pop > 0 {
				out = append(out, comparison{fs: fs, what: "Sweep, " + l, against: "raw walk+lstat+unlink", ratio: got, where: count(pop)})
			}
		}
		// Load p50 at the largest population against the smallest.
		var lo, hi row
		for _, x := range r.rows {
			if x.FS == fs && x.Section == secLayouts && x.Workload == wlLoad && x.Layout == defaultLayout && x.Subject == subjFilestore {
				if lo.Pop == 0 || x.Pop < lo.Pop {
					lo = x
				}
				if x.Pop > hi.Pop {
					hi = x
				}
			}
		}
		if lo.Pop > 0 && hi.Pop > lo.Pop && lo.P50 > 0 {
			out = append(out, comparison{fs: fs, what: "Load p50 at " + count(hi.Pop), against: "at " + count(lo.Pop), ratio: hi.P50 / lo.P50, lower: true,
				where: fmt.Sprintf("%s vs %s µs, %s", num(hi.P50), num(lo.P50), defaultLayout)})
		}
	}
	return out
}

// procRatio returns the aggregate rate of the most processes over one.
func (r *report) procRatio(fs, w, subject string) (float64, row, bool) {
	var one, most row
	for _, x := range r.rows {
		if x.FS == fs && x.Section == secProcs && x.Workload == w && x.Subject == subject {
			if x.Procs == 1 {
				one = x
			}
			if x.Procs > most.Procs {
				most = x
			}
		}
	}
	if one.OpsPerSec == 0 || most.Procs <= 1 {
		return 0, row{}, false
	}
	return most.OpsPerSec / one.OpsPerSec, most, true
}

func (r *report) writeComparisons(w io.Writer) {
	cs := r.comparisons()
	if len(cs) == 0 {
		return
	}
	fmt.Fprintln(w, "\n== How filestore compares here ==")
	fmt.Fprintln(w, wrap("Each ratio is filestore's rate over the other figure's, measured in the same rounds of this run: above 1.00x filestore is faster (for latency, marked \"lower is better\", below). \"raw recipe\" is the bare syscall recipe's own ratio against the same store: no store that names files by path can do better here.", 78))
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "fs\tfilestore\tagainst\tratio\traw recipe\tsetting")
	for _, c := range cs {
		limit := "-"
		if c.limit > 0 {
			limit = fmt.Sprintf("%.2fx", c.limit)
		}
		ratio := fmt.Sprintf("%.2fx", c.ratio)
		if c.lower {
			ratio += " (lower is better)"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", c.fs, c.what, c.against, ratio, limit, c.where)
	}
	_ = tw.Flush()
}

// hitRate returns the share of x's Loads that a cache answered without
// reading the file: one minus its read system calls per Load over those of
// the uncached filestore in the same rounds. It is false where the
// counts are not available.
func (r *report) hitRate(x row) (float64, bool) {
	if x.Subject != subjFilestoreCache || x.Reads < 0 || x.Loads == 0 {
		return 0, false
	}
	y, ok := r.find(x, subjFilestore)
	if !ok || y.Reads <= 0 || y.Loads == 0 {
		return 0, false
	}
	per := float64(x.Reads) / float64(x.Loads)
	base := float64(y.Reads) / float64(y.Loads)
	return min(max(1-per/base, 0), 1), true
}

// files writes results.csv, storage.csv and chart.svg into dir, each only
// if it has something to hold, and returns the paths it wrote.
func (r *report) files(dir string) ([]string, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	var wrote []string
	var recs [][]string
	recs = append(recs, []string{"fs", "section", "workload", "payload_bytes", "sessions", "layout", "procs", "subject",
		"ops", "seconds", "ops_per_sec", "p50_us", "p99_us", "allocs_per_op", "vs_raw", "removed", "errors",
		"cache_bytes", "hit_rate", "stale"})
	for _, x := range r.rows {
		vs := ""
		if isFilestore(x.Subject) {
			if base, ok := r.find(x, rawOf(x.Subject)); ok && base.OpsPerSec > 0 {
				vs = strconv.FormatFloat(x.OpsPerSec/base.OpsPerSec, 'f', 3, 64)
			}
		}
		hit := ""
		if h, ok := r.hitRate(x); ok {
			hit = ff(h)
		}
		cache := ""
		if x.Cache > 0 {
			cache = strconv.FormatInt(x.Cache, 10)
		}
		stale := ""
		if x.Section == secCache && x.Trials > 0 {
			stale = strconv.FormatInt(x.Stale, 10)
		}
		recs = append(recs, []string{x.FS, x.Section, x.Workload, strconv.Itoa(x.Payload), strconv.Itoa(x.Pop), x.Layout,
			strconv.Itoa(x.Procs), x.Subject, strconv.FormatInt(x.Ops, 10), ff(x.Secs), ff(x.OpsPerSec), ff(x.P50), ff(x.P99),
			ff(x.Allocs), vs, strconv.Itoa(x.Removed), strconv.FormatInt(x.Errors, 10), cache, hit, stale})
	}
	if len(r.rows) > 0 {
		p := filepath.Join(dir, "results.csv")
		if err := writeCSV(p, recs); err != nil {
			return wrote, err
		}
		wrote = append(wrote, p)
	}
	if len(r.storage) > 0 {
		recs = [][]string{{"fs", "section", "payload_bytes", "sessions", "layout", "store", "bytes", "inodes"}}
		for _, u := range r.storage {
			recs = append(recs, []string{u.FS, u.Section, strconv.Itoa(u.Payload), strconv.Itoa(u.Pop), u.Layout, u.Family,
				strconv.FormatInt(u.Bytes, 10), strconv.FormatInt(u.Inodes, 10)})
		}
		p := filepath.Join(dir, "storage.csv")
		if err := writeCSV(p, recs); err != nil {
			return wrote, err
		}
		wrote = append(wrote, p)
	}
	if svg := r.chart(); svg != nil {
		p := filepath.Join(dir, "chart.svg")
		if err := os.WriteFile(p, svg, 0o644); err != nil {
			return wrote, err
		}
		wrote = append(wrote, p)
	}
	return wrote, nil
}

func writeCSV(path string, recs [][]string) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	w := csv.NewWriter(f)
	if err := w.WriteAll(recs); err != nil {
		_ = f.Close() // error deliberately ignored: already failing
		return err
	}
	return f.Close()
}

func ff(v float64) string { return strconv.FormatFloat(v, 'f', 3, 64) }

// human formats a rate or size with a k/M suffix and three significant
// digits.
func human(v float64) string {
	switch {
	case v >= 1e9:
		return fmt.Sprintf("%.3gG", v/1e9)
	case v >= 1e6:
		return fmt.Sprintf("%.3gM", v/1e6)
	case v >= 1e3:
		return fmt.Sprintf("%.3gk", v/1e3)
	}
	return fmt.Sprintf("%.3g", v)
}

func num(v float64) string {
	if v >= 100 {
		return fmt.Sprintf("%.0f", v)
	}
	return fmt.Sprintf("%.3g", v)
}

func kernel() string {
	b, err := os.ReadFile("/proc/sys/kernel/osrelease")
	if err != nil {
		return "unknown"
	}
	return strings.TrimSpace(string(b))
}

func wrap(s string, width int) string {
	var b strings.Builder
	n := 0
	for i, word := range strings.Fields(s) {
		if i > 0 && n+1+len(word) > width {
			b.WriteByte('\n')
			n = 0
		} else if i > 0 {
			b.WriteByte(' ')
			n++
		}
		b.WriteString(word)
		n += len(word)
	}
	return b.String()
}
