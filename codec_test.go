package filestore

import (
	"bytes"
	"encoding/binary"
	"errors"
	"flag"
	"fmt"
	"hash/crc32"
	"math"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

var update = flag.Bool("update", false, "rewrite golden records and fuzz seeds in testdata/")

// goldenV1 lists the version 1 records kept in testdata/golden. Every later
// version of the codec must still read them as written here.
var goldenV1 = []struct {
	name     string
	id       string
	data     []byte
	expiry   int64
	compress bool
}{
	{"plain", "session-plain", []byte(`{"user":42,"csrf":"k3Jd9"}`), 1893456000000000000, false},
	{"never-expires", "session-forever", []byte("remember me"), 0, false},
	{"empty-data", "session-empty", nil, 1893456000000000000, false},
	{"zstd", "session-zstd", bytes.Repeat([]byte(`{"cart":["apple","pear","plum"]},`), 64), 1893456000000000000, true},
	{"binary-id", "\x00\xff../../etc", []byte{0, 1, 2, 3}, 1, false},
}

func TestGoldenV1(t *testing.T) {
	for _, g := range goldenV1 {
		t.Run(g.name, func(t *testing.T) {
			path := filepath.Join("testdata", "golden", g.name+".v1.rec")
			if *update {
				b := encodeRecord(g.id, g.data, expiryTime(g.expiry), 0x0123456789abcdef, g.compress)
				require.NoError(t, os.WriteFile(path, b, 0o644))
			}
			b, err := os.ReadFile(path)
			require.NoError(t, err)
			d, err := decodeRecord(b, DefaultMaxRecordSize)
			require.NoError(t, err)
			require.Equal(t, g.id, d.id)
			require.Equal(t, string(g.data), string(d.data))
			require.Equal(t, g.expiry, d.expiry)
			require.Equal(t, uint64(0x0123456789abcdef), d.gen)
			require.Equal(t, g.compress, b[offFlags]&flagZstd != 0)
		})
	}
}

// mutate returns a copy of b changed by fn, with the checksum fixed up
// when fix is set, so that field checks (not the CRC) are what fail.
func mutate(b []byte, fix bool, fn func([]byte) []byte) []byte {
	c := fn(append([]byte(nil), b...))
	if fix && len(c) >= trailerSize {
		body := c[:len(c)-trailerSize]
		binary.BigEndian.PutUint32(c[len(body):], crc32Checksum(body))
	}
	return c
}

// badRecords is every class of malformed record, each for the id "id".
func badRecords(t testing.TB) map[string][]byte {
	return badRecordsFor(t, func(string) string { return "id" })
}

// badRecordsFor is badRecords with each record made for the id idOf
// returns for its class, so that it can be planted at that id's path and
// fail there for its own defect, not for holding another id.
func badRecordsFor(t testing.TB, idOf func(class string) string) map[string][]byte {
	good := func(id string) []byte {
		return encodeRecord(id, []byte("payload"), time.Unix(2000000000, 0), 7, false)
	}
	zgood := func(id string) []byte {
		z := encodeRecord(id, bytes.Repeat([]byte("z"), 4096), time.Time{}, 7, true)
		require.NotZero(t, z[offFlags]&flagZstd)
		return z
	}
	bomb := zstdRLEBomb(32 << 20)
	classes := map[string]func(id string) []byte{
		"empty":            func(string) []byte { return []byte{} },
		"zeros":            func(string) []byte { return make([]byte, 256) },
		"truncated header": func(id string) []byte { return good(id)[:20] },
		"truncated body":   func(id string) []byte { g := good(id); return g[:len(g)-6] },
		"trailing bytes":   func(id string) []byte { return append(good(id), 0) },
		"bad magic": func(id string) []byte {
			return mutate(good(id), true, func(b []byte) []byte { b[0] = 'X'; return b })
		},
		"future version": func(id string) []byte {
			return mutate(good(id), true, func(b []byte) []byte { b[offVersion] = 2; return b })
		},
		"unknown flags": func(id string) []byte {
			return mutate(good(id), true, func(b []byte) []byte { b[offFlags] = 0x80; return b })
		},
		"reserved set": func(id string) []byte {
			return mutate(good(id), true, func(b []byte) []byte { b[6] = 1; return b })
		},
		"header crc": func(id string) []byte {
			return mutate(good(id), false, func(b []byte) []byte { b[offExpiry] ^= 1; return b })
		},
		"payload crc": func(id string) []byte {
			return mutate(good(id), false, func(b []byte) []byte { b[len(b)-5] ^= 1; return b })
		},
		"huge length": func(id string) []byte {
			return mutate(good(id), true, func(b []byte) []byte {
				binary.BigEndian.PutUint32(b[offStored:], math.MaxUint32)
				return b
			})
		},
		"negative expiry": func(id string) []byte {
			return mutate(good(id), true, func(b []byte) []byte {
				binary.BigEndian.PutUint64(b[offExpiry:], math.MaxUint64)
				return b
			})
		},
		"zero id length": func(id string) []byte {
			return mutate(good(id), true, func(b []byte) []byte {
				binary.BigEndian.PutUint16(b[offIDLen:], 0)
				return b
			})
		},
		"raw length mismatch": func(id string) []byte {
			return mutate(good(id), true, func(b []byte) []byte {
				binary.BigEndian.PutUint32(b[offDecoded:], 3)
				return b
			})
		},
		"bad zstd frame": func(id string) []byte {
			return mutate(zgood(id), true, func(b []byte) []byte {
				b[headerSize+len(id)] ^= 0xff // the frame's magic
				return b
			})
		},
		"truncated zstd frame": func(id string) []byte {
			return rebuild(zgood(id), func(p []byte) []byte { return p[:len(p)/2] })
		},
		"zstd bomb":        func(id string) []byte { return rebuildZstd(id, bomb, len(bomb)*2) },
		"oversize inflate": func(id string) []byte { return rebuildZstd(id, bomb, 64<<20) },
		"unknown dictionary": func(id string) []byte {
			return rebuildZstd(id, zstdFrame(0x01, []byte{42}, zstdRaw([]byte("hello"), true)), 5)
		},
	}
	recs := make(map[string][]byte, len(classes))
	for class, mk := range classes {
		recs[class] = mk(idOf(class))
	}
	return recs
}

// rebuild re-encodes a compressed record with its stored payload changed.
func rebuild(rec []byte, fn func([]byte) []byte) []byte {
	idLen := int(binary.BigEndian.Uint16(rec[offIDLen:]))
	payload := fn(append([]byte(nil), rec[headerSize+idLen:len(rec)-trailerSize]...))
	return rebuildZstd(string(rec[headerSize:headerSize+idLen]), payload, int(binary.BigEndian.Uint32(rec[offDecoded:])))
}

// rebuildZstd builds a well-checksummed record whose zstd payload and
// declared decoded length are whatever the test says.
func rebuildZstd(id string, payload []byte, decodedLen int) []byte {
	b := encodeRecord(id, nil, time.Time{}, 1, false)
	b = b[:headerSize+len(id)]
	b[offFlags] = flagZstd
	binary.BigEndian.PutUint32(b[offStored:], uint32(len(payload)))
	binary.BigEndian.PutUint32(b[offDecoded:], uint32(decodedLen))
	b = append(b, payload...)
	return binary.BigEndian.AppendUint32(b, crc32Checksum(b))
}

func TestDecodeRejectsBadRecords(t *testing.T) {
	for name, b := range badRecords(t) {
		t.Run(name, func(t *testing.T) {
			_, err := decodeRecord(b, DefaultMaxRecordSize)
			require.Error(t, err)
			require.True(t, errors.Is(err, ErrCorrupt) || errors.Is(err, ErrTooLarge), "%v", err)
		})
	}
}

// TestBadRecordsThroughTheStore checks every bad record class through
// Load, ForEach and the sweeper: each reports a typed error, none panics,
// none is modified or removed. Each record is made for the id it is
// planted under, so that the store refuses it for its own defect (the
// checksum, a header field, a length), the one the decoder names, and not
// for holding another id, which would hide every other check.
func TestBadRecordsThroughTheStore(t *testing.T) {
	s := openTest(t, nil)
	id := func(class string) string { return "secret-" + class }
	recs := badRecordsFor(t, id)
	for name, b := range recs {
		r, _ := s.refOf(id(name))
		require.NoError(t, os.MkdirAll(r.dirPath(), 0o700))
		require.NoError(t, os.WriteFile(r.path(), b, 0o600))
	}
	for name, b := range recs {
		_, err := s.Load(bg, id(name))
		require.True(t, errors.Is(err, ErrCorrupt) || errors.Is(err, ErrTooLarge), "%s: %v", name, err)
		_, derr := decodeRecord(b, s.MaxRecordSize())
		require.Error(t, derr, name)
		// The store's errors name "filestore: " once, at their start.
		require.Contains(t, err.Error(), strings.ReplaceAll(derr.Error(), "filestore: ", ""), "%s: refused for another reason than its own", name)
		require.NotContains(t, err.Error(), "secret-")
		r, _ := s.refOf(id(name))
		got, err := os.ReadFile(r.path())
		require.NoError(t, err)
		require.Equal(t, b, got, "%s: a read must not modify the file", name)
	}
	err := s.ForEach(bg, func(Record) error { t.Fatal("no record is live"); return nil })
	require.ErrorIs(t, err, ErrCorrupt)
	s.now = func() time.Time { return time.Now().Add(1000 * time.Hour) }
	n, _ := s.DeleteExpired(bg)
	require.Zero(t, n)
	require.Len(t, files(t, s), len(recs), "the sweeper removes no corrupt record")
}

// zstdFrame builds a zstd frame by hand (RFC 8878): magic, the frame
// header descriptor fhd, a window descriptor for a 128 KiB window, extra
// header bytes (a dictionary id) and the blocks.
func zstdFrame(fhd byte, extra []byte, blocks ...[]byte) []byte {
	b := []byte{0x28, 0xb5, 0x2f, 0xfd, fhd, 7 << 3}
	b = append(b, extra...)
	for _, blk := range blocks {
		b = append(b, blk...)
	}
	return b
}

// zstdBlock is a block header: last flag, type (0 raw, 1 RLE), size.
func zstdBlock(typ, size int, last bool) []byte {
	v := typ<<1 | size<<3
	if last {
		v |= 1
	}
	return []byte{byte(v), byte(v >> 8), byte(v >> 16)}
}

func zstdRaw(p []byte, last bool) []byte { return append(zstdBlock(0, len(p), last), p...) }

// zstdRLEBomb is a frame of RLE blocks that inflates to n zero bytes from
// 4 bytes per 128 KiB: the densest bomb the format allows.
func zstdRLEBomb(n int) []byte {
	const blk = 128 << 10
	var blocks [][]byte
	for off := 0; off < n; off += blk {
		blocks = append(blocks, append(zstdBlock(1, blk, off+blk >= n), 0))
	}
	return zstdFrame(0x00, nil, blocks...)
}

func TestZstdBombHeapBounded(t *testing.T) {
	frame := zstdRLEBomb(1 << 30)
	// Sanity: the frame is valid and really inflates to 1 GiB when allowed.
	for _, declared := range []int{DefaultMaxRecordSize, 1 << 30} {
		bomb := rebuildZstd("id", frame, declared)
		require.Less(t, len(bomb), 40<<10, "a small file")
		var before, after runtime.MemStats
		runtime.GC()
		runtime.ReadMemStats(&before)
		_, err := decodeRecord(bomb, DefaultMaxRecordSize)
		runtime.ReadMemStats(&after)
		if declared > DefaultMaxRecordSize {
			require.ErrorIs(t, err, ErrTooLarge)
		} else {
			require.ErrorIs(t, err, ErrCorrupt)
		}
		grew := after.TotalAlloc - before.TotalAlloc
		require.Less(t, grew, uint64(32<<20), "decoding a bomb allocated %d bytes", grew)
	}
}

func crc32Checksum(b []byte) uint32 {
	return crc32.Checksum(b, castagnoli)
}

func FuzzDecodeRecord(f *testing.F) {
	for _, g := range goldenV1 {
		if b, err := os.ReadFile(filepath.Join("testdata", "golden", g.name+".v1.rec")); err == nil {
			f.Add(b)
		}
	}
	for _, b := range badRecords(f) {
		if len(b) < 4096 {
			f.Add(b)
		}
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		d, err := decodeRecord(b, 1<<16)
		if err != nil {
			if !errors.Is(err, ErrCorrupt) && !errors.Is(err, ErrTooLarge) {
				t.Fatalf("untyped error: %v", err)
			}
			return
		}
		// Whatever decodes re-encodes to a record that decodes the same.
		for _, compress := range []bool{false, true} {
			again, err := decodeRecord(encodeRecord(d.id, d.data, expiryTime(d.expiry), d.gen, compress), 1<<16)
			if err != nil {
				t.Fatalf("re-encoded record does not decode: %v", err)
			}
			if again.id != d.id || !bytes.Equal(again.data, d.data) || again.expiry != d.expiry || again.gen != d.gen {
				t.Fatal("round trip changed the record")
			}
		}
	})
}

func FuzzRoundTrip(f *testing.F) {
	f.Add("id", []byte("data"), int64(0), false)
	f.Add("\x00", bytes.Repeat([]byte("ab"), 200), int64(1), true)
	f.Fuzz(func(t *testing.T, id string, data []byte, expiry int64, compress bool) {
		if len(id) == 0 || len(id) > MaxIDLength || expiry < 0 {
			return
		}
		d, err := decodeRecord(encodeRecord(id, data, expiryTime(expiry), 9, compress), DefaultMaxRecordSize)
		if err != nil {
			t.Fatal(err)
		}
		if d.id != id || !bytes.Equal(d.data, data) || d.expiry != expiry {
			t.Fatal("round trip changed the record")
		}
	})
}

func FuzzIDPath(f *testing.F) {
	for _, id := range []string{"a", "..", "../../etc/passwd", "/", "\\", "\x00", "%2e%2e%2f", "\xff", strings.Repeat("x", MaxIDLength)} {
		f.Add(id)
	}
	s, err := Open(filepath.Join(f.TempDir(), "s"), &Options{SweepInterval: -1, Layout: "2x2"})
	require.NoError(f, err)
	f.Cleanup(func() { _ = s.Close() })
	f.Fuzz(func(t *testing.T, id string) {
		r, err := s.refOf(id)
		if len(id) == 0 || len(id) > MaxIDLength {
			if !errors.Is(err, ErrInvalidID) {
				t.Fatalf("want ErrInvalidID, got %v", err)
			}
			return
		}
		if err != nil {
			t.Fatal(err)
		}
		p := r.path()
		rel, err := filepath.Rel(s.data, p)
		if err != nil || filepath.Clean(p) != p || strings.HasPrefix(rel, "..") {
			t.Fatalf("path escapes the data directory: %q", rel)
		}
		want := fmt.Sprintf("%s/%s/%s", r.hex[:2], r.hex[2:4], r.hex)
		if rel != want || !isRecordName(r.hex) {
			t.Fatalf("unexpected path %q", rel)
		}
	})
}

// TestFuzzSeeds keeps a committed seed corpus for the fuzz targets in
// testdata/fuzz, one file per bad-record class, so that `go test` runs them
// as regression cases even without -fuzz. Run with -update to rewrite.
func TestFuzzSeeds(t *testing.T) {
	dir := filepath.Join("testdata", "fuzz", "FuzzDecodeRecord")
	if *update {
		require.NoError(t, os.MkdirAll(dir, 0o755))
		for name, b := range badRecords(t) {
			if len(b) > 8192 {
				continue
			}
			file := strings.ReplaceAll(name, " ", "-")
			content := fmt.Sprintf("go test fuzz v1\n[]byte(%q)\n", b)
			require.NoError(t, os.WriteFile(filepath.Join(dir, file), []byte(content), 0o644))
		}
		idDir := filepath.Join("testdata", "fuzz", "FuzzIDPath")
		require.NoError(t, os.MkdirAll(idDir, 0o755))
		for i, id := range []string{"..", "a/../../b", "\x00\x00", "\xc0\xaf", "%2e%2e%5c", "C:\\Windows"} {
			content := fmt.Sprintf("go test fuzz v1\nstring(%q)\n", id)
			require.NoError(t, os.WriteFile(filepath.Join(idDir, fmt.Sprintf("hostile-%d", i)), []byte(content), 0o644))
		}
	}
	ents, err := os.ReadDir(dir)
	require.NoError(t, err)
	require.NotEmpty(t, ents)
}
