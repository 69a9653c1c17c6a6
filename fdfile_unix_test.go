//go:build unix

package filestore

import (
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"
)

// TestFDFileMatchesOS checks the bare-descriptor file against the os
// package on what the engine relies on: modes and sizes as os.Lstat reports
// them, whole writes and reads, the modification time it is given, and a
// second Close that fails cleanly.
func TestFDFileMatchesOS(t *testing.T) {
	dir := t.TempDir()
	reg := filepath.Join(dir, "reg")
	f, err := osFS{}.OpenFile(reg, os.O_WRONLY|os.O_CREATE|os.O_EXCL|noFollow|noBlock, 0o600)
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

	f, err = osFS{}.OpenFile(reg, os.O_RDONLY|noFollow|noBlock, 0)
	require.NoError(t, err)
	got, err := io.ReadAll(f)
	require.NoError(t, err)
	require.Equal(t, payload, got)
	require.NoError(t, f.Close())

	require.NoError(t, os.Mkdir(filepath.Join(dir, "sub"), 0o700))
	require.NoError(t, syscall.Mkfifo(filepath.Join(dir, "fifo"), 0o600))
	for _, name := range []string{"reg", "sub", "fifo"} {
		path := filepath.Join(dir, name)
		f, err := osFS{}.OpenFile(path, os.O_RDONLY|noFollow|noBlock, 0)
		require.NoError(t, err, name)
		fi, err := f.Stat()
		require.NoError(t, err, name)
		want, err := os.Lstat(path)
		require.NoError(t, err, name)
		require.Equal(t, want.Mode(), fi.Mode(), name)
		require.Equal(t, want.Size(), fi.Size(), name)
		require.Equal(t, want.ModTime(), fi.ModTime(), name)
		require.Equal(t, name, fi.Name())
		byPath, err := osFS{}.Lstat(path)
		require.NoError(t, err, name)
		require.Equal(t, byPath, fi, name)
		require.NoError(t, f.Close(), name)
	}

	// SetModTime sets exactly the time given, on a file opened by path and
	// on one an fdDir opened, and leaves the access time in the past.
	hint := time.Now().Add(90 * time.Minute).Truncate(time.Second)
	d, err := osFS{}.OpenDir(dir)
	require.NoError(t, err)
	defer d.Close()
	for i, open := range []func(name string) (file, error){
		func(name string) (file, error) {
			return osFS{}.OpenFile(filepath.Join(dir, name), createFlags, fileMode)
		},
		func(name string) (file, error) { return d.Open(name, createFlags, fileMode) },
	} {
		name := fmt.Sprintf("hinted-%d", i)
		f, err := open(name)
		require.NoError(t, err)
		require.NoError(t, f.SetModTime(hint))
		require.NoError(t, f.Close())
		require.Error(t, f.SetModTime(hint), "after Close")
		var st unix.Stat_t
		require.NoError(t, unix.Lstat(filepath.Join(dir, name), &st))
		require.Equal(t, hint, time.Unix(st.Mtim.Unix()), name)
		require.False(t, time.Unix(st.Atim.Unix()).After(time.Now()), name)
	}

	_, err = osFS{}.OpenFile(filepath.Join(dir, "missing"), os.O_RDONLY, 0)
	require.ErrorIs(t, err, fs.ErrNotExist)
	var pe *fs.PathError
	require.ErrorAs(t, err, &pe)
	require.NoError(t, os.Symlink(reg, filepath.Join(dir, "link")))
	_, err = osFS{}.OpenFile(filepath.Join(dir, "link"), os.O_RDONLY|noFollow, 0)
	require.ErrorIs(t, err, syscall.ELOOP)
}
