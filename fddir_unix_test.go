//go:build unix

package filestore

import (
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"
)

// TestFDDirMatchesOS checks the descriptor-relative dir against the os
// package and the path-based osFS calls on every method the engine uses:
// the same names, the same lstat (a symlink is not followed, and the link
// count, owner and ctime are there), opens that refuse a symlink with
// ELOOP, removes that fail alike on a missing name, and a second Close that
// fails cleanly.
func TestFDDirMatchesOS(t *testing.T) {
	root := t.TempDir()
	require.NoError(t, os.WriteFile(filepath.Join(root, "reg"), []byte("record"), 0o600))
	require.NoError(t, os.Link(filepath.Join(root, "reg"), filepath.Join(root, "hardlink")))
	require.NoError(t, os.Mkdir(filepath.Join(root, "sub"), 0o700))
	require.NoError(t, syscall.Mkfifo(filepath.Join(root, "fifo"), 0o600))
	require.NoError(t, os.Symlink("reg", filepath.Join(root, "link")))

	d, err := osFS{}.OpenDir(root)
	require.NoError(t, err)
	require.IsType(t, &fdDir{}, d)
	require.Equal(t, root, d.Path())

	var names []string
	for {
		batch, err := d.ReadNames(2)
		names = append(names, batch...)
		if err == io.EOF {
			break
		}
		require.NoError(t, err)
	}
	slices.Sort(names)
	require.Equal(t, []string{"fifo", "hardlink", "link", "reg", "sub"}, names)

	for _, name := range names {
		path := filepath.Join(root, name)
		fi, err := d.Lstat(name)
		require.NoError(t, err, name)
		want, err := os.Lstat(path)
		require.NoError(t, err, name)
		require.Equal(t, want.Mode(), fi.Mode(), name)
		require.Equal(t, want.Size(), fi.Size(), name)
		require.Equal(t, want.ModTime(), fi.ModTime(), name)
		require.Equal(t, name, fi.Name())
		var st unix.Stat_t
		require.NoError(t, unix.Lstat(path, &st), name)
		require.True(t, fi.sys, name)
		require.Equal(t, uint64(st.Nlink), fi.nlink, name)
		require.Equal(t, int(st.Uid), fi.uid, name)
		require.Equal(t, time.Unix(st.Ctim.Unix()), fi.ctime, name)
		byPath, err := osFS{}.Lstat(path)
		require.NoError(t, err, name)
		require.Equal(t, byPath, fi, name)
	}
	fi, err := d.Lstat("hardlink")
	require.NoError(t, err)
	require.EqualValues(t, 2, fi.nlink)
	fi, err = d.Lstat("link")
	require.NoError(t, err)
	require.Equal(t, fs.ModeSymlink, fi.Mode().Type())

	f, err := d.Open("reg", os.O_RDONLY|noFollow|noBlock, 0)
	require.NoError(t, err)
	require.Equal(t, filepath.Join(root, "reg"), f.Name())
	got, err := io.ReadAll(f)
	require.NoError(t, err)
	require.Equal(t, "record", string(got))
	require.NoError(t, f.Close())
	for _, d := range []dir{d, pathsIn(osFS{}, root)} {
		_, err = d.Open("link", os.O_RDONLY|noFollow|noBlock, 0)
		require.ErrorIs(t, err, syscall.ELOOP)
		_, err = d.Lstat("missing")
		require.ErrorIs(t, err, fs.ErrNotExist)
		require.ErrorIs(t, d.Remove("missing"), fs.ErrNotExist)
		var pe *fs.PathError
		require.ErrorAs(t, d.Remove("missing"), &pe)
		require.Equal(t, filepath.Join(root, "missing"), pe.Path)
	}

	require.NoError(t, d.Remove("reg"))
	_, err = os.Lstat(filepath.Join(root, "reg"))
	require.ErrorIs(t, err, fs.ErrNotExist)
	require.NoError(t, d.Sync())
	st, err := d.Stat()
	require.NoError(t, err)
	require.True(t, st.IsDir())
	require.False(t, dirRemoved(st))

	require.NoError(t, d.Close())
	require.ErrorIs(t, d.Close(), os.ErrClosed)
	_, err = d.Lstat("sub")
	require.ErrorIs(t, err, os.ErrClosed)

	// A directory never listed closes its bare descriptor itself.
	d, err = osFS{}.OpenDir(root)
	require.NoError(t, err)
	require.NoError(t, d.Close())
	require.NoError(t, os.Symlink("sub", filepath.Join(root, "dirlink")))
	_, err = osFS{}.OpenDir(filepath.Join(root, "dirlink"))
	require.Error(t, err, "OpenDir followed a symlink to a directory")
	_, err = osFS{}.OpenDir(filepath.Join(root, "fifo"))
	require.ErrorIs(t, err, syscall.ENOTDIR)

	// A removed directory's descriptor says so.
	sub := filepath.Join(root, "sub")
	d, err = osFS{}.OpenDir(sub)
	require.NoError(t, err)
	defer d.Close()
	require.NoError(t, os.Remove(sub))
	st, err = d.Stat()
	require.NoError(t, err)
	require.True(t, dirRemoved(st))
}

// TestFDDirConcurrentUse: the dir cache shares one fdDir among concurrent
// Loads, Saves and Deletes, so its name methods and Stat and Sync must be
// safe for concurrent use. The race detector checks it.
func TestFDDirConcurrentUse(t *testing.T) {
	root := t.TempDir()
	d, err := osFS{}.OpenDir(root)
	require.NoError(t, err)
	defer d.Close()
	var wg sync.WaitGroup
	errs := make(chan error, 4)
	for g := range 4 {
		wg.Go(func() {
			errs <- func() error {
				for i := range 50 {
					tmp, name := fmt.Sprintf("tmp-%d-%d", g, i), fmt.Sprintf("rec-%d", g)
					f, err := d.Open(tmp, createFlags, fileMode)
					if err != nil {
						return err
					}
					_, werr := f.Write([]byte(tmp))
					merr := f.SetModTime(time.Now().Add(time.Hour))
					if err := f.Close(); werr != nil || merr != nil || err != nil {
						return fmt.Errorf("write %v, mtime %v, close %v", werr, merr, err)
					}
					if err := d.Rename(tmp, name); err != nil {
						return err
					}
					if _, err := d.Lstat(name); err != nil {
						return err
					}
					if _, err := d.Stat(); err != nil {
						return err
					}
					if err := d.Sync(); err != nil {
						return err
					}
				}
				return d.Remove(fmt.Sprintf("rec-%d", g))
			}()
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		require.NoError(t, err)
	}
	ents, err := os.ReadDir(root)
	require.NoError(t, err)
	require.Empty(t, ents)
}
