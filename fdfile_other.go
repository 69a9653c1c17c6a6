//go:build !linux

package filestore

import (
	"io/fs"
	"os"
	"time"
)

// openFD is os.OpenFile where the descriptor-based file of fdfile_linux.go
// is not built.
func openFD(name string, flag int, perm fs.FileMode) (file, error) {
	f, err := os.OpenFile(name, flag, perm)
	if err != nil {
		// Return a nil interface, not a typed nil.
		return nil, err
	}
	return osFile{f}, nil
}

// osFile is an *os.File that does not keep the sweeper's expiry hint: off
// Linux the modification time is what tells a temp file's age.
type osFile struct{ *os.File }

func (osFile) SetModTime(time.Time) error { return nil }

// tempBorn is the modification time: see osFile.
func tempBorn(fi fs.FileInfo) time.Time { return fi.ModTime() }
