package filestore

import (
	"bytes"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
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
	_, err = s.sweep(bg, true, func(error) {}, nil)
	require.ErrorIs(t, err, errLockBusy)
	require.NoError(t, release())
	_, err = s.sweep(bg, true, func(error) {}, nil)
	require.NoError(t, err)
}

func TestSweepRemovesStaleTempFilesOnly(t *testing.T) {
	s := openTest(t, nil)
	require.NoError(t, s.Save(bg, "id", []byte("x"), time.Time{}))
	r, _ := s.refOf("id")
	stale := filepath.Join(r.dirPath(), tempPrefix+r.hex+"-crashed")
	fresh := filepath.Join(r.dirPath(), tempPrefix+r.hex+"-writing")
	foreign := filepath.Join(r.dirPath(), ".nfs0000000001")
	notHex := filepath.Join(r.dirPath(), tempPrefix+strings.Repeat("g", hashHexLen)+"-x")
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

// TestSweepReportsCorruptRecordsWithoutIDs: a corrupt record is reported
// by hashed name, never by id: by an explicit DeleteExpired in the error it
// returns, with nothing logged, and by the background sweeper in one log
// line per sweep.
func TestSweepReportsCorruptRecordsWithoutIDs(t *testing.T) {
	checkHygiene(t)
	var logs syncBuffer
	dir := filepath.Join(t.TempDir(), "s")
	s, err := Open(dir, &Options{
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
	require.Contains(t, err.Error(), r.hex)
	require.NotContains(t, err.Error(), "secret")
	require.Empty(t, logs.String(), "an explicit sweep returns its errors and logs nothing")
	require.FileExists(t, r.path())

	swept, err := Open(dir, &Options{
		SweepInterval: time.Millisecond,
		Logger:        slog.New(slog.NewTextHandler(&logs, nil)),
	})
	require.NoError(t, err)
	defer swept.Close()
	deadline := time.Now().Add(time.Minute) // a bound on a hang, not a speed
	for !strings.Contains(logs.String(), r.hex) {
		require.True(t, time.Now().Before(deadline), "the background sweeper logged nothing")
		time.Sleep(time.Millisecond)
	}
	require.NoError(t, swept.Close())
	out := logs.String()
	require.NotContains(t, out, "secret")
	first := strings.Split(out, "\n")[0]
	require.Contains(t, first, r.hex)
	require.Equal(t, 1, strings.Count(first, r.hex), "the file is named once in its log line")
	require.FileExists(t, r.path())
}

// syncBuffer is a bytes.Buffer safe for a logger's goroutine and the test.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}

// TestRecordFilesCarryTheirExpiry: every write sets the record file's
// modification time to the record's expiry, or for a record that never
// expires to the latest expiry a record can hold.
func TestRecordFilesCarryTheirExpiry(t *testing.T) {
	s := openTest(t, nil)
	mtime := func(id string) time.Time {
		r, err := s.refOf(id)
		require.NoError(t, err)
		fi, err := os.Lstat(r.path())
		require.NoError(t, err)
		return fi.ModTime()
	}
	exp := time.Now().Add(90 * time.Minute).Truncate(time.Second)
	require.NoError(t, s.Save(bg, "a", []byte("1"), exp))
	require.True(t, exp.Equal(mtime("a")), "Save: mtime %v, expiry %v", mtime("a"), exp)

	require.NoError(t, s.Save(bg, "b", []byte("1"), time.Time{}))
	require.True(t, expiryHint(0).Equal(mtime("b")), "no expiry: mtime %v", mtime("b"))

	later := exp.Add(time.Hour)
	require.NoError(t, s.Update(bg, "a", func(r *Record) (*Record, error) {
		r.Expiry = later
		return r, nil
	}))
	require.True(t, later.Equal(mtime("a")), "Update: mtime %v, expiry %v", mtime("a"), later)
}

// TestSweepOpensNoLiveRecord: a sweep of live records lstats each one and
// opens none, because their modification times say they have not expired.
func TestSweepOpensNoLiveRecord(t *testing.T) {
	ffs := &faultFS{inner: osFS{}}
	s, err := open(filepath.Join(t.TempDir(), "store"), &Options{SweepInterval: -1}, ffs)
	require.NoError(t, err)
	defer s.Close()
	for i := range 50 {
		require.NoError(t, s.Save(bg, benchID(i), []byte("x"), time.Now().Add(time.Hour)))
	}
	ffs.arm(0, false, 0)
	n, err := s.DeleteExpired(bg)
	calls := ffs.disarm()
	require.NoError(t, err)
	require.Zero(t, n)
	lstats := 0
	for _, c := range calls {
		if isRecordName(filepath.Base(c.path)) {
			require.Equal(t, "lstat", c.op, "the sweep did more than lstat a live record: %v", c)
			lstats++
		}
	}
	require.Equal(t, 50, lstats)
}

// TestSweepTrustsTheHintOnlyToSkip: a record whose modification time was
// lost (a restore from backup, a touch) is checked under its lock, so a
// live one survives and an expired one goes; a crashed writer's temp file
// that already carries a future hint is still reclaimed once stale.
func TestSweepTrustsTheHintOnlyToSkip(t *testing.T) {
	s := openTest(t, nil)
	past := time.Now().Add(-24 * time.Hour)
	require.NoError(t, s.Save(bg, "live", []byte("1"), time.Now().Add(time.Hour)))
	require.NoError(t, s.Save(bg, "forever", []byte("1"), time.Time{}))
	for _, id := range []string{"live", "forever"} {
		r, _ := s.refOf(id)
		require.NoError(t, os.Chtimes(r.path(), past, past))
	}
	n, err := s.DeleteExpired(bg)
	require.NoError(t, err)
	require.Zero(t, n, "a live record with a lost hint was removed")
	for _, id := range []string{"live", "forever"} {
		_, err := s.Load(bg, id)
		require.NoError(t, err, id)
	}

	// "expiring" expires in a minute; its file's time is reset to now, as a
	// copy without -p would. Two minutes later the sweep removes it.
	require.NoError(t, s.Save(bg, "expiring", []byte("1"), time.Now().Add(time.Minute)))
	r, _ := s.refOf("expiring")
	now := time.Now()
	require.NoError(t, os.Chtimes(r.path(), now, now))
	orphan := filepath.Join(r.dirPath(), tempPrefix+r.hex+"-crashed")
	require.NoError(t, os.WriteFile(orphan, []byte("partial"), 0o600))
	future := now.Add(48 * time.Hour)
	require.NoError(t, os.Chtimes(orphan, future, future)) // as a writer that died after setting its hint
	s.now = func() time.Time { return time.Now().Add(2 * staleTempAge) }
	n, err = s.DeleteExpired(bg)
	require.NoError(t, err)
	require.Equal(t, 1, n)
	_, err = s.Load(bg, "expiring")
	require.ErrorIs(t, err, ErrNotFound)
	require.NoFileExists(t, orphan)
}

// TestSweepLocksOncePerRun: the sweeper takes a stripe's lock once for up
// to sweepRun expired records of one shard directory, not once for each,
// and still removes every one of them and nothing else.
func TestSweepLocksOncePerRun(t *testing.T) {
	checkHygiene(t)
	ffs := &faultFS{inner: osFS{}}
	s, err := open(filepath.Join(t.TempDir(), "store"), &Options{SweepInterval: -1}, ffs)
	require.NoError(t, err)
	defer s.Close()
	const expiredIDs = sweepRun + 8 // two runs
	var shard string
	var ids []string
	for i := 0; len(ids) < expiredIDs; i++ {
		id := "same-shard-" + strconv.Itoa(i)
		r, err := s.refOf(id)
		require.NoError(t, err)
		if shard == "" {
			shard = r.dirPath()
		}
		if r.dirPath() == shard {
			ids = append(ids, id)
		}
	}
	for _, id := range ids {
		require.NoError(t, s.Save(bg, id, []byte("x"), time.Now().Add(-time.Minute)))
	}
	require.NoError(t, s.Save(bg, "live", []byte("x"), time.Now().Add(time.Hour)))

	ffs.arm(0, false, 0)
	n, err := s.DeleteExpired(bg)
	calls := ffs.disarm()
	require.NoError(t, err)
	require.Equal(t, expiredIDs, n)
	locks := 0
	for _, c := range calls {
		if c.op == "lock" && strings.HasPrefix(filepath.Base(c.path), "stripe-") {
			locks++
		}
	}
	require.Equal(t, 2, locks, "stripe locks taken for %d expired records of one shard", expiredIDs)
	for _, id := range ids {
		_, err := s.Load(bg, id)
		require.ErrorIs(t, err, ErrNotFound)
	}
	_, err = s.Load(bg, "live")
	require.NoError(t, err)
}

// TestReadsLeaveAccessTimes: every write sets a record file's mtime to its
// expiry, in the future, and relatime then updates the access time on
// every read, dirtying the inode: a metadata write for each Load on a
// disk. Load, Update's read, ForEach and the sweeper's locked re-read must
// leave the access time as it was.
func TestReadsLeaveAccessTimes(t *testing.T) {
	s := openTest(t, nil)
	const id = "reader"
	require.NoError(t, s.Save(bg, id, []byte("1"), time.Now().Add(time.Hour)))
	r, err := s.refOf(id)
	require.NoError(t, err)
	fi, err := os.Stat(r.path())
	require.NoError(t, err)
	past := time.Now().Add(-48 * time.Hour).Truncate(time.Second)
	require.NoError(t, os.Chtimes(r.path(), past, fi.ModTime()))
	atime := func() time.Time {
		st, err := os.Stat(r.path())
		require.NoError(t, err)
		return time.Unix(st.Sys().(*syscall.Stat_t).Atim.Unix())
	}
	require.Equal(t, past, atime())

	_, err = s.Load(bg, id)
	require.NoError(t, err)
	require.Equal(t, past, atime(), "Load updated the access time")
	require.NoError(t, s.ForEach(bg, func(Record) error { return nil }))
	require.Equal(t, past, atime(), "ForEach updated the access time")
	readOnly := errors.New("read only")
	require.ErrorIs(t, s.Update(bg, id, func(cur *Record) (*Record, error) {
		require.NotNil(t, cur)
		return nil, readOnly
	}), readOnly)
	require.Equal(t, past, atime(), "Update's read updated the access time")

	// A live record whose hint was lost is re-read under its lock.
	require.NoError(t, os.Chtimes(r.path(), past, past))
	n, err := s.DeleteExpired(bg)
	require.NoError(t, err)
	require.Zero(t, n)
	require.Equal(t, past, atime(), "the sweeper's re-read updated the access time")
}
