package filestore

import (
	"bytes"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// networkTypes are the network filesystems Open must refuse, as statfs and
// the mount table report them.
var networkTypes = []struct {
	name string
	t    fsType
}{
	{"nfs", fsType{magic: 0x6969}},
	{"smb", fsType{magic: 0x517b}},
	{"cifs", fsType{magic: 0xff534d42}},
	{"smb2", fsType{magic: 0xfe534d42}},
	{"ceph", fsType{magic: 0x00c36400}},
	{"lustre", fsType{magic: 0x0bd00bd0}},
	{"9p", fsType{magic: 0x01021997}},
	{"afs", fsType{magic: 0x5346414f}},
	{"kafs", fsType{magic: 0x6b414653}},
	{"coda", fsType{magic: 0x73757245}},
	{"ncp", fsType{magic: 0x564c}},
	{"ocfs2", fsType{magic: 0x7461636f}},
	{"gfs2", fsType{magic: 0x01161970}},
	{"beegfs", fsType{magic: 0x19830326}},
	{"gpfs", fsType{magic: 0x47504653}},
	{"orangefs", fsType{magic: 0x20030528}},
	// GlusterFS's native client and the others below are FUSE
	// filesystems: statfs says FUSE and the mount table names them.
	{"fuse.glusterfs", fsType{magic: fuseMagic, subtype: "glusterfs"}},
	{"fuse.ceph-fuse", fsType{magic: fuseMagic, subtype: "ceph-fuse"}},
	{"fuse.sshfs", fsType{magic: fuseMagic, subtype: "sshfs"}},
	{"fuse.s3fs", fsType{magic: fuseMagic, subtype: "s3fs"}},
	{"fuse.gcsfuse", fsType{magic: fuseMagic, subtype: "gcsfuse"}},
	{"fuse.juicefs", fsType{magic: fuseMagic, subtype: "juicefs"}},
}

// openOn opens a store in a new directory under a temp dir through a
// faultFS that reports t for every statfs, logging into logs.
func openOn(t *testing.T, typ fsType, allow bool, logs *bytes.Buffer) (*Store, string, error) {
	t.Helper()
	root := filepath.Join(t.TempDir(), "store")
	s, err := open(root, &Options{
		SweepInterval:  -1,
		AllowNetworkFS: allow,
		Logger:         slog.New(slog.NewTextHandler(logs, nil)),
	}, &faultFS{inner: osFS{}, fstype: &typ})
	if err == nil {
		t.Cleanup(func() { _ = s.Close() })
	}
	return s, root, err
}

func requireWorks(t *testing.T, s *Store) {
	t.Helper()
	require.NoError(t, s.Save(bg, "netfs-session", []byte("v"), time.Now().Add(time.Hour)))
	r, err := s.Load(bg, "netfs-session")
	require.NoError(t, err)
	require.Equal(t, "v", string(r.Data))
}

func TestOpenRefusesNetworkFS(t *testing.T) {
	for _, tc := range networkTypes {
		t.Run(tc.name, func(t *testing.T) {
			var logs bytes.Buffer
			_, root, err := openOn(t, tc.t, false, &logs)
			require.ErrorIs(t, err, ErrNetworkFS)
			msg := err.Error()
			require.Contains(t, msg, tc.name)
			require.Contains(t, msg, "locks and rename are not reliable")
			require.Contains(t, msg, "AllowNetworkFS")
			// Refused before anything was made.
			_, statErr := os.Lstat(root)
			require.ErrorIs(t, statErr, os.ErrNotExist)

			// Overridden: it opens and works, and says once what it risks.
			logs.Reset()
			s, _, err := openOn(t, tc.t, true, &logs)
			require.NoError(t, err)
			requireWorks(t, s)
			require.Equal(t, 1, strings.Count(logs.String(), "AllowNetworkFS is set"), logs.String())
			// The read cache is off there: no process on another host
			// sees this one's change counters.
			require.Contains(t, logs.String(), "no shared change counters on a network filesystem")
		})
	}
}

func TestOpenExistingStoreOnNetworkFS(t *testing.T) {
	// A store made on a local disk that is later exported over NFS is
	// refused as well.
	root := filepath.Join(t.TempDir(), "store")
	s, err := Open(root, &Options{SweepInterval: -1})
	require.NoError(t, err)
	require.NoError(t, s.Close())
	_, err = open(root, &Options{SweepInterval: -1}, &faultFS{inner: osFS{}, fstype: &fsType{magic: 0x6969}})
	require.ErrorIs(t, err, ErrNetworkFS)
}

func TestOpenOnFUSEWarnsOnce(t *testing.T) {
	for _, typ := range []fsType{{magic: fuseMagic}, {magic: fuseMagic, subtype: "lxcfs"}} {
		t.Run(fmt.Sprintf("%q", typ.subtype), func(t *testing.T) {
			var logs bytes.Buffer
			s, _, err := openOn(t, typ, false, &logs)
			require.NoError(t, err)
			requireWorks(t, s)
			require.Equal(t, 1, strings.Count(logs.String(), "level=WARN"), logs.String())
			require.Contains(t, logs.String(), "FUSE")
		})
	}
}

func TestOpenOnLocalTypesIsQuiet(t *testing.T) {
	for _, typ := range []fsType{{}, {magic: 0xef53}, {magic: 0x01021994}, {magic: 0x58465342}, {magic: 0x9123683e}, {magic: 0x1234}} {
		t.Run(fmt.Sprintf("%#x", typ.magic), func(t *testing.T) {
			var logs bytes.Buffer
			s, _, err := openOn(t, typ, false, &logs)
			require.NoError(t, err)
			requireWorks(t, s)
			require.Empty(t, logs.String())
		})
	}
}

// TestOpenOnRealLocalFilesystems: the filesystems of this machine that
// tests run on (ext4 for the temp dir here, tmpfs for /dev/shm) open
// through the real statfs.
func TestOpenOnRealLocalFilesystems(t *testing.T) {
	dirs := []string{t.TempDir()}
	if fi, err := os.Stat("/dev/shm"); err == nil && fi.IsDir() {
		d, err := os.MkdirTemp("/dev/shm", "filestore-netfs-")
		require.NoError(t, err)
		t.Cleanup(func() { _ = os.RemoveAll(d) })
		dirs = append(dirs, d)
	}
	for _, d := range dirs {
		typ, err := osFS{}.Statfs(d)
		require.NoError(t, err)
		name, network, _ := typ.classify()
		t.Logf("%s: %q", d, name)
		require.False(t, network)
		var logs bytes.Buffer
		s, err := Open(filepath.Join(d, "a", "b"), &Options{SweepInterval: -1, Logger: slog.New(slog.NewTextHandler(&logs, nil))})
		require.NoError(t, err, name)
		requireWorks(t, s)
		require.NoError(t, s.Close())
		require.Empty(t, logs.String())
	}
}

func TestStatfsErrorFailsOpen(t *testing.T) {
	f := &faultFS{inner: osFS{}}
	f.arm(1, false, 5 /* EIO */)
	_, err := open(filepath.Join(t.TempDir(), "store"), &Options{SweepInterval: -1}, f)
	require.Error(t, err)
	require.False(t, errors.Is(err, ErrNetworkFS))
	calls := f.disarm()
	require.Equal(t, "statfs", calls[0].op)
}
