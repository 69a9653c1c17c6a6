//go:build linux

package filestore

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// TestDroppedPrivileges: a server that starts as root, binds its port,
// drops to another uid and only then opens its store owns the records it
// writes. The uid records are checked against is taken when the store is
// opened; taken at package init, it was root's, and every Load of a record
// written as the new uid was ErrCorrupt and the sweeper skipped them all.
//
// The worker runs as root and drops privileges itself, as such a server
// does (Go's syscall.Setuid applies to every thread); then it saves,
// loads, walks and sweeps a store in a directory that uid owns.
func TestDroppedPrivileges(t *testing.T) {
	const nobody = 65534
	if dir, _, ok := worker(t); ok {
		// Supplementary groups first, then the gid, then the uid: after
		// setuid the process may change neither.
		for _, drop := range []func() error{
			func() error { return syscall.Setgroups(nil) },
			func() error { return syscall.Setgid(nobody) },
			func() error { return syscall.Setuid(nobody) },
		} {
			if err := drop(); err != nil {
				fmt.Printf("ack skip cannot drop privileges: %v\n", err)
				return
			}
		}
		if os.Geteuid() != nobody {
			fail("still uid %d after setuid", os.Geteuid())
		}
		s := workerStore(dir, nil)
		defer s.Close()
		if err := s.Save(bg, "live", []byte("live"), time.Now().Add(time.Hour)); err != nil {
			fail("save: %v", err)
		}
		if err := s.Save(bg, "expired", []byte("old"), time.Now().Add(-time.Minute)); err != nil {
			fail("save expired: %v", err)
		}
		if r, err := s.Load(bg, "live"); err != nil || string(r.Data) != "live" {
			fail("load: %v", err)
		}
		if _, err := s.Load(bg, "expired"); !errors.Is(err, ErrNotFound) {
			fail("load expired: %v", err)
		}
		n, err := s.DeleteExpired(bg)
		if err != nil || n != 1 {
			fail("sweep removed %d: %v", n, err)
		}
		if r, err := s.Load(bg, "live"); err != nil || string(r.Data) != "live" {
			fail("load after sweep: %v", err)
		}
		live := 0
		if err := s.ForEach(bg, func(Record) error { live++; return nil }); err != nil || live != 1 {
			fail("foreach visited %d: %v", live, err)
		}
		if err := s.Update(bg, "live", func(r *Record) (*Record, error) { return r, nil }); err != nil {
			fail("update: %v", err)
		}
		fmt.Printf("ack ok saved, loaded, swept %d as uid %d\n", n, os.Geteuid())
		return
	}

	if os.Geteuid() != 0 {
		kernelSkip(t, "needs root to drop privileges to uid %d", nobody)
	}
	checkHygiene(t)
	base := t.TempDir()
	// Once it is uid 65534 the worker must still reach the store.
	for d := base; d != filepath.Dir(d) && strings.HasPrefix(d, os.TempDir()+"/"); d = filepath.Dir(d) {
		require.NoError(t, os.Chmod(d, 0o755))
	}
	dir := filepath.Join(base, "store")
	require.NoError(t, os.Mkdir(dir, 0o700))
	require.NoError(t, os.Chown(dir, nobody, nobody))

	t.Log(kernelWorker(t, "", dir, "", nil))

	// What the worker left is its own: one record, owned by uid 65534.
	records := 0
	require.NoError(t, filepath.WalkDir(filepath.Join(dir, dataDir), func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		require.True(t, isRecordName(d.Name()), "unexpected file %s", d.Name())
		fi, err := os.Lstat(p)
		require.NoError(t, err)
		require.EqualValues(t, nobody, fi.Sys().(*syscall.Stat_t).Uid)
		records++
		return nil
	}))
	require.Equal(t, 1, records)
}
