package main

import (
	"fmt"
	"math"
	"path/filepath"
	"slices"
	"strings"
)

// How the layout recommendation decides.
//
// The layout grid measures one layout after another, so two layouts' figures
// come from different minutes of a shared machine, and their one sweep each
// cannot be repeated. The grid's scores only pick a candidate: the layout
// that scored best. If that is not the default, both are populated again
// and measured in paired rounds (Load, read-heavy and Save, each round
// running the two layouts back to back), and the candidate replaces the
// default only if its lead over the default is larger than the run's own
// noise: the 95% confidence interval of the per-round ratios, and never
// less than minLead. Rounds are added, up to a bound, until the lead is
// clear either way; if it never is, the default stays and the layouts tie.

// secConfirm is the section of the paired rounds' rows (results.csv only).
const secConfirm = "layouts-confirm"

// minLead is the smallest lead that moves a user off the default layout,
// however quiet the run: less is not worth a non-default layout, and runs
// on a shared machine differ by more than that from one to the next.
const minLead = 0.02

// confirmWorkloads are the repeatable workloads of the paired rounds.
var confirmWorkloads = []string{wlLoad, wlRead, wlSave}

// confirmation is the outcome of the paired rounds between the grid's best
// layout and the default.
type confirmation struct {
	fs, best, ref string
	pop           int
	ratios        []float64 // per round: geometric mean of best/ref rates
}

// scored is a layout with its grid score.
type scored struct {
	layout string
	score  float64
}

// layoutScores returns the population of the grid nearest (in ratio) to
// n sessions on fs, and each layout's score there, best first: the
// geometric mean of its Load, read-heavy, Save and sweep rates, each
// relative to the best layout's.
func layoutScores(rows []row, layouts []string, fs string, n int) (int, []scored) {
	near := 0
	for _, x := range rows {
		if x.FS == fs && x.Section == secLayouts {
			if near == 0 || math.Abs(math.Log(float64(x.Pop)/float64(n))) < math.Abs(math.Log(float64(near)/float64(n))) {
				near = x.Pop
			}
		}
	}
	if near == 0 {
		return 0, nil
	}
	best := map[string]float64{}
	rate := map[string]float64{}
	for _, x := range rows {
		if x.FS == fs && x.Section == secLayouts && x.Pop == near && x.Subject == subjFilestore {
			rate[x.Layout+"|"+x.Workload] = x.OpsPerSec
			best[x.Workload] = max(best[x.Workload], x.OpsPerSec)
		}
	}
	var scores []scored
	for _, l := range layouts {
		s, k := 0.0, 0
		for _, w := range []string{wlLoad, wlRead, wlSave, wlSweep} {
			if v := rate[l+"|"+w]; v > 0 && best[w] > 0 {
				s += math.Log(v / best[w])
				k++
			}
		}
		if k > 0 {
			scores = append(scores, scored{l, math.Exp(s / float64(k))})
		}
	}
	slices.SortStableFunc(scores, func(a, b scored) int {
		switch {
		case a.score > b.score:
			return -1
		case a.score < b.score:
			return 1
		}
		return 0
	})
	return near, scores
}

// reference returns the layout the grid's best must beat: the default if
// the grid measured it, else the runner-up.
func reference(scores []scored) string {
	for _, s := range scores {
		if s.layout == defaultLayout {
			return s.layout
		}
	}
	if len(scores) > 1 {
		return scores[1].layout
	}
	return ""
}

// tCrit95 is Student's t for a two-sided 95% interval, by degrees of
// freedom (index 0 unused); beyond the table 2.0 is close enough.
var tCrit95 = []float64{0, 12.71, 4.30, 3.18, 2.78, 2.57, 2.45, 2.36, 2.31, 2.26, 2.23, 2.20, 2.18}

// decide returns the mean lead of the paired per-round ratios (0.05 is 5%
// faster), the noise it must beat (the half-width of its 95% confidence
// interval, at least minLead), and whether the lead is beyond the noise.
// Below two rounds there is no noise to measure, and nothing is decided.
func decide(ratios []float64) (lead, noise float64, wins bool) {
	n := len(ratios)
	if n == 0 {
		return 0, math.Inf(1), false
	}
	var sum float64
	for _, r := range ratios {
		sum += math.Log(r)
	}
	mean := sum / float64(n)
	lead = math.Exp(mean) - 1
	if n < 2 {
		return lead, math.Inf(1), false
	}
	var ss float64
	for _, r := range ratios {
		d := math.Log(r) - mean
		ss += d * d
	}
	t := 2.0
	if n-1 < len(tCrit95) {
		t = tCrit95[n-1]
	}
	half := t * math.Sqrt(ss/float64(n-1)/float64(n))
	noise = max(math.Exp(half)-1, minLead)
	return lead, noise, lead > noise
}

// settled reports whether more rounds are not needed: the lead is beyond
// the noise, or even the top of its 95% interval is short of minLead.
func settled(ratios []float64) bool {
	lead, noise, wins := decide(ratios)
	if wins {
		return true
	}
	if len(ratios) < 2 {
		return false
	}
	// noise is the interval's half-width unless minLead raised it; the
	// top of the interval is then below minLead anyway when lead < 0.
	return lead+noise < minLead || (noise == minLead && lead < 0)
}

// planConfirm adds the task that confirms the grid's choice on target t.
func (b *bench) planConfirm(t target) {
	b.add(t.name+" layouts: confirming the best against the default", func() error { return b.confirmLayouts(t) })
}

// confirmLayouts runs the paired rounds, if the grid's best layout is not
// the one it must beat, and keeps their outcome for the recommendation.
func (b *bench) confirmLayouts(t target) error {
	near, scores := layoutScores(b.rows, b.cfg.layouts, t.name, b.cfg.sessions)
	if len(scores) < 2 {
		return nil
	}
	best, ref := scores[0].layout, reference(scores)
	if best == ref {
		return nil
	}
	c := &confirmation{fs: t.name, best: best, ref: ref, pop: near}
	arenas := map[string]*arena{}
	defer func() {
		for _, a := range arenas {
			a.close()
		}
	}()
	for _, l := range []string{best, ref} {
		s := setting{fs: t.name, section: secConfirm, payload: b.cfg.payloads[0], pop: near, layout: l, procs: 1}
		a := &arena{kvs: map[string]kv{}, drivers: map[string]*driver{}}
		arenas[l] = a
		if err := b.open(a, s, filepath.Join(t.root, "confirm-"+l), []string{subjFilestore}); err != nil {
			return err
		}
	}
	minRounds := max(b.cfg.rounds, 3)
	maxRounds := minRounds + 6
	if b.cfg.quick {
		maxRounds = minRounds // a smoke run: the paths, not the answer
	}
	for r := 0; r < maxRounds; r++ {
		var sum float64
		for _, w := range confirmWorkloads {
			rates := map[string]float64{}
			order := []string{best, ref}
			if r%2 == 1 {
				order = []string{ref, best}
			}
			for _, l := range order {
				s := setting{fs: t.name, section: secConfirm, payload: b.cfg.payloads[0], pop: near, layout: l, procs: 1}
				b.progress.show(fmt.Sprintf("%s round %d", s.label(w), r+1))
				got := arenas[l].drivers[subjFilestore].run(w, b.cfg.round, b.cfg.maxOps)
				if got.Elapsed > 0 {
					rates[l] = float64(got.Ops) / got.Elapsed.Seconds()
				}
				b.addRow(s, w, subjFilestore, &got, rates[l], got.Elapsed.Seconds())
			}
			if rates[best] <= 0 || rates[ref] <= 0 {
				return fmt.Errorf("confirming %s against %s: %s measured no operations", best, ref, w)
			}
			sum += math.Log(rates[best] / rates[ref])
		}
		c.ratios = append(c.ratios, math.Exp(sum/float64(len(confirmWorkloads))))
		if r+1 >= minRounds && settled(c.ratios) {
			break
		}
	}
	b.confirmed = append(b.confirmed, c)
	return nil
}

// recommend picks a layout for the user's session count: the default, or
// the layout the paired rounds showed to be faster beyond the run's noise.
// It returns "" when no layout grid was measured.
func (r *report) recommend() string {
	n := r.cfg.sessions
	var fs string
	for _, t := range r.targets {
		if fs == "" || t.name == "disk" {
			fs = t.name // prefer the user's own filesystem
		}
	}
	near, scores := layoutScores(r.rows, r.cfg.layouts, fs, n)
	if len(scores) == 0 {
		return ""
	}
	best := scores[0].layout
	choice, why := best, ""
	if ref := reference(scores); ref != "" && ref != best {
		var c *confirmation
		for _, x := range r.confirmed {
			if x.fs == fs && x.best == best && x.ref == ref {
				c = x
			}
		}
		lead, noise, wins := 0.0, math.Inf(1), false
		rounds := 0
		if c != nil {
			lead, noise, wins = decide(c.ratios)
			rounds = len(c.ratios)
		}
		switch {
		case wins:
			why = fmt.Sprintf("In %d paired rounds of Load, read-heavy and Save, %s was %.0f%% faster than %s, beyond this run's noise (±%.0f%%). ", rounds, best, 100*lead, ref, 100*noise)
		case rounds > 0 && lead < -noise:
			choice = ref
			why = fmt.Sprintf("%s scored best in the grid, but in %d paired rounds of Load, read-heavy and Save %s was %.0f%% faster than it, beyond this run's noise (±%.0f%%): keep %s. ", best, rounds, ref, 100*(1/(1+lead)-1), 100*noise, ref)
		case rounds > 0:
			choice = ref
			if ref != defaultLayout && shardCount(best) < shardCount(ref) {
				choice = best // no default to keep: fewer directories cost less to create, walk and back up
			}
			why = fmt.Sprintf("%s scored best in the grid, but in %d paired rounds of Load, read-heavy and Save against %s its lead was %+.1f%%: the layouts tie here (within %.0f%%), so keep %s. ", best, rounds, ref, 100*lead, 100*noise, choice)
		default:
			choice = ref
			why = fmt.Sprintf("%s scored best in the grid, but was not measured against %s in paired rounds: keep %s. ", best, ref, ref)
		}
	}
	var b strings.Builder
	fmt.Fprintf(&b, "For %s sessions, use Layout %q. ", count(n), choice)
	b.WriteString(why)
	fmt.Fprintf(&b, "Grid scores on %s at %s sessions (geometric mean of Load, read-heavy, Save and sweep rates, each relative to the best layout's; 1.00 is best at everything; one layout after another, so they pick the candidate only):", fs, count(near))
	for i, s := range scores {
		sep := ","
		if i == len(scores)-1 {
			sep = "."
		}
		fmt.Fprintf(&b, " %s %.2f%s", s.layout, s.score, sep)
	}
	b.WriteString(" ")
	per := n / shardCount(choice)
	fmt.Fprintf(&b, "That puts about %d records in each of its %d leaf directories. ", per, shardCount(choice))
	if float64(n) > 3*float64(near) || float64(n) < float64(near)/3 {
		fmt.Fprintf(&b, "Your count is far from the nearest measured population (%s): rerun with -pops %d to measure it. ", count(near), n)
	}
	fmt.Fprintf(&b, "The layout is fixed when a store is created: pass it as filestore.Options{Layout: %q} to the Open that creates the store.", choice)
	return b.String()
}
