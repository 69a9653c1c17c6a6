package filestore

import (
	"context"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// plantProblems fills s with one file of every state Scan reports and
// returns the keys of the live records that must survive any repair.
func plantProblems(t *testing.T, s *Store) (live []string, planted map[string]FileState) {
	t.Helper()
	planted = map[string]FileState{}
	future := time.Now().Add(time.Hour)
	for i := range 20 {
		id := fmt.Sprintf("live-%d", i)
		require.NoError(t, s.Save(bg, id, []byte("data "+id), future))
		live = append(live, Key(id))
	}
	require.NoError(t, s.Save(bg, "expired", []byte("x"), time.Now().Add(-time.Hour)))
	planted[Key("expired")] = FileExpired

	// Corrupt: garbage at a record's own path.
	require.NoError(t, s.Save(bg, "corrupt", []byte("x"), future))
	r, _ := s.refOf("corrupt")
	require.NoError(t, os.WriteFile(r.path(), []byte("not a record"), 0o600))
	planted[Key("corrupt")] = FileCorrupt

	// Misplaced: a valid record moved into another shard directory.
	require.NoError(t, s.Save(bg, "misplaced", []byte("x"), future))
	r, _ = s.refOf("misplaced")
	other := filepath.Join(s.data, "00")
	if strings.HasPrefix(r.hex, "00") {
		other = filepath.Join(s.data, "01")
	}
	require.NoError(t, os.MkdirAll(other, 0o700))
	require.NoError(t, os.Rename(r.path(), filepath.Join(other, r.hex)))
	planted[Key("misplaced")] = FileMisplaced

	// A record readable by other users.
	require.NoError(t, s.Save(bg, "open-mode", []byte("x"), future))
	r, _ = s.refOf("open-mode")
	require.NoError(t, os.Chmod(r.path(), 0o644))
	live = append(live, Key("open-mode"))

	// A stale temp file and a fresh one.
	r, _ = s.refOf("live-0")
	stale := filepath.Join(r.dirPath(), tempPrefixOf(r.hex)+"stale")
	require.NoError(t, os.WriteFile(stale, []byte("half"), 0o600))
	old := time.Now().Add(-time.Hour)
	require.NoError(t, os.Chtimes(stale, old, old))
	require.NoError(t, os.WriteFile(filepath.Join(r.dirPath(), tempPrefixOf(r.hex)+"fresh"), []byte("half"), 0o600))

	// Foreign files, in a shard and in the root.
	require.NoError(t, os.WriteFile(filepath.Join(r.dirPath(), "notes.txt"), []byte("mine"), 0o600))
	require.NoError(t, os.WriteFile(filepath.Join(s.root, "README"), []byte("mine"), 0o600))
	return live, planted
}

func scanAll(t *testing.T, s *Store) map[string]FileInfo {
	t.Helper()
	out := map[string]FileInfo{}
	require.NoError(t, s.Scan(bg, func(fi FileInfo) error {
		out[fi.Path] = fi
		return nil
	}))
	return out
}

func TestScanReportsEveryState(t *testing.T) {
	s := openTest(t, nil)
	live, planted := plantProblems(t, s)
	got := scanAll(t, s)
	byKey := map[string]FileInfo{}
	count := map[FileState]int{}
	for _, fi := range got {
		count[fi.State]++
		if fi.Key != "" && fi.State != FileTemp {
			byKey[fi.Key] = fi
		}
		assert.NotContains(t, fi.Path, "live-", "a path holds an id")
	}
	for key, st := range planted {
		assert.Equal(t, st, byKey[key].State, "key %s", key)
	}
	for _, key := range live {
		assert.Equal(t, FileLive, byKey[key].State)
	}
	assert.True(t, byKey[Key("open-mode")].BadMode)
	assert.False(t, byKey[Key("live-1")].BadMode)
	assert.Equal(t, "live-1", byKey[Key("live-1")].ID)
	assert.ErrorIs(t, byKey[Key("corrupt")].Err, ErrCorrupt)
	assert.NotContains(t, byKey[Key("corrupt")].Err.Error(), s.root)
	assert.Equal(t, 2, count[FileTemp])
	assert.Equal(t, 2, count[FileForeign])
	assert.Positive(t, count[FileShard])
	stale := 0
	for _, fi := range got {
		if fi.State == FileTemp && fi.Stale {
			stale++
		}
	}
	assert.Equal(t, 1, stale)
	assert.Contains(t, got, "README")
}

func TestRepairKeepsEveryValidRecord(t *testing.T) {
	s := openTest(t, nil)
	_, planted := plantProblems(t, s)
	for _, fi := range scanAll(t, s) {
		_, err := s.Repair(bg, fi)
		require.NoError(t, err, fi.Path)
	}
	after := scanAll(t, s)
	states := map[FileState]int{}
	for _, fi := range after {
		states[fi.State]++
		assert.False(t, fi.BadMode, fi.Path)
	}
	assert.Zero(t, states[FileCorrupt])
	assert.Zero(t, states[FileMisplaced])
	assert.Equal(t, 1, states[FileTemp], "the fresh temp file stays")
	assert.Equal(t, 2, states[FileForeign], "foreign files are never touched")
	for i := range 20 {
		_, err := s.Load(bg, fmt.Sprintf("live-%d", i))
		require.NoError(t, err)
	}
	_, err := s.Load(bg, "open-mode")
	require.NoError(t, err, "a record with a wrong mode is fixed, not quarantined")
	q, err := os.ReadDir(filepath.Join(s.root, QuarantineDir))
	require.NoError(t, err)
	var names []string
	for _, e := range q {
		names = append(names, e.Name())
	}
	sort.Strings(names)
	require.Len(t, names, 2)
	for _, n := range names {
		key := n[:hashHexLen]
		assert.Contains(t, []FileState{FileCorrupt, FileMisplaced}, planted[key])
	}
	_, err = s.Load(bg, "expired")
	assert.ErrorIs(t, err, ErrNotFound)
}

func TestRepairLeavesARecordRewrittenSinceTheScan(t *testing.T) {
	s := openTest(t, nil)
	require.NoError(t, s.Save(bg, "a", []byte("x"), time.Time{}))
	r, _ := s.refOf("a")
	require.NoError(t, os.WriteFile(r.path(), []byte("garbage"), 0o600))
	var fi FileInfo
	for _, f := range scanAll(t, s) {
		if f.Key == r.hex {
			fi = f
		}
	}
	require.Equal(t, FileCorrupt, fi.State)
	require.NoError(t, s.Save(bg, "a", []byte("fixed"), time.Time{}))
	did, err := s.Repair(bg, fi)
	require.NoError(t, err)
	assert.Contains(t, did, "left alone")
	rec, err := s.Load(bg, "a")
	require.NoError(t, err)
	assert.Equal(t, "fixed", string(rec.Data))
}

func TestRepairRefusesPathsOutsideTheStore(t *testing.T) {
	s := openTest(t, nil)
	outside := filepath.Join(t.TempDir(), "victim")
	require.NoError(t, os.WriteFile(outside, []byte("x"), 0o644))
	rel, err := filepath.Rel(s.root, outside)
	require.NoError(t, err)
	did, err := s.Repair(bg, FileInfo{Path: filepath.ToSlash(rel), Key: Key("x"), State: FileCorrupt, BadMode: true})
	require.NoError(t, err)
	assert.Contains(t, did, "left alone")
	fi, err := os.Stat(outside)
	require.NoError(t, err)
	assert.Equal(t, os.FileMode(0o644), fi.Mode().Perm())
}

func TestInspectAndDeleteKey(t *testing.T) {
	s := openTest(t, &Options{SweepInterval: -1, Compress: true})
	exp := time.Now().Add(time.Hour).Round(0)
	big := []byte(strings.Repeat("compressible ", 2000))
	require.NoError(t, s.Save(bg, "sess", big, exp))
	fi, rec, err := s.Inspect(bg, Key("sess"))
	require.NoError(t, err)
	assert.Equal(t, FileLive, fi.State)
	assert.True(t, fi.Compressed)
	assert.Equal(t, len(big), fi.DataSize)
	assert.Equal(t, big, rec.Data)
	assert.Equal(t, "sess", rec.ID)
	assert.True(t, exp.Equal(rec.Expiry))

	_, _, err = s.Inspect(bg, Key("missing"))
	assert.ErrorIs(t, err, ErrNotFound)
	_, _, err = s.Inspect(bg, "../../etc/passwd")
	assert.ErrorIs(t, err, ErrInvalidID)
	assert.ErrorIs(t, s.DeleteKey(bg, "ZZ"), ErrInvalidID)

	require.NoError(t, s.DeleteKey(bg, Key("sess")))
	_, err = s.Load(bg, "sess")
	assert.ErrorIs(t, err, ErrNotFound)
	require.NoError(t, s.DeleteKey(bg, Key("sess")), "deleting a missing key is not an error")
}

func TestSweepReportsWhatItDid(t *testing.T) {
	s := openTest(t, nil)
	plantProblems(t, s)
	var calls int
	st, err := s.Sweep(bg, func(SweepStats) { calls++ })
	require.ErrorIs(t, err, ErrCorrupt, "the corrupt record is reported, and left")
	assert.Equal(t, 1, st.Removed)
	assert.Equal(t, 1, st.Temps)
	assert.Equal(t, 256, st.Shards)
	assert.Equal(t, st.Dirs, calls)
	// 20 live, open-mode, corrupt; the misplaced one is in another shard
	// and counted there: every record name but the expired one is kept.
	assert.Equal(t, 23, st.Kept)
}

func TestStatCountsOpenStores(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("open Stores are counted only with open file description locks")
	}
	s := openTest(t, nil)
	info, err := s.Stat()
	require.NoError(t, err)
	assert.Equal(t, 0, info.Opens)
	assert.Equal(t, "1x2", info.Layout)
	assert.Equal(t, formatVersion, info.FormatVersion)
	assert.False(t, info.Sweeping)

	others := []*Store{}
	for range 3 {
		o, err := Open(s.root, &Options{SweepInterval: -1})
		require.NoError(t, err)
		others = append(others, o)
	}
	info, err = s.Stat()
	require.NoError(t, err)
	assert.Equal(t, 3, info.Opens)
	for _, o := range others {
		require.NoError(t, o.Close())
	}
	info, err = s.Stat()
	require.NoError(t, err)
	assert.Equal(t, 0, info.Opens)

	release, err := s.fs.Lock(bg, s.locks.sweepPath(), true)
	require.NoError(t, err)
	info, err = s.Stat()
	require.NoError(t, err)
	assert.True(t, info.Sweeping)
	require.NoError(t, release())
}

func TestNoCreate(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "missing")
	_, err := Open(dir, &Options{NoCreate: true})
	assert.ErrorIs(t, err, ErrNotStore)
	assert.NoDirExists(t, dir)
	empty := t.TempDir()
	_, err = Open(empty, &Options{NoCreate: true})
	assert.ErrorIs(t, err, ErrNotStore)
	assert.NoFileExists(t, filepath.Join(empty, markerName))
}

// fillForReshard saves n records, half of them never expiring, and returns
// their ids and data.
func fillForReshard(t *testing.T, dir, layout string, n int) map[string]Record {
	t.Helper()
	s, err := Open(dir, &Options{SweepInterval: -1, Layout: layout})
	require.NoError(t, err)
	defer s.Close()
	want := map[string]Record{}
	for i := range n {
		id := fmt.Sprintf("session-%d", i)
		rec := Record{ID: id, Data: []byte("payload " + id)}
		if i%2 == 0 {
			rec.Expiry = time.Now().Add(time.Hour).Round(0)
		}
		require.NoError(t, s.Save(bg, id, rec.Data, rec.Expiry))
		want[id] = rec
	}
	return want
}

// checkAll opens dir and checks it holds exactly want, in layout.
func checkAll(t *testing.T, dir, layout string, want map[string]Record) {
	t.Helper()
	s, err := Open(dir, &Options{SweepInterval: -1})
	require.NoError(t, err)
	defer s.Close()
	assert.Equal(t, layout, s.Layout())
	for id, w := range want {
		rec, err := s.Load(bg, id)
		require.NoError(t, err, "record %s", Key(id))
		assert.Equal(t, w.Data, rec.Data)
		assert.True(t, w.Expiry.Equal(rec.Expiry))
	}
	n := 0
	require.NoError(t, s.Scan(bg, func(fi FileInfo) error {
		switch fi.State {
		case FileLive:
			n++
		case FileShard:
		default:
			t.Errorf("%s: %s after reshard", fi.Path, fi.State)
		}
		return nil
	}))
	assert.Equal(t, len(want), n, "every record once")
}

func TestReshardBetweenLayouts(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "store")
	want := fillForReshard(t, dir, "1x2", 300)
	for _, l := range []string{"2x1", "flat", "1x3", "1x2"} {
		var steps []string
		require.NoError(t, Reshard(bg, dir, l, func(p ReshardProgress) {
			if len(steps) == 0 || steps[len(steps)-1] != p.Step {
				steps = append(steps, p.Step)
			}
		}))
		assert.Equal(t, []string{"start", "move", "cleanup", "switch", "done"}, steps)
		checkAll(t, dir, l, want)
		assert.NoDirExists(t, filepath.Join(dir, reshardDir))
	}
	require.NoError(t, Reshard(bg, dir, "1x2", nil), "to the current layout: nothing to do")
	assert.ErrorIs(t, Reshard(bg, dir, "9x9", nil), ErrLayout)
	assert.ErrorIs(t, Reshard(bg, filepath.Join(dir, "nope"), "flat", nil), ErrNotStore)
}

func TestReshardRefusedWhileOpen(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "store")
	fillForReshard(t, dir, "1x2", 10)
	s, err := Open(dir, &Options{SweepInterval: -1})
	require.NoError(t, err)
	err = Reshard(bg, dir, "2x2", nil)
	require.ErrorIs(t, err, ErrInUse)
	require.NoError(t, s.Close())
	require.NoError(t, Reshard(bg, dir, "2x2", nil))
}

func TestOpenRefusedDuringReshard(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "store")
	fillForReshard(t, dir, "1x2", 10)
	var openErr error
	require.NoError(t, Reshard(bg, dir, "flat", func(p ReshardProgress) {
		if p.Step == "move" && p.Done == 1 {
			_, openErr = Open(dir, &Options{SweepInterval: -1})
		}
	}))
	require.ErrorIs(t, openErr, ErrResharding)
	assert.Contains(t, openErr.Error(), "another process is resharding")
}

// TestReshardStoppedAnywhereFinishes stops a reshard after each of its
// steps in turn, as a crash would leave it, checks that Open refuses the
// half-moved store naming the command that finishes it, and that a rerun
// does finish it with every record once. (cmd/filestore's tests kill the
// real command with SIGKILL at such points.)
func TestReshardStoppedAnywhereFinishes(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "store")
	want := fillForReshard(t, dir, "1x2", 12)
	layouts := []string{"2x1", "flat"}
	for k := 1; ; k++ {
		to := layouts[k%2]
		ctx, cancel := context.WithCancel(bg)
		calls := 0
		err := Reshard(ctx, dir, to, func(ReshardProgress) {
			calls++
			if calls == k {
				cancel()
			}
		})
		cancel()
		if err == nil {
			checkAll(t, dir, to, want)
			require.Greater(t, k, 12, "the reshard took fewer steps than it moves records")
			return
		}
		require.ErrorIs(t, err, context.Canceled)
		_, err = Open(dir, &Options{SweepInterval: -1})
		require.ErrorIs(t, err, ErrResharding)
		assert.Contains(t, err.Error(), "filestore reshard "+dir+" --layout "+to)
		assert.ErrorIs(t, Reshard(bg, dir, layouts[(k+1)%2], nil), ErrLayout, "another layout while one is unfinished")
		require.NoError(t, Reshard(bg, dir, to, nil))
		checkAll(t, dir, to, want)
		assert.NoDirExists(t, filepath.Join(dir, reshardDir))
		if k > 60 {
			t.Fatal("never finished")
		}
	}
}

func TestReshardReusesAnEmptyLeftoverTree(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "store")
	want := fillForReshard(t, dir, "1x2", 10)
	// A run killed between making data.new and writing the marker.
	require.NoError(t, os.MkdirAll(filepath.Join(dir, reshardDir, "a", "b"), 0o700))
	checkAll(t, dir, "1x2", want)
	require.NoError(t, Reshard(bg, dir, "1x1", nil))
	checkAll(t, dir, "1x1", want)
	assert.NoDirExists(t, filepath.Join(dir, reshardDir))

	// One that holds a file is not ours to remove.
	require.NoError(t, os.MkdirAll(filepath.Join(dir, reshardDir), 0o700))
	require.NoError(t, os.WriteFile(filepath.Join(dir, reshardDir, "x"), nil, 0o600))
	require.ErrorIs(t, Reshard(bg, dir, "1x2", nil), fs.ErrExist)
	checkAll(t, dir, "1x1", want)
}
