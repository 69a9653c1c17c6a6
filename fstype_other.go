//go:build !linux

package filestore

// filesystemOf cannot tell a network filesystem off Linux: see
// fstype_linux.go.
func filesystemOf(string) (name string, network, fuse bool, err error) {
	return "", false, false, nil
}
