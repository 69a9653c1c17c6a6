//go:build !unix

package filestore

import (
	"fmt"
	"io/fs"
)

// On systems without O_NOFOLLOW, O_NONBLOCK or Unix ownership the checks
// fall back to what fs.FileInfo can tell. filestore is built and tested on
// Unix; see the package documentation.
const (
	noFollow = 0
	noBlock  = 0
)

func checkRecordFile(fi fs.FileInfo) error {
	if !fi.Mode().IsRegular() {
		return fmt.Errorf("%w: not a regular file (%v)", ErrCorrupt, fi.Mode().Type())
	}
	return nil
}

func checkRootOwner(fs.FileInfo) error { return nil }

// dirRemoved cannot tell without link counts: a cached directory is then
// never taken for removed.
func dirRemoved(fs.FileInfo) bool { return false }

func umaskTrims() bool { return true }

// busyLock is the lockFile where flock(2) is not at hand: it always reports
// the lock busy, so every acquisition takes gofrs/flock's path.
type busyLock struct{}

func openLockFile(string) (lockFile, error) { return busyLock{}, nil }

func (busyLock) TryLock() error { return errLockBusy }
func (busyLock) Unlock() error  { return nil }
func (busyLock) Close() error   { return nil }

// fsBlockSize is the common filesystem block size: see sys_unix.go.
func fsBlockSize(string) int { return 4096 }
