package filestore

import (
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"syscall"
	"testing"

	"github.com/stretchr/testify/require"
)

// TestFDFileMatchesOS checks the bare-descriptor file against the os
// package on what the engine relies on: modes and sizes as os.Lstat reports
// them, whole writes and reads, and a second Close that fails cleanly.
func TestFDFileMatchesOS(t *testing.T) {
	dir := t.TempDir()
	reg := filepath.Join(dir, "reg")
	f, err := openFD(reg, os.O_WRONLY|os.O_CREATE|os.O_EXCL|noFollow|noBlock, 0o600)
	require.NoError(t, err)
	payload := make([]byte, 300_000) // several pages: Write must write it all
	for i := range payload {
		payload[i] = byte(i)
	}
	n, err := f.Write(payload)
	require.NoError(t, err)
	require.Equal(t, len(payload), n)
	require.NoError(t, f.Sync())
	require.NoError(t, f.Chmod(0o640))
	require.NoError(t, f.Close())
	require.ErrorIs(t, f.Close(), os.ErrClosed)
	_, err = f.Write(payload)
	require.ErrorIs(t, err, os.ErrClosed)

	f, err = openFD(reg, os.O_RDONLY|noFollow|noBlock, 0)
	require.NoError(t, err)
	got, err := io.ReadAll(f)
	require.NoError(t, err)
	require.Equal(t, payload, got)
	require.NoError(t, f.Close())

	require.NoError(t, os.Mkdir(filepath.Join(dir, "sub"), 0o700))
	require.NoError(t, syscall.Mkfifo(filepath.Join(dir, "fifo"), 0o600))
	for _, name := range []string{"reg", "sub", "fifo"} {
		path := filepath.Join(dir, name)
		f, err := openFD(path, os.O_RDONLY|noFollow|noBlock, 0)
		require.NoError(t, err, name)
		fi, err := f.Stat()
		require.NoError(t, err, name)
		want, err := os.Lstat(path)
		require.NoError(t, err, name)
		require.Equal(t, want.Mode(), fi.Mode(), name)
		require.Equal(t, want.Size(), fi.Size(), name)
		require.Equal(t, want.ModTime(), fi.ModTime(), name)
		require.Equal(t, name, fi.Name())
		require.Equal(t, want.Sys().(*syscall.Stat_t).Ino, fi.Sys().(*syscall.Stat_t).Ino, name)
		require.NoError(t, f.Close(), name)
	}

	// A directory is walked through ReadDir, which hands the descriptor to
	// an *os.File; Close must then close it exactly once.
	d, err := openFD(dir, os.O_RDONLY|noFollow|noBlock, 0)
	require.NoError(t, err)
	ents, err := d.ReadDir(-1)
	require.NoError(t, err)
	require.Len(t, ents, 3)
	require.NoError(t, d.Close())
	require.ErrorIs(t, d.Close(), os.ErrClosed)

	_, err = openFD(filepath.Join(dir, "missing"), os.O_RDONLY, 0)
	require.ErrorIs(t, err, fs.ErrNotExist)
	var pe *fs.PathError
	require.ErrorAs(t, err, &pe)
	require.NoError(t, os.Symlink(reg, filepath.Join(dir, "link")))
	_, err = openFD(filepath.Join(dir, "link"), os.O_RDONLY|noFollow, 0)
	require.ErrorIs(t, err, syscall.ELOOP)
}
