package filestore

import "golang.org/x/sys/unix"

// filesystemOf names the kind of filesystem that holds path, from statfs's
// type number, and reports whether it is shared over a network (its
// clients do not see one another's locks and renames as one host's
// processes do) or is FUSE (which may be either). An unknown number is
// taken for a local filesystem.
func filesystemOf(path string) (name string, network, fuse bool, err error) {
	var st unix.Statfs_t
	if err := ignoringEINTR(func() error { return unix.Statfs(path, &st) }); err != nil {
		return "", false, false, err
	}
	name, network, fuse = classifyFS(int64(st.Type))
	return name, network, fuse, nil
}

// classifyFS names a statfs type number (linux/magic.h and the
// filesystems' own headers).
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
	case 0x65735546:
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
