package filestore

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// On-disk layout of a store rooted at <root>:
//
//	<root>/filestore.json            format marker: version, shard layout, stripes
//	                                 (version 2: a record's stripe is read off
//	                                 the leading bits of its hash, like its
//	                                 shard, so each shard lies in one stripe)
//	<root>/locks/stripe-XXXX.lock    striped record locks, never deleted
//	<root>/locks/sweep.lock          held by the one process sweeping
//	<root>/data/ab/<sha256 hex>      a record, for layout "1x2"
//	<root>/data/ab/.tmp-<sha256 hex>-<random>   a write in progress
//
// A session id never appears in a path: each record is named by the
// lowercase hex SHA-256 of its id, and shard directories by the leading hex
// digits of that name. Lowercase hex cannot collide on case-insensitive
// filesystems and needs no escaping.

const (
	markerName = "filestore.json"
	dataDir    = "data"
	locksDir   = "locks"
	tempPrefix = ".tmp-"
	// initPrefix names the temp file a creating Open links to the marker.
	initPrefix = ".filestore-init-"

	// formatVersion is the marker version new stores get. Version 1
	// stores (stripe by the hash's second byte) and version 2 stores
	// (stripe by the first byte, and a process's flock on a stripe's lock
	// file while it writes records of that stripe) open as they always
	// did, so that processes of earlier releases sharing them still
	// exclude this one; version 3 stores lock records by byte range only
	// (see lock.go), and earlier releases refuse them.
	formatVersion  = 3
	defaultStripes = 256
	// maxShardDigits bounds levels*width: 4 hex digits is 65,536 leaf
	// directories, already far past the point where walks get slow.
	maxShardDigits = 4
	hashHexLen     = 2 * sha256.Size
)

// layout is how record files are spread over shard directories: levels
// directories deep, each named by width hex digits of the record's hash.
// Levels 0 is one flat directory.
type layout struct {
	levels, width int
}

// parseLayout reads "flat" or "LxW" (for example "1x2": one level of 256
// directories).
func parseLayout(s string) (layout, error) {
	if s == "flat" {
		return layout{}, nil
	}
	ls, ws, ok := strings.Cut(s, "x")
	l, err1 := strconv.Atoi(ls)
	w, err2 := strconv.Atoi(ws)
	if !ok || err1 != nil || err2 != nil || l < 1 || w < 1 || l*w > maxShardDigits {
		return layout{}, fmt.Errorf("%w: layout %q: want \"flat\" or \"LxW\" with 1 <= L*W <= %d", ErrLayout, s, maxShardDigits)
	}
	return layout{levels: l, width: w}, nil
}

func (l layout) String() string {
	if l.levels == 0 {
		return "flat"
	}
	return fmt.Sprintf("%dx%d", l.levels, l.width)
}

// hashID returns the SHA-256 of id and its lowercase hex form, the only
// form of an id that reaches the filesystem.
func hashID(id string) ([32]byte, string) {
	sum := sha256.Sum256([]byte(id))
	return sum, hexOf(sum)
}

// hexOf is the lowercase hex form of a record hash: its file name.
func hexOf(sum [32]byte) string {
	var h [hashHexLen]byte
	hex.Encode(h[:], sum[:])
	return string(h[:]) // one allocation; hex.EncodeToString makes two
}

// recordPath returns the path of the record named by hex under the data
// directory, and the shard directory that holds it (a prefix of the path).
// data is absolute and clean and the other parts are hex digits, so plain
// concatenation builds what filepath.Join would, in one allocation and
// without Join's Clean (which was a tenth of a Load's CPU time).
func (l layout) recordPath(data, hex string) (dir, path string) {
	var b strings.Builder
	b.Grow(len(data) + l.levels*(l.width+1) + 1 + len(hex))
	b.WriteString(data)
	for i := range l.levels {
		b.WriteByte(filepath.Separator)
		b.WriteString(hex[i*l.width : (i+1)*l.width])
	}
	dirLen := b.Len()
	b.WriteByte(filepath.Separator)
	b.WriteString(hex)
	path = b.String()
	return path[:dirLen], path
}

// leaves is the number of leaf directories the layout has.
func (l layout) leaves() int { return 1 << (4 * l.levels * l.width) }

// leafOf numbers the leaf directory of the record whose hash is sum, from 0
// to leaves()-1: the value of the hex digits that name its directories.
func (l layout) leafOf(sum [32]byte) int {
	return (int(sum[0])<<8 | int(sum[1])) >> (16 - 4*l.levels*l.width)
}

// isShardName reports whether name is a shard directory name for this
// layout: exactly width lowercase hex digits.
func (l layout) isShardName(name string) bool {
	return len(name) == l.width && isLowerHex(name)
}

// isRecordName reports whether name is a record file name.
func isRecordName(name string) bool {
	return len(name) == hashHexLen && isLowerHex(name)
}

// Temp file names. A record's temp file is named .tmp-<record hash>-<random>
// in the record's shard directory, so that the sweeper can tell whose lock
// covers it; a creating Open's is .filestore-init-<random> in the root.
// writeTemp appends the random part to the prefix.

// tempPrefixOf is the prefix of the temp files of the record named hex.
func tempPrefixOf(hex string) string { return tempPrefix + hex + "-" }

// tempOwner returns the record hash a temp file name belongs to, and whether
// name is a temp file name at all: the inverse of tempPrefixOf.
func tempOwner(name string) (string, bool) {
	rest, ok := strings.CutPrefix(name, tempPrefix)
	if !ok || len(rest) < hashHexLen+1 || rest[hashHexLen] != '-' {
		return "", false
	}
	h := rest[:hashHexLen]
	return h, isLowerHex(h)
}

func isLowerHex(s string) bool {
	for i := 0; i < len(s); i++ {
		if !lowerHexDigit[s[i]] {
			return false
		}
	}
	return true
}

// lowerHexDigit marks the bytes 0-9 and a-f. A table lookup a byte is
// cheaper than two range tests, and a sweep tests every name it walks.
var lowerHexDigit = func() (t [256]bool) {
	for _, c := range "0123456789abcdef" {
		t[c] = true
	}
	return t
}()

// marker is the content of <root>/filestore.json. It is written once, when
// the store is created, so that every process agrees on the layout.
type marker struct {
	Format  string `json:"format"` // always "filestore"
	Version int    `json:"version"`
	Layout  string `json:"layout"`
	Stripes int    `json:"stripes"`
	// Reshard is the layout an unfinished reshard moves the store to
	// (reshard.go); empty otherwise.
	Reshard string `json:"reshard,omitempty"`
}

// readMarker reads and validates the marker. It returns an error matching
// fs.ErrNotExist when there is none.
func readMarker(fsys fsys, root string) (marker, error) {
	var m marker
	path := filepath.Join(root, markerName)
	f, err := fsys.OpenFile(path, os.O_RDONLY|noFollow, 0)
	if err != nil {
		return m, err
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, 4096))
	if err != nil {
		return m, err
	}
	if err := json.Unmarshal(b, &m); err != nil || m.Format != "filestore" {
		return m, fmt.Errorf("%w: %s is not a filestore marker", ErrNotStore, path)
	}
	if m.Version < 1 || m.Version > formatVersion {
		return m, fmt.Errorf("%w: %s: unsupported format version %d", ErrNotStore, path, m.Version)
	}
	if _, err := parseLayout(m.Layout); err != nil {
		return m, fmt.Errorf("%w: %s: %w", ErrNotStore, path, err)
	}
	if m.Reshard != "" {
		if _, err := parseLayout(m.Reshard); err != nil {
			return m, fmt.Errorf("%w: %s: %w", ErrNotStore, path, err)
		}
	}
	if m.Stripes < 1 || m.Stripes > 1<<16 {
		return m, fmt.Errorf("%w: %s: bad stripe count %d", ErrNotStore, path, m.Stripes)
	}
	return m, nil
}

// createMarker publishes m as the store's marker unless another process
// published one first, and returns the marker now in force. The root must
// be empty but for leftovers of concurrent creators.
func (s *Store) createMarker(m marker) (marker, error) {
	path := filepath.Join(s.root, markerName)
	b, err := json.MarshalIndent(m, "", "  ")
	if err != nil {
		return m, err
	}
	b = append(b, '\n')
	root := pathsIn(s.fs, s.root)
	tmpName, err := s.writeTemp(root, initPrefix, b, time.Time{})
	if err != nil {
		return m, err
	}
	tmp := filepath.Join(s.root, tmpName)
	// Link, unlike rename, fails if the marker exists: of two processes
	// creating the store at once, exactly one wins and both then read the
	// winner's marker.
	err = s.fs.Link(tmp, path)
	_ = s.fs.Remove(tmp) // error deliberately ignored: the link, not the temp name, matters
	if err != nil && !errors.Is(err, fs.ErrExist) {
		return m, err
	}
	if err := s.syncDir(s.root, syncAfterRename); err != nil {
		return m, err
	}
	return readMarker(s.fs, s.root)
}

// isEmptyRoot reports whether root holds nothing but the temp files of a
// concurrent creating Open.
func isEmptyRoot(fsys fsys, root string) (bool, error) {
	d, err := fsys.OpenDir(root)
	if err != nil {
		return false, err
	}
	defer d.Close()
	for {
		names, err := d.ReadNames(64)
		for _, name := range names {
			if !strings.HasPrefix(name, initPrefix) {
				return false, nil
			}
		}
		if err == io.EOF {
			return true, nil
		}
		if err != nil {
			return false, err
		}
	}
}
