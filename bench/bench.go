package main

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
)

// row is one measured figure: a subject running a workload in one setting.
type row struct {
	FS       string // "disk" or "tmpfs"
	Section  string
	Workload string
	Payload  int
	Pop      int
	Layout   string
	Procs    int
	Subject  string

	Ops       int64
	Secs      float64
	OpsPerSec float64 // for sweeps: files examined per second
	P50, P99  float64 // microseconds
	Allocs    float64 // per operation
	Removed   int     // sweeps: records removed
	Errors    int64
	FirstErr  string

	Loads int64 // how many of Ops were Loads
	Reads int64 // read system calls during the rounds; -1 if unknown
	Cache int64 // filestore-cache: its CacheBytes

	// The cache section's trials of another process's changes: how many,
	// how many had the session cached before the change, and how many
	// Loads then returned what the change had replaced.
	Trials, Cached, Stale int64
	Early                 int64 // events that arrived before the call returned

	// Rounds holds the rate of each round, for the noise of the run.
	Rounds []float64
}

// key identifies the setting of a row; rows with equal keys were measured
// side by side and may be compared.
func (r row) key() string {
	return fmt.Sprintf("%s|%s|%s|%d|%d|%s|%d", r.FS, r.Section, r.Workload, r.Payload, r.Pop, r.Layout, r.Procs)
}

// usage is the space a population takes.
type usage struct {
	FS, Section, Layout, Family string
	Payload, Pop                int
	Bytes, Inodes               int64
}

// bench holds a planned run: its tasks, and the rows they produce.
type bench struct {
	cfg      config
	progress *progress
	tasks    []task
	rows     []row
	storage  []usage
	// recFS is the filesystem the layout recommendation is for, and
	// confirmed the outcome of its paired rounds.
	recFS     string
	confirmed []*confirmation
}

type task struct {
	label string
	fn    func() error
}

func (b *bench) add(label string, fn func() error) {
	b.tasks = append(b.tasks, task{label, fn})
}

func (b *bench) execute() error {
	b.progress.total = len(b.tasks)
	for _, t := range b.tasks {
		b.progress.step(t.label)
		if err := t.fn(); err != nil {
			return fmt.Errorf("%s: %w", t.label, err)
		}
	}
	return nil
}

func (b *bench) has(section string) bool { return slices.Contains(b.cfg.sections, section) }

// setting is the part of a row that a group of measurements shares.
type setting struct {
	fs, section  string
	payload, pop int
	layout       string
	procs        int
}

func (s setting) label(w string) string {
	return fmt.Sprintf("%s %s %s %s %s sessions %s", s.fs, s.section, w, sizeName(s.payload), count(s.pop), s.layout)
}

// arena is a set of open subjects sharing populations: subjects of one
// family use one directory and one *population.
type arena struct {
	kvs     map[string]kv
	drivers map[string]*driver
	dirs    []string
}

// open opens the given subjects under root and populates each family once.
func (b *bench) open(a *arena, s setting, root string, subjects []string) error {
	pl := payloads(s.payload)
	pops := map[string]*population{}
	for i, subj := range subjects {
		fam := family(subj)
		if ownPopulation(subj) {
			fam = subj
		}
		dir := filepath.Join(root, fam)
		k, err := openSubject(subj, dir, s.layout, b.cacheFor(s))
		if err != nil {
			return fmt.Errorf("open %s: %w", subj, err)
		}
		a.kvs[subj] = k
		pop, ok := pops[fam]
		d := newDriver(k, pop, pl, uint64(i+1), "n"+subj)
		if !ok {
			pop = newPopulation(s.pop)
			pops[fam] = pop
			d.pop = pop
			a.dirs = append(a.dirs, dir)
			if err := b.populate(s, subj, dir, k, pop, pl); err != nil {
				return fmt.Errorf("%s: %w", subj, err)
			}
			// The confirming rounds' populations repeat the grid's.
			if !inMemory(subj) && s.section != secConfirm {
				by, in := diskUsage(dir)
				b.storage = append(b.storage, usage{FS: s.fs, Section: s.section, Layout: s.layout, Family: fam, Payload: s.payload, Pop: s.pop, Bytes: by, Inodes: in})
			}
		}
		a.drivers[subj] = d
	}
	return nil
}

// populate fills dir with pop through a no-sync opener of subject (or
// through k itself, for subjects whose population lives in k), then flushes
// the filesystem so that the measurements do not pay for its writeback.
func (b *bench) populate(s setting, subj, dir string, k kv, pop *population, pl [][]byte) error {
	pk := k
	switch family(subj) {
	case subjFilestore, subjRaw, subjBolt:
		var err error
		if pk, err = openPopulator(subj, dir, s.layout); err != nil {
			return err
		}
		defer pk.Close()
	}
	if g, ok := k.(*gorillaKV); ok {
		pk = g // its cookie jar must learn every id
	}
	label := s.label("populate " + subj)
	d := newDriver(pk, pop, pl, 0, "")
	if err := d.populate(func(done int) {
		b.progress.show(fmt.Sprintf("%s %d%%", label, done*100/s.pop))
	}); err != nil {
		return err
	}
	if inMemory(subj) {
		return nil
	}
	return syncFS(dir)
}

func (a *arena) close() {
	for _, k := range a.kvs {
		_ = k.Close() // error deliberately ignored: the data is removed next
	}
	for _, d := range a.dirs {
		_ = os.RemoveAll(d) // error deliberately ignored: best effort
	}
}

// cacheFor returns the CacheBytes of the filestore-cache subject in setting
// s: -cache-bytes, or by default a fifth of the population's payload
// bytes, which holds the hot set of a hot workload but not every session.
func (b *bench) cacheFor(s setting) int64 {
	if b.cfg.cacheBytes > 0 {
		return b.cfg.cacheBytes
	}
	if s.section == secCache {
		// Twice the payloads: room for every session and its overhead.
		return 2 * int64(s.pop) * int64(s.payload)
	}
	return int64(s.pop) * int64(s.payload) / 5
}

// warms reports whether workload w leaves a cache in a steady state that
// an untimed round should reach before each timed one.
func warms(w string) bool {
	switch w {
	case wlLoad, wlRead, wlMixed, wlLoadHot, wlReadHot:
		return true
	}
	return false
}

// measure runs workload w on each subject in interleaved rounds, rotating
// the order each round, and records a row per subject.
func (b *bench) measure(a *arena, s setting, w string, subjects []string) {
	res := make(map[string]*result, len(subjects))
	for _, subj := range subjects {
		res[subj] = &result{}
	}
	var secs = map[string]float64{}
	perRound := map[string][]float64{}
	rounds := b.cfg.rounds
	if w == wlSweep {
		rounds = 1 // a sweep changes what it measures
	}
	for r := range rounds {
		for i := range subjects {
			subj := subjects[(i+r)%len(subjects)]
			// A cache starts empty, and the other subjects' Saves since its
			// last round have invalidated part of it: an untimed round
			// first brings it to the hit rate the workload settles at.
			if subj == subjFilestoreCache && warms(w) {
				b.progress.show(s.label(w) + " warming " + subj)
				a.drivers[subj].run(w, b.cfg.round, b.cfg.maxOps)
			}
			b.progress.show(s.label(w) + " " + subj)
			got := a.drivers[subj].run(w, b.cfg.round, b.cfg.maxOps)
			secs[subj] += got.Elapsed.Seconds()
			if got.Elapsed > 0 {
				perRound[subj] = append(perRound[subj], float64(got.Ops)/got.Elapsed.Seconds())
			}
			res[subj].merge(&got)
		}
	}
	for _, subj := range subjects {
		b.addRow(s, w, subj, res[subj], float64(res[subj].Ops)/secs[subj], secs[subj])
		b.rows[len(b.rows)-1].Rounds = perRound[subj]
	}
}

func (b *bench) addRow(s setting, w, subj string, r *result, rate, secs float64) {
	var cache int64
	if subj == subjFilestoreCache {
		cache = b.cacheFor(s)
	}
	allocs := 0.0
	if r.Ops > 0 {
		allocs = float64(r.Mallocs) / float64(r.Ops)
	}
	b.rows = append(b.rows, row{
		FS: s.fs, Section: s.section, Workload: w, Payload: s.payload, Pop: s.pop, Layout: s.layout,
		Procs: s.procs, Subject: subj,
		Ops: r.Ops, Secs: secs, OpsPerSec: rate,
		P50: r.Lat.quantile(0.50), P99: r.Lat.quantile(0.99), Allocs: allocs,
		Removed: r.Removed, Errors: r.Errors, FirstErr: r.FirstErr,
		Loads: r.Loads, Reads: r.Reads, Cache: cache,
	})
}

// Subjects of each comparison workload. Loads do not sync, so the
// no-sync variants would repeat their synced twins. The cache is measured
// where it can matter: Loads, and Saves, which it must not slow down; the
// Watch consumer where there are events, on Saves.
var (
	compareLoad  = []string{subjFilestore, subjFilestoreCache, subjFilestoreZstd, subjRaw, subjGorilla, subjDiskv, subjBolt, subjMemstore, subjMemcopy}
	compareWrite = []string{subjFilestore, subjFilestoreNoSync, subjFilestoreCache, subjFilestoreWatch, subjFilestoreZstd, subjRaw, subjRawNoSync, subjGorilla, subjDiskv, subjBolt, subjBoltNoSync, subjMemstore}
	compareRead  = []string{subjFilestore, subjFilestoreNoSync, subjFilestoreCache, subjRaw, subjRawNoSync, subjGorilla, subjDiskv, subjBolt, subjBoltNoSync, subjMemstore}
	compareMixed = []string{subjFilestore, subjFilestoreNoSync, subjRaw, subjRawNoSync, subjGorilla, subjDiskv, subjBolt, subjBoltNoSync, subjMemstore}
	compareHot   = []string{subjFilestore, subjFilestoreCache, subjBolt, subjMemstore, subjMemcopy}
	compareSweep = []string{subjFilestore, subjRaw, subjBolt}
	gridSubjects = []string{subjFilestore, subjRaw}
)

// compareAll is every subject of the comparison, opened together.
func compareAll() []string {
	var all []string
	for _, l := range [][]string{compareLoad, compareWrite, compareRead, compareMixed, compareHot, compareSweep} {
		for _, s := range l {
			if !slices.Contains(all, s) {
				all = append(all, s)
			}
		}
	}
	return all
}

// plan adds the tasks of every section for one filesystem.
func (b *bench) plan(t target) {
	cfg := b.cfg
	if b.has(secCache) {
		b.planCache(t)
	}
	if b.has(secCompare) {
		for _, p := range cfg.payloads {
			s := setting{fs: t.name, section: secCompare, payload: p, pop: cfg.opsPop, layout: defaultLayout, procs: 1}
			root := filepath.Join(t.root, fmt.Sprintf("compare-%d", p))
			a := &arena{kvs: map[string]kv{}, drivers: map[string]*driver{}}
			b.add(s.label("populate"), func() error { return b.open(a, s, root, compareAll()) })
			for _, w := range []string{wlLoad, wlLoadHot, wlSave, wlRead, wlReadHot, wlMixed, wlChurn} {
				subjects := compareMixed
				switch w {
				case wlLoad:
					subjects = compareLoad
				case wlSave:
					subjects = compareWrite
				case wlRead:
					subjects = compareRead
				case wlLoadHot, wlReadHot:
					subjects = compareHot
				}
				b.add(s.label(w), func() error { b.measure(a, s, w, subjects); return nil })
			}
			b.add(s.label(wlSweep), func() error {
				b.measure(a, s, wlSweep, compareSweep)
				b.progress.show(s.label("removing data"))
				a.close()
				return nil
			})
		}
	}
	procsPop := cfg.pops[0]
	for _, p := range cfg.pops {
		if p <= 100_000 {
			procsPop = max(procsPop, p)
		}
	}
	payload := cfg.payloads[0]
	for _, pop := range cfg.pops {
		for _, l := range cfg.layouts {
			grid := b.has(secLayouts)
			procs := b.has(secProcs) && pop == procsPop && l == defaultLayout
			if !grid && !procs {
				continue
			}
			s := setting{fs: t.name, section: secLayouts, payload: payload, pop: pop, layout: l, procs: 1}
			root := filepath.Join(t.root, fmt.Sprintf("grid-%d-%s", pop, l))
			a := &arena{kvs: map[string]kv{}, drivers: map[string]*driver{}}
			b.add(s.label("populate"), func() error { return b.open(a, s, root, gridSubjects) })
			if grid {
				for _, w := range []string{wlLoad, wlRead, wlSave} {
					b.add(s.label(w), func() error { b.measure(a, s, w, gridSubjects); return nil })
				}
			}
			if procs {
				for _, w := range []string{wlLoad, wlMixed} {
					b.add(s.label(w)+" procs", func() error { return b.measureProcs(a, s, root, w) })
				}
			}
			b.add(s.label(wlSweep), func() error {
				if grid {
					b.measure(a, s, wlSweep, gridSubjects)
				}
				b.progress.show(s.label("removing data"))
				a.close()
				return nil
			})
		}
	}
	if b.has(secLayouts) && t.name == b.recFS {
		b.planConfirm(t)
	}
}

// measureProcs runs workload w in 1, 2, 4... worker processes sharing one
// store, for filestore and the raw recipe, in interleaved rounds.
func (b *bench) measureProcs(a *arena, s setting, root, w string) error {
	type cell struct {
		res  result
		rate float64 // sum over rounds of aggregate ops/s
		secs float64
	}
	cells := map[string]*cell{}
	for r := range b.cfg.rounds {
		for _, subj := range gridSubjects {
			for _, n := range b.cfg.procs {
				ps := s
				ps.section, ps.procs = secProcs, n
				b.progress.show(fmt.Sprintf("%s %s x%d", ps.label(w), subj, n))
				j := job{
					Subject: subj, Dir: filepath.Join(root, family(subj)), Layout: s.layout,
					Pop: s.pop, Payload: s.payload, Workload: w,
					Dur: b.cfg.round, MaxOps: b.cfg.maxOps, Seed: uint64(100*r + n),
				}
				res, rate, err := runWorkers(j, n)
				if err != nil {
					return fmt.Errorf("%s x%d: %w", subj, n, err)
				}
				k := fmt.Sprintf("%s/%d", subj, n)
				c := cells[k]
				if c == nil {
					c = &cell{}
					cells[k] = c
				}
				c.res.merge(&res)
				c.rate += rate
				c.secs += res.Elapsed.Seconds()
			}
		}
	}
	for _, subj := range gridSubjects {
		for _, n := range b.cfg.procs {
			c := cells[fmt.Sprintf("%s/%d", subj, n)]
			ps := s
			ps.section, ps.procs = secProcs, n
			b.addRow(ps, w, subj, &c.res, c.rate/float64(b.cfg.rounds), c.secs)
		}
	}
	return nil
}

func sizeName(n int) string {
	if n%1024 == 0 {
		return fmt.Sprintf("%dKiB", n/1024)
	}
	return fmt.Sprintf("%dB", n)
}

func count(n int) string {
	switch {
	case n >= 1_000_000 && n%1_000_000 == 0:
		return fmt.Sprintf("%dM", n/1_000_000)
	case n >= 1000 && n%1000 == 0:
		return fmt.Sprintf("%dk", n/1000)
	}
	return fmt.Sprint(n)
}
