//go:build unix

package filestore

import (
	"bufio"
	"fmt"
	"io/fs"
	"os"
	"strconv"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"
)

const (
	// noFollow makes open fail on a symlink instead of following it.
	noFollow = syscall.O_NOFOLLOW
	// noBlock keeps open from blocking on a FIFO planted at a record path.
	// On regular files and directories, where Linux ignores it, it also
	// spares os.OpenFile four fcntl calls: given a non-blocking descriptor
	// the os package does not switch it to non-blocking mode and back
	// around its failed attempt to add the file to the netpoller. That
	// matters where os.OpenFile still opens our files: gofrs/flock's lock
	// files, and every file off Linux (see fdFile).
	noBlock = syscall.O_NONBLOCK
)

// euid is the process's effective uid, read once: os.Geteuid is a system
// call, and checkRecordFile runs on every read.
var euid = os.Geteuid()

// checkRecordFile refuses anything at a record path that this store did
// not write: a non-regular file, a file with other hard links (its content
// can be changed through another name) or a file owned by another user.
func checkRecordFile(fi fs.FileInfo) error {
	if !fi.Mode().IsRegular() {
		return fmt.Errorf("%w: not a regular file (%v)", ErrCorrupt, fi.Mode().Type())
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return nil
	}
	// Nlink 0 is an old version a concurrent rename replaced after we
	// opened it: reading it is the "old record" half of the guarantee.
	if st.Nlink > 1 {
		return fmt.Errorf("%w: %d hard links", ErrCorrupt, st.Nlink)
	}
	if int(st.Uid) != euid {
		return fmt.Errorf("%w: owned by uid %d, not %d", ErrCorrupt, st.Uid, euid)
	}
	return nil
}

// dirRemoved reports whether fi, the fstat of an open directory, says the
// directory has been removed: a removed directory has no links.
func dirRemoved(fi fs.FileInfo) bool {
	st, ok := fi.Sys().(*syscall.Stat_t)
	return ok && st.Nlink == 0
}

// checkRootOwner refuses a root directory owned by another user: whoever
// owns it can swap its contents under us.
func checkRootOwner(fi fs.FileInfo) error {
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return nil
	}
	if int(st.Uid) != os.Geteuid() {
		return fmt.Errorf("%w: owned by uid %d, not %d", ErrUnsafeRoot, st.Uid, os.Geteuid())
	}
	return nil
}

// umaskTrims reports whether the process umask removes any of the 0700
// bits, in which case every created file and directory needs a chmod to
// end up exactly 0600/0700. When the umask cannot be read it says yes.
func umaskTrims() bool {
	f, err := os.Open("/proc/self/status")
	if err != nil {
		return true
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "Umask:"); ok {
			m, err := strconv.ParseUint(strings.TrimSpace(v), 8, 32)
			return err != nil || m&0o700 != 0
		}
	}
	return true
}

// fsBlockSize is the block size of the filesystem holding dir, the unit in
// which it allocates a file's space, or 4096 if statfs cannot tell.
func fsBlockSize(dir string) int {
	var st unix.Statfs_t
	if err := unix.Statfs(dir, &st); err != nil || st.Bsize <= 0 {
		return 4096
	}
	return int(st.Bsize)
}
