package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/filestore-go/filestore"
)

// The cache section asks two questions of Options.CacheBytes.
//
//  1. Is a cached session ever served after another process changed it?
//     A worker process (worker.go) deletes or overwrites sessions that
//     this process has just loaded twice, so that they sit in its cache,
//     and answers once its Delete or Save has returned. Right after that
//     answer this process loads the session again: a Load that still
//     returns it (after a Delete) or its old data (after a Save) is a
//     stale read, and there must be none. The time from the answer to the
//     Load that saw the change is the invalidation window; since the
//     cache validates every hit before serving it, it is one Load.
//  2. What does that validation cost? Load on a population the cache
//     holds whole, against an uncached Load of the same sessions and
//     against memcopy, a map lookup and a copy with no validation at all.
//
// Beside them it times how long after the call returned the Watch event of
// the same change arrives: the window a cache dropped by events alone would
// serve stale data in.

// wlChanges is the workload of the worker that makes the changes.
const wlChanges = "changes"

// Workloads of the cache section's rows.
const (
	wlAfterDelete = "after-delete" // a Load right after another process's Delete
	wlAfterSave   = "after-save"   // a Load right after another process's Save
	wlEventLag    = "event-lag"    // a Watch event after the change's answer
)

// cacheSubjects are measured side by side on the section's population.
var cacheSubjects = []string{subjFilestoreCache, subjFilestore, subjMemcopy, subjMemstore}

// cachePop is the population of the cache section: the comparison's, up
// to 10,000 sessions, which every process loads and changes quickly.
func (c config) cachePop() int { return min(c.opsPop, 10_000) }

// planCache adds the cache section's tasks for one filesystem.
func (b *bench) planCache(t target) {
	s := setting{fs: t.name, section: secCache, payload: b.cfg.payloads[0], pop: b.cfg.cachePop(), layout: defaultLayout, procs: 1}
	root := filepath.Join(t.root, "cache")
	a := &arena{kvs: map[string]kv{}, drivers: map[string]*driver{}}
	b.add(s.label("populate"), func() error { return b.open(a, s, root, cacheSubjects) })
	b.add(s.label(wlLoad), func() error { b.measure(a, s, wlLoad, cacheSubjects); return nil })
	b.add(s.label("changes by another process"), func() error {
		defer a.close()
		return b.measureChanges(a, s, root)
	})
}

// staleBound is how long a trial keeps loading a session that still shows
// what another process changed: a cache that is that late is broken, and
// the stale reads are counted either way.
const staleBound = 100 * time.Millisecond

// change is what one trial of measureChanges observed.
type change struct {
	cached bool          // the session was served from the cache before the change
	stale  int           // Loads that returned what the change replaced
	window time.Duration // from the other process's call returning to the Load that saw the change
	event  time.Duration // from that return to the Watch event (0 if before it); -1 if none came
}

// measureChanges runs the trials of question 1 and adds their rows.
func (b *bench) measureChanges(a *arena, s setting, root string) error {
	fk := a.kvs[subjFilestoreCache]
	st, ok := fk.(interface{ store() *filestore.Store })
	if !ok {
		return errors.New("no cached filestore to measure")
	}
	dir := filepath.Join(root, family(subjFilestoreCache))
	w, err := startWorker(job{Subject: subjFilestore, Dir: dir, Layout: s.layout, Pop: s.pop, Payload: s.payload, Workload: wlChanges})
	if err != nil {
		return err
	}
	defer w.stop()
	if line, err := w.out.ReadString('\n'); err != nil || line != "ready\n" {
		return fmt.Errorf("worker did not start: %q %v", line, err)
	}
	if _, err := w.in.Write([]byte("go\n")); err != nil {
		return err
	}

	// Events are stamped as they arrive, by key, for the trials to find.
	ctx, cancel := context.WithCancel(context.Background())
	ch, err := st.store().Watch(ctx)
	if err != nil {
		cancel()
		return err
	}
	var mu sync.Mutex
	seen := map[string]time.Time{}
	// arrived holds a token once an event has come since the last look,
	// so a wait that starts after the event still sees it.
	arrived := make(chan struct{}, 1)
	done := make(chan struct{})
	defer func() {
		cancel()
		<-done // the channel closes once the watcher has stopped
	}()
	go func() {
		defer close(done)
		for ev := range ch {
			if ev.Kind == filestore.EventOverflow {
				continue
			}
			mu.Lock()
			seen[ev.Key+ev.Kind.String()] = time.Now()
			mu.Unlock()
			select {
			case arrived <- struct{}{}:
			default:
			}
		}
	}()
	waitEvent := func(key string, kind filestore.EventKind, since time.Time) time.Duration {
		timeout := time.NewTimer(time.Second)
		defer timeout.Stop()
		for {
			mu.Lock()
			at, ok := seen[key+kind.String()]
			delete(seen, key+kind.String())
			mu.Unlock()
			if ok {
				return max(at.Sub(since), 0)
			}
			select {
			case <-arrived:
			case <-timeout.C:
				return -1
			}
		}
	}

	pl := payloads(s.payload)
	pop := a.drivers[subjFilestoreCache].pop
	// Bounded in trials and in time: the stale count needs many trials, and
	// a slow disk must not make the section run for minutes.
	limit := time.Now().Add(time.Duration(b.cfg.rounds) * b.cfg.round * 10)
	maxTrials := min(len(pop.ids), 2000)
	const minTrials = 20
	var dels, saves []change
	for i := 0; i < len(pop.ids) && len(dels)+len(saves) < maxTrials && (len(dels)+len(saves) < minTrials || time.Now().Before(limit)); i++ {
		if isExpired(i) {
			continue
		}
		id := pop.ids[i]
		b.progress.show(fmt.Sprintf("%s changes by another process %d", s.label(""), len(dels)+len(saves)))
		old, err := fk.Load(id)
		if err != nil {
			return fmt.Errorf("load before the change: %w", err)
		}
		old = bytes.Clone(old)
		// The second Load is the one that shows whether the session is
		// cached: a hit makes no read system call.
		r0 := readSyscalls()
		if _, err := fk.Load(id); err != nil {
			return fmt.Errorf("load before the change: %w", err)
		}
		r1 := readSyscalls()
		var c change
		c.cached = r0 >= 0 && r1 >= 0 && r1-r0-1 <= 0

		del := i%2 == 0
		var req string
		var want []byte
		v := 0
		if del {
			req = fmt.Sprintf("delete %d 0\n", i)
		} else {
			for bytes.Equal(pl[v], old) {
				v++
			}
			want = pl[v]
			req = fmt.Sprintf("save %d %d\n", i, v)
		}
		if _, err := w.in.Write([]byte(req)); err != nil {
			return err
		}
		ack, err := w.out.ReadString('\n')
		if err != nil {
			return fmt.Errorf("worker: %w", err)
		}
		ns, ok := strings.CutPrefix(strings.TrimSpace(ack), "ok ")
		returned, perr := strconv.ParseInt(ns, 10, 64)
		if !ok || perr != nil {
			return fmt.Errorf("worker: %s", strings.TrimSpace(ack))
		}
		// t0 is when the other process's call returned, on the wall clock
		// both processes read; time.Now below carries it too.
		t0 := time.Unix(0, returned)
		answered := time.Now()
		// Load until the change shows, for at most staleBound: each Load
		// that does not see it is a stale read.
		for {
			got, err := fk.Load(id)
			now := time.Now()
			switch {
			case del && errors.Is(err, errMissing), !del && err == nil && bytes.Equal(got, want):
				c.window = max(now.Sub(t0), 0)
			case err != nil && !errors.Is(err, errMissing):
				return fmt.Errorf("load after the change: %w", err)
			default:
				c.stale++
				if now.Sub(answered) < staleBound {
					continue
				}
				c.window = max(now.Sub(t0), 0)
			}
			break
		}
		kind := filestore.EventSaved
		if del {
			kind = filestore.EventDeleted
		}
		c.event = waitEvent(filestore.Key(id), kind, t0)
		if del {
			dels = append(dels, c)
		} else {
			saves = append(saves, c)
		}
	}
	b.addChangeRow(s, wlAfterDelete, dels, func(c change) time.Duration { return c.window })
	b.addChangeRow(s, wlAfterSave, saves, func(c change) time.Duration { return c.window })
	b.addChangeRow(s, wlEventLag, append(dels, saves...), func(c change) time.Duration { return c.event })
	return nil
}

// addChangeRow records the trials cs as a row of workload w, with the
// latency histogram of what of returns for each: negative is not
// observed, and for events 0 is "before the call returned", counted apart
// (Ops counts the others) so that the percentiles are of the late ones.
func (b *bench) addChangeRow(s setting, w string, cs []change, of func(change) time.Duration) {
	var r result
	x := row{FS: s.fs, Section: s.section, Workload: w, Payload: s.payload, Pop: s.pop, Layout: s.layout, Procs: 1,
		Subject: subjFilestoreCache, Cache: b.cacheFor(s), Trials: int64(len(cs)), Reads: -1}
	for _, c := range cs {
		d := of(c)
		switch {
		case d < 0:
		case d == 0 && w == wlEventLag:
			x.Early++
		default:
			r.Lat.add(d)
			x.Ops++
		}
		if c.cached {
			x.Cached++
		}
		x.Stale += int64(c.stale)
	}
	x.P50, x.P99 = r.Lat.quantile(0.50), r.Lat.quantile(0.99)
	b.rows = append(b.rows, x)
}
