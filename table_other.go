//go:build !unix

package filestore

import "errors"

// mapFile: shared mappings of the counter table are built on Unix only.
func mapFile(string, int) ([]byte, func([]byte) error, error) {
	return nil, nil, errors.New("no shared file mappings on this system")
}
