//go:build !linux

package filestore

import (
	"io/fs"
	"os"
)

// openFD is os.OpenFile where the descriptor-based file of fdfile_linux.go
// is not built.
func openFD(name string, flag int, perm fs.FileMode) (file, error) {
	f, err := os.OpenFile(name, flag, perm)
	if err != nil {
		// Return a nil interface, not a typed nil *os.File.
		return nil, err
	}
	return f, nil
}
