package main

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"

	"github.com/filestore-go/filestore"
)

// openStore opens the existing store in dir for a command that inspects or
// maintains it: never creating one, and with no background sweeper, so
// that the tool changes nothing it was not asked to. A missing directory or
// one that holds no store is an error that says so in one line.
func openStore(dir string) (*filestore.Store, error) {
	fi, err := os.Stat(dir)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return nil, fmt.Errorf("%s: no such directory (no store to open)", dir)
	case err != nil:
		return nil, err
	case !fi.IsDir():
		return nil, fmt.Errorf("%s: not a directory", dir)
	}
	s, err := filestore.Open(dir, &filestore.Options{NoCreate: true, SweepInterval: -1})
	if errors.Is(err, filestore.ErrNotStore) {
		return nil, fmt.Errorf("%s is not a filestore store", dir)
	}
	return s, err
}

// closeStore closes s, turning a failure into the command's error unless
// it already has one.
func closeStore(s *filestore.Store, err *error) {
	if cerr := s.Close(); cerr != nil && *err == nil {
		*err = cerr
	}
}

// isKey reports whether arg has the shape of a record key: 64 lowercase
// hex digits.
func isKey(arg string) bool {
	if len(arg) != 64 {
		return false
	}
	for i := 0; i < len(arg); i++ {
		c := arg[i]
		if (c < '0' || c > '9') && (c < 'a' || c > 'f') {
			return false
		}
	}
	return true
}

// errNoRecord is what show and rm report for an argument that names no
// record either way.
var errNoRecord = errors.New("no such record")

// resolve finds the record an operator names by key or by id: an argument
// of 64 lowercase hex digits is tried as a key first, then as an id. It
// returns the record's key, and what Inspect reports of it. Its errors
// never hold arg unless arg turned out to be a key.
func resolve(ctx context.Context, s *filestore.Store, arg string) (string, filestore.FileInfo, filestore.Record, error) {
	if arg == "" {
		return "", filestore.FileInfo{}, filestore.Record{}, usagef("empty session id or key")
	}
	if isKey(arg) {
		fi, rec, err := s.Inspect(ctx, arg)
		if err == nil {
			return arg, fi, rec, nil
		}
		if !errors.Is(err, filestore.ErrNotFound) {
			return arg, fi, rec, err
		}
	}
	if len(arg) > filestore.MaxIDLength {
		return "", filestore.FileInfo{}, filestore.Record{}, usagef("argument is neither a key nor a session id: ids are at most %d bytes", filestore.MaxIDLength)
	}
	key := filestore.Key(arg)
	fi, rec, err := s.Inspect(ctx, key)
	if errors.Is(err, filestore.ErrNotFound) {
		if isKey(arg) {
			return key, fi, rec, fmt.Errorf("%w: not a key of this store, nor a session id (whose key would be %s)", errNoRecord, key)
		}
		return key, fi, rec, fmt.Errorf("%w: no record for that session id (key %s)", errNoRecord, key)
	}
	return key, fi, rec, err
}
