package filestore

import (
	"bytes"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"testing/synctest"
	"time"

	"github.com/stretchr/testify/require"
)

// TestSweeperRunsOnItsInterval drives the background sweeper with
// synctest's fake clock: nothing is removed before the interval, expired
// records are removed after it, live ones never, and Close stops it.
func TestSweeperRunsOnItsInterval(t *testing.T) {
	checkHygiene(t)
	dir := filepath.Join(t.TempDir(), "s")
	synctest.Test(t, func(t *testing.T) {
		var logs bytes.Buffer
		s, err := Open(dir, &Options{
			SweepInterval: time.Minute,
			Logger:        slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
		})
		require.NoError(t, err)
		require.NoError(t, s.Save(bg, "short-lived-id", []byte("x"), time.Now().Add(30*time.Second)))
		require.NoError(t, s.Save(bg, "long-lived-id", []byte("y"), time.Now().Add(time.Hour)))

		time.Sleep(45 * time.Second) // expired, but no sweep yet
		synctest.Wait()
		require.Len(t, files(t, s), 2)

		time.Sleep(20 * time.Second) // the first sweep has run
		synctest.Wait()
		require.Len(t, files(t, s), 1)
		_, err = s.Load(bg, "long-lived-id")
		require.NoError(t, err)
		require.Contains(t, logs.String(), "removed=1")
		require.NotContains(t, logs.String(), "lived-id")

		require.NoError(t, s.Close())
		// After Close no sweep runs, however long we wait.
		require.NoError(t, os.WriteFile(filepath.Join(s.data, "x"), nil, 0o600))
		time.Sleep(2 * time.Hour)
		synctest.Wait()
		require.Len(t, files(t, s), 2)
	})
}

// TestSweeperSkipsWhileAnotherSweeps checks that a sweep round is skipped,
// not queued, while another store holds the sweep lock.
func TestSweeperSkipsWhileAnotherSweeps(t *testing.T) {
	checkHygiene(t)
	s := openTest(t, nil)
	other, err := Open(s.Dir(), &Options{SweepInterval: -1})
	require.NoError(t, err)
	defer other.Close()
	release, err := other.fs.Lock(bg, other.locks.sweepPath(), true)
	require.NoError(t, err)
	_, err = s.sweep(bg, true)
	require.ErrorIs(t, err, errLockBusy)
	require.NoError(t, release())
	_, err = s.sweep(bg, true)
	require.NoError(t, err)
}

func TestSweepRemovesStaleTempFilesOnly(t *testing.T) {
	s := openTest(t, nil)
	require.NoError(t, s.Save(bg, "id", []byte("x"), time.Time{}))
	r, _ := s.refOf("id")
	stale := filepath.Join(r.dir, tempPrefix+r.hex+"-crashed")
	fresh := filepath.Join(r.dir, tempPrefix+r.hex+"-writing")
	foreign := filepath.Join(r.dir, ".nfs0000000001")
	notHex := filepath.Join(r.dir, tempPrefix+strings.Repeat("g", hashHexLen)+"-x")
	for _, p := range []string{stale, fresh, foreign, notHex} {
		require.NoError(t, os.WriteFile(p, []byte("partial"), 0o600))
	}
	old := time.Now().Add(-2 * staleTempAge)
	require.NoError(t, os.Chtimes(stale, old, old))
	n, err := s.DeleteExpired(bg)
	require.NoError(t, err)
	require.Zero(t, n, "temp files are not counted as records")
	require.NoFileExists(t, stale)
	for _, p := range []string{fresh, foreign, notHex, r.path()} {
		require.FileExists(t, p)
	}
}

func TestSweepLogsCorruptRecordsWithoutIDs(t *testing.T) {
	checkHygiene(t)
	var logs bytes.Buffer
	s, err := Open(filepath.Join(t.TempDir(), "s"), &Options{
		SweepInterval: -1,
		Logger:        slog.New(slog.NewTextHandler(&logs, nil)),
	})
	require.NoError(t, err)
	defer s.Close()
	require.NoError(t, s.Save(bg, "the-secret-token", []byte("x"), time.Now().Add(-time.Second)))
	r, _ := s.refOf("the-secret-token")
	require.NoError(t, os.WriteFile(r.path(), []byte("FSR\x00garbage-that-is-long-enough-for-a-header"), 0o600))
	_, err = s.DeleteExpired(bg)
	require.ErrorIs(t, err, ErrCorrupt)
	require.Contains(t, logs.String(), r.hex)
	require.NotContains(t, logs.String(), "secret")
	require.NotContains(t, err.Error(), "secret")
	require.FileExists(t, r.path())
}
