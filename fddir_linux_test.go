//go:build linux && (amd64 || arm64)

package filestore

import (
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"syscall"
	"testing"

	"github.com/stretchr/testify/require"
)

// TestFDDirMatchesPathDir checks the descriptor-relative dir against the
// path-joining one on every method the walks use: the same names, the same
// lstat (a symlink is not followed), opens that refuse a symlink with
// ELOOP, removes that fail alike on a missing name, and a second Close that
// fails cleanly.
func TestFDDirMatchesPathDir(t *testing.T) {
	root := t.TempDir()
	require.NoError(t, os.WriteFile(filepath.Join(root, "reg"), []byte("record"), 0o600))
	require.NoError(t, os.Mkdir(filepath.Join(root, "sub"), 0o700))
	require.NoError(t, syscall.Mkfifo(filepath.Join(root, "fifo"), 0o600))
	require.NoError(t, os.Symlink("reg", filepath.Join(root, "link")))

	fd, err := osFS{}.OpenDir(root)
	require.NoError(t, err)
	require.IsType(t, &fdDir{}, fd)
	pd, err := openPathDir(osFS{}, root)
	require.NoError(t, err)
	require.Equal(t, root, fd.Path())

	var names [2][]string
	for i, d := range []dir{fd, pd} {
		for {
			batch, err := d.ReadNames(2)
			names[i] = append(names[i], batch...)
			if err == io.EOF {
				break
			}
			require.NoError(t, err)
		}
		slices.Sort(names[i])
	}
	require.Equal(t, []string{"fifo", "link", "reg", "sub"}, names[0])
	require.Equal(t, names[1], names[0])

	for _, name := range names[0] {
		a, err := fd.Lstat(name)
		require.NoError(t, err, name)
		b, err := pd.Lstat(name)
		require.NoError(t, err, name)
		require.Equal(t, b.Mode(), a.Mode(), name)
		require.Equal(t, b.Size(), a.Size(), name)
		require.Equal(t, b.ModTime(), a.ModTime(), name)
		require.Equal(t, name, a.Name())
		require.Equal(t, b.Sys().(*syscall.Stat_t).Ino, a.Sys().(*syscall.Stat_t).Ino, name)
	}
	fi, err := fd.Lstat("link")
	require.NoError(t, err)
	require.Equal(t, fs.ModeSymlink, fi.Mode().Type())

	f, err := fd.Open("reg", os.O_RDONLY|noFollow|noBlock, 0)
	require.NoError(t, err)
	require.Equal(t, filepath.Join(root, "reg"), f.Name())
	got, err := io.ReadAll(f)
	require.NoError(t, err)
	require.Equal(t, "record", string(got))
	require.NoError(t, f.Close())
	for _, d := range []dir{fd, pd} {
		_, err = d.Open("link", os.O_RDONLY|noFollow|noBlock, 0)
		require.ErrorIs(t, err, syscall.ELOOP)
		_, err = d.Lstat("missing")
		require.ErrorIs(t, err, fs.ErrNotExist)
		require.ErrorIs(t, d.Remove("missing"), fs.ErrNotExist)
	}
	var pe *fs.PathError
	require.ErrorAs(t, fd.Remove("missing"), &pe)
	require.Equal(t, filepath.Join(root, "missing"), pe.Path)

	require.NoError(t, fd.Remove("reg"))
	_, err = os.Lstat(filepath.Join(root, "reg"))
	require.ErrorIs(t, err, fs.ErrNotExist)
	require.NoError(t, fd.Sync())

	require.NoError(t, fd.Close())
	require.ErrorIs(t, fd.Close(), os.ErrClosed)
	_, err = fd.Lstat("sub")
	require.ErrorIs(t, err, os.ErrClosed)
	require.NoError(t, pd.Close())

	// A directory never listed closes its bare descriptor itself.
	fd, err = osFS{}.OpenDir(root)
	require.NoError(t, err)
	require.NoError(t, fd.Close())
	require.NoError(t, os.Symlink("sub", filepath.Join(root, "dirlink")))
	_, err = osFS{}.OpenDir(filepath.Join(root, "dirlink"))
	require.Error(t, err, "OpenDir followed a symlink to a directory")
	_, err = osFS{}.OpenDir(filepath.Join(root, "fifo"))
	require.ErrorIs(t, err, syscall.ENOTDIR)
}
