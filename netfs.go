package filestore

import (
	"errors"
	"fmt"
	"io/fs"
	"path/filepath"
)

// ErrNetworkFS is returned by Open for a store directory on a network
// filesystem (NFS, SMB/CIFS, Ceph, GlusterFS, Lustre, 9p, AFS and the
// like), unless Options.AllowNetworkFS is set. Such a filesystem's clients
// do not see one another's advisory locks, and renames, as the processes
// of one host do, so the store's guarantees would silently not hold.
var ErrNetworkFS = errors.New("filestore: store directory on a network filesystem, where locks and rename are not reliable across clients (Options.AllowNetworkFS overrides this, and you own the consequences)")

// fsType is what the kernel tells of the filesystem that holds a path:
// statfs(2)'s type number and, for FUSE, the subtype the mount table
// names ("glusterfs" for a "fuse.glusterfs" mount), empty when unknown.
// The zero fsType is an unknown filesystem, taken for a local one.
type fsType struct {
	magic   int64
	subtype string
}

// fuseMagic is FUSE's statfs type number.
const fuseMagic = 0x65735546

// networkFUSE are the FUSE subtypes of network filesystems' clients.
var networkFUSE = map[string]bool{
	"glusterfs": true, "ceph-fuse": true, "ceph": true, "sshfs": true,
	"s3fs": true, "gcsfuse": true, "rclone": true, "juicefs": true,
	"mfs": true, "lizardfs": true, "davfs": true, "beegfs": true,
}

// classify names the filesystem and tells whether it is shared over a
// network or is a FUSE filesystem (which may be either; a FUSE client of a
// known network filesystem is both).
func (t fsType) classify() (name string, network, fuse bool) {
	if uint32(t.magic) == fuseMagic && t.subtype != "" {
		return "fuse." + t.subtype, networkFUSE[t.subtype], true
	}
	return classifyFS(t.magic)
}

// statfsNearest is the fsType of path or, while path does not exist yet
// (Open creates it), of its nearest existing parent, where it will be made.
func statfsNearest(fsys fsys, path string) (fsType, error) {
	for {
		t, err := fsys.Statfs(path)
		parent := filepath.Dir(path)
		if !errors.Is(err, fs.ErrNotExist) || parent == path {
			return t, err
		}
		path = parent
	}
}

// checkFilesystem refuses a root on a network filesystem with ErrNetworkFS
// unless Options.AllowNetworkFS is set, and logs one warning for a store
// opened anyway and for one on FUSE, which cannot be told apart from a
// local filesystem unless its subtype names a known network one.
func (s *Store) checkFilesystem() error {
	t, err := statfsNearest(s.fs, s.root)
	if err != nil {
		return err
	}
	name, network, fuse := t.classify()
	switch {
	case network && !s.opts.AllowNetworkFS:
		return fmt.Errorf("%w: %s is on %s", ErrNetworkFS, s.root, name)
	case network:
		s.netFS = name
		s.log.Warn("filestore: store on a network filesystem, opened because AllowNetworkFS is set: locks and rename are not reliable across its clients", "dir", s.root, "fs", name)
	case fuse:
		s.log.Warn("filestore: store on a FUSE filesystem: if it is shared over a network, locks and rename are not reliable across its clients", "dir", s.root, "fs", name)
	}
	return nil
}

// classifyFS names a Linux statfs type number (linux/magic.h and the
// filesystems' own headers); elsewhere Statfs reports none.
func classifyFS(magic int64) (name string, network, fuse bool) {
	switch uint32(magic) {
	case 0x6969:
		return "nfs", true, false
	case 0x517b:
		return "smb", true, false
	case 0xff534d42:
		return "cifs", true, false
	case 0xfe534d42:
		return "smb2", true, false
	case 0x00c36400:
		return "ceph", true, false
	case 0x0bd00bd0:
		return "lustre", true, false
	case 0x01021997:
		return "9p", true, false
	case 0x5346414f, 0x6b414653:
		return "afs", true, false
	case 0x73757245:
		return "coda", true, false
	case 0x564c:
		return "ncp", true, false
	case 0x7461636f:
		return "ocfs2", true, false
	case 0x01161970:
		return "gfs2", true, false
	case 0x19830326:
		return "beegfs", true, false
	case 0x47504653:
		return "gpfs", true, false
	case 0x20030528:
		return "orangefs", true, false
	case fuseMagic:
		return "fuse", false, true
	case 0x01021994:
		return "tmpfs", false, false
	case 0xef53:
		return "ext4", false, false
	case 0x58465342:
		return "xfs", false, false
	case 0x9123683e:
		return "btrfs", false, false
	}
	return "", false, false
}
