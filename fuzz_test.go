package filestore

import (
	"bytes"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// Fuzz targets (issue 5, figure 8) besides codec_test.go's record decode,
// round trip and id-to-path: compressed payloads, and whatever kind of file
// with whatever content is found at a record path. Seeds live in
// testdata/fuzz; TestFuzzSeedFiles rewrites them with -update. CI runs each
// target for 60 s, for example:
//
//	go test -run='^$' -fuzz='^FuzzCompressedPayload$' -fuzztime=60s .

// fuzzMaxData is the MaxRecordSize the fuzz targets decode with: small, so
// that a payload over it is easy to find.
const fuzzMaxData = 1 << 16

// FuzzCompressedPayload feeds arbitrary bytes to the zstd decoder as a
// record's payload, in a record whose checksum is right, with an arbitrary
// declared length. Decoding returns a typed error or exactly the declared
// number of bytes; a record that decodes re-encodes to the same data.
func FuzzCompressedPayload(f *testing.F) {
	for _, seed := range compressedSeeds() {
		f.Add(seed.payload, seed.declared)
	}
	f.Fuzz(func(t *testing.T, payload []byte, declared uint32) {
		b := rebuildZstd("id", payload, int(declared))
		d, err := decodeRecord(b, fuzzMaxData)
		if err != nil {
			if !errors.Is(err, ErrCorrupt) && !errors.Is(err, ErrTooLarge) {
				t.Fatalf("untyped error: %v", err)
			}
			if declared <= fuzzMaxData && errors.Is(err, ErrTooLarge) {
				t.Fatalf("ErrTooLarge for a declared length under the limit: %v", err)
			}
			return
		}
		if uint32(len(d.data)) != declared {
			t.Fatalf("decoded %d bytes, header says %d", len(d.data), declared)
		}
		again, err := decodeRecord(encodeRecord(d.id, d.data, time.Time{}, 1, true), fuzzMaxData)
		if err != nil || !bytes.Equal(again.data, d.data) {
			t.Fatalf("re-encoded payload does not round-trip: %v", err)
		}
	})
}

type compressedSeed struct {
	name     string
	payload  []byte
	declared uint32
}

func compressedSeeds() []compressedSeed {
	text := bytes.Repeat([]byte(`{"user":42,"roles":["admin","dev"]},`), 40)
	good := zstdEncoder().EncodeAll(text, nil)
	noise := make([]byte, 300)
	r := rand.New(rand.NewPCG(1, 2))
	for i := range noise {
		noise[i] = byte(r.Uint32())
	}
	two := append(append([]byte(nil), good...), good...)
	skippable := append([]byte{0x50, 0x2a, 0x4d, 0x18, 4, 0, 0, 0, 1, 2, 3, 4}, good...)
	return []compressedSeed{
		{"valid", good, uint32(len(text))},
		{"valid-short-declared", good, uint32(len(text) - 1)},
		{"valid-long-declared", good, uint32(len(text) + 1)},
		{"two-frames", two, uint32(2 * len(text))},
		{"skippable-frame", skippable, uint32(len(text))},
		{"truncated", good[:len(good)/2], uint32(len(text))},
		{"flipped", mutate(good, false, func(b []byte) []byte { b[len(b)/2] ^= 0x40; return b }), uint32(len(text))},
		{"empty", nil, 0},
		{"magic-only", []byte{0x28, 0xb5, 0x2f, 0xfd}, 10},
		{"noise", noise, 300},
		{"rle-bomb", zstdRLEBomb(1 << 20), 1 << 20},
		{"rle-bomb-under-declared", zstdRLEBomb(1 << 20), 100},
		{"unknown-dictionary", zstdFrame(0x01, []byte{42}, zstdRaw([]byte("hello"), true)), 5},
		{"raw-block", zstdFrame(0x00, nil, zstdRaw([]byte("hello"), true)), 5},
		{"huge-declared", good, 0xffffffff},
	}
}

// Kinds of thing FuzzPlantedRecord puts at a record path.
const (
	plantRegular  = iota // content as it is
	plantSymlink         // a symlink to a file holding content
	plantFIFO            // a FIFO; content unused
	plantDir             // a directory holding a file with content
	plantHardLink        // a second name of a file holding content
	plantForeign         // content, owned by uid 65534
	plantMismatch        // a valid record of content, for another id
	plantOversize        // a valid record of content padded past the limit
	plantKinds
)

var plantKindNames = []string{"regular", "symlink", "fifo", "dir", "hardlink", "foreign-owner", "id-mismatch", "oversize"}

// FuzzPlantedRecord puts each kind of file, with arbitrary content, at a
// record path, and runs Load, Update, ForEach and a sweep over it. Each
// returns a typed error unless the file is a valid record for the id;
// none panics or blocks; the sweeper removes only a valid expired record;
// nothing planted outside the store changes.
func FuzzPlantedRecord(f *testing.F) {
	for kind := range plantKinds {
		f.Add(uint8(kind), expiredRecord(fuzzID))
	}
	f.Add(uint8(plantRegular), encodeRecord(fuzzID, []byte("live"), time.Time{}, 1, true))
	f.Add(uint8(plantRegular), []byte("garbage"))
	base := f.TempDir()
	s, err := Open(filepath.Join(base, "store"), &Options{SweepInterval: -1, MaxRecordSize: 1024})
	require.NoError(f, err)
	f.Cleanup(func() { _ = s.Close() })
	s.now = func() time.Time { return time.Unix(2e9, 0) } // after expiredRecord's expiry
	r, _ := s.refOf(fuzzID)
	require.NoError(f, s.mkdirAll(r.dirPath()))
	outside := filepath.Join(base, "outside")
	root := os.Geteuid() == 0

	f.Fuzz(func(t *testing.T, kind uint8, content []byte) {
		kind %= plantKinds
		if kind == plantForeign && !root {
			kind = plantRegular
		}
		require.NoError(t, os.RemoveAll(r.path()))
		require.NoError(t, os.RemoveAll(outside))
		require.NoError(t, os.Mkdir(outside, 0o700))
		target := filepath.Join(outside, "target")
		switch kind {
		case plantRegular, plantForeign:
			require.NoError(t, os.WriteFile(r.path(), content, 0o600))
			if kind == plantForeign {
				require.NoError(t, os.Lchown(r.path(), 65534, 65534))
			}
		case plantSymlink, plantHardLink:
			require.NoError(t, os.WriteFile(target, content, 0o600))
			if kind == plantSymlink {
				require.NoError(t, os.Symlink(target, r.path()))
			} else {
				require.NoError(t, os.Link(target, r.path()))
			}
		case plantFIFO:
			require.NoError(t, syscall.Mkfifo(r.path(), 0o600))
		case plantDir:
			require.NoError(t, os.Mkdir(r.path(), 0o700))
			require.NoError(t, os.WriteFile(filepath.Join(r.path(), "inside"), content, 0o600))
		case plantMismatch:
			b := encodeRecord("another-"+fuzzID, content, time.Unix(1e9, 0), 1, false)
			require.NoError(t, os.WriteFile(r.path(), b, 0o600))
		case plantOversize:
			b := encodeRecord(fuzzID, append(content, make([]byte, 1025)...), time.Unix(1e9, 0), 1, false)
			require.NoError(t, os.WriteFile(r.path(), b, 0o600))
		}
		before := treeHash(t, outside)
		valid := kind == plantRegular && validFor(content, fuzzID)
		// Load and Update must refuse what is not a valid record for the
		// id; ForEach and the sweeper may pass over it in silence (an
		// expired record is not visited, a live one not swept).
		check := func(op string, err error, mustRefuse bool) {
			t.Helper()
			switch {
			case err == nil:
				if mustRefuse && !valid {
					t.Fatalf("%s accepted a %s", op, plantKindNames[kind])
				}
			case errors.Is(err, ErrNotFound):
				if !valid {
					t.Fatalf("%s: ErrNotFound for a %s", op, plantKindNames[kind])
				}
			case !errors.Is(err, ErrCorrupt) && !errors.Is(err, ErrTooLarge):
				t.Fatalf("%s on a %s: untyped error: %v", op, plantKindNames[kind], err)
			case valid:
				t.Fatalf("%s refused a valid record: %v", op, err)
			}
			if err != nil && strings.Contains(err.Error(), fuzzID) {
				t.Fatalf("%s: the id in an error", op)
			}
		}
		_, err := s.Load(bg, fuzzID)
		check("load", err, true)
		stop := errors.New("stop")
		err = s.Update(bg, fuzzID, func(*Record) (*Record, error) { return nil, stop })
		if err == stop {
			err = nil
		}
		check("update", err, true)
		visited := false
		err = s.ForEach(bg, func(Record) error { visited = true; return nil })
		check("foreach", err, false)
		if visited && !valid {
			t.Fatalf("foreach visited a %s", plantKindNames[kind])
		}
		_, err = s.DeleteExpired(bg)
		check("sweep", err, false)
		if _, err := os.Lstat(r.path()); err != nil && !valid {
			t.Fatalf("the sweeper removed a %s: %v", plantKindNames[kind], err)
		}
		if after := treeHash(t, outside); after != before {
			t.Fatal("a planted target changed")
		}
	})
}

const fuzzID = "fuzz-session"

// validFor reports whether b is a record the store accepts for id.
func validFor(b []byte, id string) bool {
	d, err := decodeRecord(b, 1024)
	return err == nil && d.id == id
}

// TestFuzzSeedFiles keeps the committed seeds of this file's fuzz targets
// in testdata/fuzz, one per case, so that plain `go test` runs them. Run
// with -update to rewrite them.
func TestFuzzSeedFiles(t *testing.T) {
	cdir := filepath.Join("testdata", "fuzz", "FuzzCompressedPayload")
	pdir := filepath.Join("testdata", "fuzz", "FuzzPlantedRecord")
	if *update {
		require.NoError(t, os.MkdirAll(cdir, 0o755))
		for _, s := range compressedSeeds() {
			if len(s.payload) > 8192 {
				continue
			}
			c := fmt.Sprintf("go test fuzz v1\n[]byte(%q)\nuint32(%d)\n", s.payload, s.declared)
			require.NoError(t, os.WriteFile(filepath.Join(cdir, s.name), []byte(c), 0o644))
		}
		require.NoError(t, os.MkdirAll(pdir, 0o755))
		for kind, name := range plantKindNames {
			c := fmt.Sprintf("go test fuzz v1\nuint8(%d)\n[]byte(%q)\n", kind, expiredRecord(fuzzID))
			require.NoError(t, os.WriteFile(filepath.Join(pdir, name), []byte(c), 0o644))
		}
	}
	for _, dir := range []string{cdir, pdir} {
		ents, err := os.ReadDir(dir)
		require.NoError(t, err)
		require.NotEmpty(t, ents, dir)
	}
}
