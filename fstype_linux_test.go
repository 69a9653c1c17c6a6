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
		typ, err := osFS{}.Statfs(d)
		require.NoError(t, err)
		name, network, _ := typ.classify()
		require.False(t, network, "%s (%s)", d, name)
	}
}

func TestMountSubtype(t *testing.T) {
	table := []byte(`21 26 0:20 / /proc rw,relatime - proc proc rw
36 26 0:45 / /mnt/gv0 rw,relatime shared:1 - fuse.glusterfs server:/gv0 rw,user_id=0
37 26 0:46 / /mnt/plain rw,relatime - fuse /dev/fuse rw
38 26 8:1 / /mnt/ntfs rw - fuseblk /dev/sda1 rw
39 26 0:47 / /mnt/my\040files rw master:3 shared:4 - fuse.sshfs host:/x rw
`)
	for dev, want := range map[string]string{
		"0:45": "glusterfs", "0:46": "", "8:1": "", "0:47": "sshfs", "0:20": "", "9:9": "",
	} {
		require.Equal(t, want, mountSubtype(table, dev), dev)
	}
}
