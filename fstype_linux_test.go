package filestore

import (
	"os"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestClassifyFS(t *testing.T) {
	for magic, want := range map[int64]struct {
		name          string
		network, fuse bool
	}{
		0x6969:     {"nfs", true, false},
		0xff534d42: {"cifs", true, false},
		0x00c36400: {"ceph", true, false},
		0x01021997: {"9p", true, false},
		0x65735546: {"fuse", false, true},
		0x01021994: {"tmpfs", false, false},
		0xef53:     {"ext4", false, false},
		0x1234:     {"", false, false},
	} {
		name, network, fuse := classifyFS(magic)
		require.Equal(t, want.name, name)
		require.Equal(t, want.network, network, want.name)
		require.Equal(t, want.fuse, fuse, want.name)
	}
}

// TestLocalFilesystemsAreLocal: the filesystems tests run on here are not
// taken for network ones.
func TestLocalFilesystemsAreLocal(t *testing.T) {
	dirs := []string{t.TempDir()}
	if fi, err := os.Stat("/dev/shm"); err == nil && fi.IsDir() {
		dirs = append(dirs, "/dev/shm")
	}
	for _, d := range dirs {
		name, network, _, err := filesystemOf(d)
		require.NoError(t, err)
		require.False(t, network, "%s (%s)", d, name)
	}
}
