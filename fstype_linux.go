package filestore

import (
	"bufio"
	"bytes"
	"fmt"
	"io/fs"
	"os"
	"strings"

	"golang.org/x/sys/unix"
)

// Statfs is statfs(2) of name. For FUSE it also reads the subtype of the
// mount that holds name from /proc/self/mountinfo, matched by device
// number; the subtype stays empty if that cannot be read.
func (osFS) Statfs(name string) (fsType, error) {
	var st unix.Statfs_t
	if err := ignoringEINTR(func() error { return unix.Statfs(name, &st) }); err != nil {
		return fsType{}, &fs.PathError{Op: "statfs", Path: name, Err: err}
	}
	t := fsType{magic: int64(st.Type)}
	if uint32(t.magic) == fuseMagic {
		var sb unix.Stat_t
		if err := unix.Stat(name, &sb); err == nil {
			t.subtype = fuseSubtype(uint64(sb.Dev))
		}
	}
	return t, nil
}

// fuseSubtype is the subtype of the FUSE mount of device dev ("glusterfs"
// for the type "fuse.glusterfs" in the mount table), or "".
func fuseSubtype(dev uint64) string {
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return ""
	}
	return mountSubtype(b, fmt.Sprintf("%d:%d", unix.Major(dev), unix.Minor(dev)))
}

// mountSubtype finds the mount of device dev ("major:minor") in a
// mountinfo table and returns its FUSE subtype, or "".
func mountSubtype(mountinfo []byte, dev string) string {
	sc := bufio.NewScanner(bytes.NewReader(mountinfo))
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		// ID parent major:minor root mountpoint options [optional...] - type source super-options
		f := strings.Fields(sc.Text())
		if len(f) < 3 || f[2] != dev {
			continue
		}
		for i := 3; i+1 < len(f); i++ {
			if f[i] == "-" {
				typ := f[i+1]
				if sub, ok := strings.CutPrefix(typ, "fuse."); ok {
					return sub
				}
				if sub, ok := strings.CutPrefix(typ, "fuseblk."); ok {
					return sub
				}
				return ""
			}
		}
	}
	return ""
}
