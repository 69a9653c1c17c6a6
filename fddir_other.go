//go:build !(linux && (amd64 || arm64))

package filestore

// OpenDir is a pathDir where fdDir is not built: each name is joined to
// the directory's path.
func (osFS) OpenDir(name string) (dir, error) { return openPathDir(osFS{}, name) }
