package filestore

import (
	"errors"
	"fmt"
	"io/fs"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// Power-loss tests (issue 5, figure 3). Each case runs one operation on a
// crashFS and, after every filesystem call it makes and once more after it
// returns, derives the filesystems a power loss at that moment could leave:
// synced data only, everything, and random subsets of what was not synced.
// On each it reopens the store and checks that
//
//   - Open works;
//   - every record is the old version or the new one, never torn;
//   - once the operation returned nil, only the new one: an acknowledged
//     Save survives and an acknowledged Delete (a logout) stays deleted;
//   - the store still takes writes.
//
// TestPowerLossMutants then removes each kind of fsync in turn and requires
// the same checks to fail, so that the suite is known to notice.

// plID is the i-th session id of a power-loss case. Ids are never printed:
// failures name them by index.
func plID(i int) string { return fmt.Sprintf("power-loss-session-%d", i) }

// plCase is one operation under test, on a store holding the records of
// setup, all acknowledged.
type plCase struct {
	name   string
	layout string
	// create makes the case's op create the store: op gets a nil Store
	// and must open it.
	create bool
	setup  func(s *Store) error
	op     func(s *Store) (*Store, error)
	// before and after are each id's data (by index) as Load must see it
	// before and after op; a missing index means no live record.
	before, after map[int]string
	// gone lists ids whose record files must not exist once op returned.
	gone []int
}

// plResult is the outcome of one case: how many crash states it checked
// and what went wrong on them.
type plResult struct {
	states, distinct int
	violations       []string
	// torn counts distinct states with a record that reads as ErrCorrupt;
	// a violation unless the store runs with NoSync.
	torn int
}

var plModes = []crashMode{keepSynced, keepAll, keepRandom}

// plCases returns the operations under test in the given layout.
func plCases(layout string) []plCase {
	l, _ := parseLayout(layout)
	// newShard is an id whose shard directory no setup record created, so
	// that saving it exercises mkdir and its parent's fsync.
	newShard := 2
	for l.levels > 0 {
		_, h0 := hashID(plID(0))
		_, h1 := hashID(plID(1))
		_, h := hashID(plID(newShard))
		p := l.levels * l.width
		if h[:l.width] != h0[:l.width] && h[:l.width] != h1[:l.width] && h[:p] != h0[:p] && h[:p] != h1[:p] {
			break
		}
		newShard++
	}
	save := func(i int, data string) func(*Store) error {
		return func(s *Store) error { return s.Save(bg, plID(i), []byte(data), time.Time{}) }
	}
	setup := func(s *Store) error {
		if err := save(0, "zero")(s); err != nil {
			return err
		}
		return save(1, "1")(s)
	}
	base := map[int]string{0: "zero", 1: "1"}
	with := func(i int, data string) map[int]string {
		m := map[int]string{0: "zero", 1: "1"}
		if data == "" {
			delete(m, i)
		} else {
			m[i] = data
		}
		return m
	}
	op := func(fn func(*Store) error) func(*Store) (*Store, error) {
		return func(s *Store) (*Store, error) { return s, fn(s) }
	}
	return []plCase{{
		name:   "open-create",
		layout: layout,
		create: true,
		after:  map[int]string{},
		before: map[int]string{},
	}, {
		name:   "create-then-save",
		layout: layout,
		create: true,
		setup:  save(0, "zero"),
		before: map[int]string{},
		after:  map[int]string{0: "zero"},
	}, {
		name:   "save-new-shard",
		layout: layout,
		setup:  setup,
		op:     op(save(newShard, "new")),
		before: base,
		after:  with(newShard, "new"),
	}, {
		name:   "save-overwrite",
		layout: layout,
		setup:  setup,
		op:     op(save(0, "replaced")),
		before: base,
		after:  with(0, "replaced"),
	}, {
		name:   "update",
		layout: layout,
		setup:  setup,
		op:     op(func(s *Store) error { return s.Update(bg, plID(1), increment) }),
		before: base,
		after:  with(1, "2"),
	}, {
		name:   "update-delete",
		layout: layout,
		setup:  setup,
		op: op(func(s *Store) error {
			return s.Update(bg, plID(1), func(*Record) (*Record, error) { return nil, nil })
		}),
		before: base,
		after:  with(1, ""),
		gone:   []int{1},
	}, {
		name:   "delete",
		layout: layout,
		setup:  setup,
		op:     op(func(s *Store) error { return s.Delete(bg, plID(0)) }),
		before: base,
		after:  with(0, ""),
		gone:   []int{0},
	}, {
		name:   "sweep",
		layout: layout,
		setup: func(s *Store) error {
			if err := setup(s); err != nil {
				return err
			}
			for i := 2; i < 6; i++ {
				if err := s.Save(bg, plID(i), []byte("old"), time.Now().Add(-time.Hour)); err != nil {
					return err
				}
			}
			return nil
		},
		op: op(func(s *Store) error {
			n, err := s.DeleteExpired(bg)
			if err == nil && n != 4 {
				err = fmt.Errorf("swept %d records, want 4", n)
			}
			return err
		}),
		before: base,
		after:  base,
		gone:   []int{2, 3, 4, 5},
	}}
}

// runPowerLoss runs c with the given fsync removed (0 for none) and checks
// every crash state, keepRandom drawing seeds random states per point.
func runPowerLoss(t *testing.T, c plCase, mutant syncReason, seeds int) plResult {
	t.Helper()
	return runPowerLossOpts(t, c, mutant, seeds, false)
}

// runPowerLossOpts is runPowerLoss, optionally with Options.NoSync, which
// promises no durability: then an acknowledged write may be lost and a
// record may read as ErrCorrupt, but Open must still work and a readable
// record must still be a version that was written.
func runPowerLossOpts(t *testing.T, c plCase, mutant syncReason, seeds int, noSync bool) plResult {
	t.Helper()
	base := t.TempDir()
	root := filepath.Join(base, "store")
	opts := &Options{SweepInterval: -1, Layout: c.layout, NoSync: noSync}
	m := newCrashFS(base)

	var s *Store
	var err error
	if !c.create {
		s, err = open(root, opts, m)
		require.NoError(t, err)
		s.mutant = mutant
		require.NoError(t, c.setup(s))
	}

	type point struct {
		call   string
		acked  bool
		states []*crashFS
	}
	var points []point
	rng := rand.New(rand.NewPCG(uint64(len(c.name)), uint64(mutant)))
	snap := func(call string, acked bool) {
		p := point{call: call, acked: acked}
		for _, mode := range plModes {
			n := 1
			if mode == keepRandom {
				n = seeds
			}
			for range n {
				p.states = append(p.states, m.crash(mode, rng))
			}
		}
		points = append(points, p)
	}
	snap("start", false)
	m.after = func(call string) { snap(call, false) }
	if c.create {
		s, err = open(root, opts, m)
		if err == nil {
			s.mutant = mutant
			if c.setup != nil {
				err = c.setup(s)
			}
		}
	} else {
		s, err = c.op(s)
	}
	m.after = nil
	require.NoError(t, err, "%s: the operation itself failed", c.name)
	snap("returned", true)
	require.NoError(t, s.Close())

	var res plResult
	checked := map[string]bool{}
	for i, p := range points {
		for j, st := range p.states {
			res.states++
			key := fmt.Sprint(p.acked) + st.fingerprint()
			if checked[key] {
				continue
			}
			checked[key] = true
			res.distinct++
			where := fmt.Sprintf("%s: crash after call %d (%s), state %d", c.name, i, p.call, j)
			bad, torn := checkCrashState(st, root, opts, c, p.acked)
			for _, v := range bad {
				res.violations = append(res.violations, where+": "+v)
			}
			if torn {
				res.torn++
			}
		}
	}
	return res
}

// checkCrashState reopens the store on a post-crash filesystem and returns
// what is wrong with it, and whether a record read as ErrCorrupt.
func checkCrashState(m *crashFS, root string, opts *Options, c plCase, acked bool) (bad []string, torn bool) {
	s, err := open(root, opts, m)
	if err != nil {
		return []string{fmt.Sprintf("Open failed: %v", err)}, false
	}
	defer s.Close()
	ids := slices.Sorted(func(yield func(int) bool) {
		seen := map[int]bool{}
		for _, mp := range []map[int]string{c.before, c.after} {
			for i := range mp {
				if !seen[i] && !yield(i) {
					return
				}
				seen[i] = true
			}
		}
	})
	for _, i := range ids {
		got := "<none>"
		r, err := s.Load(bg, plID(i))
		switch {
		case err == nil:
			got = string(r.Data)
		case errors.Is(err, ErrNotFound):
		case errors.Is(err, ErrCorrupt) && opts.NoSync:
			torn = true
			continue
		default:
			torn = true
			bad = append(bad, fmt.Sprintf("id %d unreadable (torn?): %v", i, err))
			continue
		}
		want := []string{describe(c.after, i)}
		if !acked || opts.NoSync {
			want = append(want, describe(c.before, i))
		}
		if opts.NoSync {
			want = append(want, "<none>")
		}
		if !slices.Contains(want, got) {
			bad = append(bad, fmt.Sprintf("id %d is %q, want one of %q", i, got, want))
		}
	}
	if acked && !opts.NoSync {
		for _, i := range c.gone {
			r, _ := s.refOf(plID(i))
			if _, err := m.Lstat(r.path()); !errors.Is(err, fs.ErrNotExist) {
				bad = append(bad, fmt.Sprintf("id %d: removed record file is back (%v)", i, err))
			}
		}
	}
	if err := s.ForEach(bg, func(Record) error { return nil }); err != nil && !(opts.NoSync && errors.Is(err, ErrCorrupt)) {
		bad = append(bad, fmt.Sprintf("ForEach: %v", err))
	}
	if _, err := s.DeleteExpired(bg); err != nil && !(opts.NoSync && errors.Is(err, ErrCorrupt)) {
		bad = append(bad, fmt.Sprintf("DeleteExpired: %v", err))
	}
	if err := s.Save(bg, plID(99), []byte("probe"), time.Time{}); err != nil {
		bad = append(bad, fmt.Sprintf("store takes no writes: %v", err))
	} else if r, err := s.Load(bg, plID(99)); err != nil || string(r.Data) != "probe" {
		bad = append(bad, fmt.Sprintf("probe write not readable: %v", err))
	}
	return bad, torn
}

func describe(m map[int]string, i int) string {
	if v, ok := m[i]; ok {
		return v
	}
	return "<none>"
}

// plSeeds is how many random crash states each call point gets.
func plSeeds() int {
	if testing.Short() {
		return 2
	}
	return 8
}

func TestPowerLoss(t *testing.T) {
	checkHygiene(t)
	total, distinct, violations, failed := 0, 0, 0, 0
	for _, layout := range []string{"flat", "1x2", "2x2"} {
		for _, c := range plCases(layout) {
			ok := t.Run(layout+"/"+c.name, func(t *testing.T) {
				res := runPowerLoss(t, c, 0, plSeeds())
				total += res.states
				distinct += res.distinct
				violations += len(res.violations)
				require.Empty(t, res.violations)
			})
			if !ok {
				failed++
			}
		}
	}
	// The summary counts what the subtests found, so it cannot claim a
	// clean run that was not: a subtest may also fail without a violation
	// (an error building a crash state).
	t.Logf("%d post-crash states (%d distinct) checked, %d violations, %d failed cases", total, distinct, violations, failed)
}

// TestPowerLossMutants removes each kind of fsync in turn and requires the
// power-loss checks to catch it.
func TestPowerLossMutants(t *testing.T) {
	checkHygiene(t)
	mutants := []struct {
		name   string
		reason syncReason
	}{
		{"no fsync of the temp file", syncFile},
		{"no dir fsync after rename", syncAfterRename},
		{"no dir fsync after unlink", syncAfterUnlink},
		{"no parent fsync after mkdir", syncAfterMkdir},
	}
	detected := 0
	for _, mu := range mutants {
		t.Run(strings.ReplaceAll(mu.name, " ", "_"), func(t *testing.T) {
			var caught []string
			states := 0
			for _, c := range plCases("1x2") {
				// Each mutant is caught by the synced-only states alone;
				// a couple of random ones per point are enough here.
				res := runPowerLoss(t, c, mu.reason, 2)
				states += res.states
				if len(res.violations) > 0 {
					caught = append(caught, fmt.Sprintf("%s (%d violations, e.g. %s)", c.name, len(res.violations), res.violations[0]))
				}
			}
			require.NotEmpty(t, caught, "mutant %q survived %d crash states", mu.name, states)
			detected++
			t.Logf("mutant %q detected by %d cases:\n  %s", mu.name, len(caught), strings.Join(caught, "\n  "))
		})
	}
	t.Logf("%d of %d mutants detected", detected, len(mutants))
}

// TestPowerLossNoSync measures what Options.NoSync gives up: it must still
// open after every crash and never return a version that was not written,
// but acknowledged writes may be lost and records may read as ErrCorrupt.
func TestPowerLossNoSync(t *testing.T) {
	checkHygiene(t)
	var states, distinct, torn, violations, failed int
	for _, c := range plCases("1x2") {
		ok := t.Run(c.name, func(t *testing.T) {
			res := runPowerLossOpts(t, c, 0, plSeeds(), true)
			states += res.states
			distinct += res.distinct
			torn += res.torn
			violations += len(res.violations)
			require.Empty(t, res.violations)
		})
		if !ok {
			failed++
		}
	}
	t.Logf("NoSync: %d post-crash states (%d distinct), %d with a record reading as ErrCorrupt, %d violations, %d failed cases",
		states, distinct, torn, violations, failed)
}

// TestCrashFSModel checks the crash model itself against the rules the
// power-loss tests rely on.
func TestCrashFSModel(t *testing.T) {
	base := t.TempDir()
	m := newCrashFS(base)
	dir := filepath.Join(base, "d")
	require.NoError(t, m.Mkdir(dir, 0o700))
	write := func(name, data string, sync bool) {
		f, err := m.OpenFile(filepath.Join(dir, name), os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
		require.NoError(t, err)
		_, err = f.Write([]byte(data))
		require.NoError(t, err)
		if sync {
			require.NoError(t, f.Sync())
		}
		require.NoError(t, f.Close())
	}
	syncDir := func(d string) {
		f, err := m.OpenFile(d, os.O_RDONLY, 0)
		require.NoError(t, err)
		require.NoError(t, f.Sync())
		require.NoError(t, f.Close())
	}
	read := func(m *crashFS, name string) (string, error) {
		f, err := m.OpenFile(filepath.Join(dir, name), os.O_RDONLY, 0)
		if err != nil {
			return "", err
		}
		defer f.Close()
		var b strings.Builder
		buf := make([]byte, 3)
		for {
			n, err := f.Read(buf)
			b.Write(buf[:n])
			if err != nil {
				return b.String(), nil
			}
		}
	}

	// The mkdir is not durable until its parent is synced.
	_, err := m.crash(keepSynced, nil).Lstat(dir)
	require.ErrorIs(t, err, fs.ErrNotExist)
	syncDir(base)

	// A synced file whose directory was not synced is lost.
	write("a", "synced", true)
	_, err = read(m.crash(keepSynced, nil), "a")
	require.ErrorIs(t, err, fs.ErrNotExist)
	got, err := read(m.crash(keepAll, nil), "a")
	require.NoError(t, err)
	require.Equal(t, "synced", got)

	// A file in a synced directory keeps only its synced content.
	write("b", "unsynced", false)
	syncDir(dir)
	got, err = read(m.crash(keepSynced, nil), "b")
	require.NoError(t, err)
	require.Empty(t, got)
	got, err = read(m.crash(keepSynced, nil), "a")
	require.NoError(t, err)
	require.Equal(t, "synced", got)

	// A rename is undone by a crash until the directory is synced, and the
	// old and new names never both survive it.
	require.NoError(t, m.Rename(filepath.Join(dir, "a"), filepath.Join(dir, "b")))
	got, err = read(m.crash(keepSynced, nil), "b")
	require.NoError(t, err)
	require.Empty(t, got)
	rng := rand.New(rand.NewPCG(1, 2))
	for range 32 {
		c := m.crash(keepRandom, rng)
		a, aerr := read(c, "a")
		b, berr := read(c, "b")
		require.NoError(t, berr)
		if aerr == nil {
			require.Equal(t, "synced", a)
			require.True(t, strings.HasPrefix("unsynced", b), "b holds a prefix of what was written")
		} else {
			require.Equal(t, "synced", b)
		}
	}
	syncDir(dir)
	got, err = read(m.crash(keepSynced, nil), "b")
	require.NoError(t, err)
	require.Equal(t, "synced", got)

	// A removal is undone until the directory is synced.
	require.NoError(t, m.Remove(filepath.Join(dir, "b")))
	_, err = read(m.crash(keepSynced, nil), "b")
	require.NoError(t, err)
	syncDir(dir)
	_, err = read(m.crash(keepSynced, nil), "b")
	require.ErrorIs(t, err, fs.ErrNotExist)
	require.Empty(t, m.crash(keepSynced, nil).names(dir))
}
