package filestore

import (
	"bytes"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"math/rand/v2"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// Security and bad input (issue 5, figures 6 and 7): session ids are
// bearer secrets and attacker-controlled, the store's directory may be
// shared with other users of the host, and anything found at a record path
// may have been planted there.

// idEncodings returns the forms in which an id could leak into a name.
func idEncodings(id string) []string {
	b := []byte(id)
	return []string{
		id,
		hex.EncodeToString(b),
		base64.StdEncoding.EncodeToString(b),
		base64.RawStdEncoding.EncodeToString(b),
		base64.URLEncoding.EncodeToString(b),
		base64.RawURLEncoding.EncodeToString(b),
		url.QueryEscape(id),
		url.PathEscape(id),
	}
}

// TestNoIDOnDiskAfterManySaves saves 10,000 sessions (1,000 with -short)
// and checks that no name anywhere in the store contains any id in any
// encoding, in any case. Rather than search every name for 80,000
// strings, it indexes every 16-byte window of every encoding, lowercased,
// and looks up every 16-byte window of every name: an encoding inside a
// name has all its windows inside it.
func TestNoIDOnDiskAfterManySaves(t *testing.T) {
	n := 10000
	if testing.Short() {
		n = 1000
	}
	checkHygiene(t)
	s := openTest(t, &Options{SweepInterval: -1, NoSync: true})
	const w = 16
	windows := map[string]bool{}
	for i := range n {
		// Session ids as frameworks make them, plus characters that
		// escaping changes.
		raw := make([]byte, 24)
		for j := range raw {
			raw[j] = byte(rand.Uint32())
		}
		id := base64.RawURLEncoding.EncodeToString(raw)
		if i%2 == 1 {
			id = "sess/" + id + "+=?&"
		}
		require.NoError(t, s.Save(bg, id, []byte("x"), time.Time{}))
		for _, enc := range idEncodings(id) {
			enc = strings.ToLower(enc)
			for k := 0; k+w <= len(enc); k++ {
				windows[enc[k:k+w]] = true
			}
		}
	}
	names := 0
	err := filepath.WalkDir(s.Dir(), func(p string, d fs.DirEntry, err error) error {
		require.NoError(t, err)
		names++
		name := strings.ToLower(d.Name())
		for k := 0; k+w <= len(name); k++ {
			if windows[name[k:k+w]] {
				t.Errorf("a name on disk contains part of an encoded id: %s", p)
				return nil
			}
		}
		return nil
	})
	require.NoError(t, err)
	require.Greater(t, names, n)
	t.Logf("%d saves, %d names on disk, %d id windows: no match", n, names, len(windows))
}

// hostileIDs are ids that would escape a store that put ids in paths. The
// last three are invalid.
var hostileIDs = map[string]string{
	"dotdot":            "..",
	"dot":               ".",
	"deep dotdot":       strings.Repeat("../", 300) + "outside/sentinel",
	"absolute":          "/etc/passwd",
	"slash":             "/",
	"backslash":         "\\",
	"windows dotdot":    "..\\..\\outside\\sentinel",
	"nul":               "\x00",
	"nul in path":       "a\x00/../../outside/sentinel",
	"url-escaped":       "%2e%2e%2f%2e%2e%2foutside%2fsentinel",
	"double-escaped":    "%252e%252e%252f",
	"invalid utf-8":     "\xff\xfe\xfd",
	"overlong utf-8":    "\xc0\xae\xc0\xae\xc0\xaf",
	"rtl override":      "\u202eexe.txt",
	"windows device":    "CON",
	"shell":             "$(touch ../outside/pwned);`id`",
	"glob":              "*?[]{}~",
	"control":           "\n\r\t\x1b[2J",
	"max length":        strings.Repeat("a", MaxIDLength),
	"relative sentinel": "../outside/sentinel",
	"empty":             "",
	"over max":          strings.Repeat("b", MaxIDLength+1),
	"64 KiB":            strings.Repeat("c", 64<<10),
}

// TestHostileIDsStayInsideRoot runs every operation with every hostile id,
// from a working directory next to the store, and checks that nothing
// outside the store changed and that inside it there are only names the
// store makes.
func TestHostileIDsStayInsideRoot(t *testing.T) {
	checkHygiene(t)
	sandbox := t.TempDir()
	outside := filepath.Join(sandbox, "outside")
	require.NoError(t, os.MkdirAll(filepath.Join(outside, "cwd"), 0o700))
	require.NoError(t, os.WriteFile(filepath.Join(outside, "sentinel"), []byte("sentinel"), 0o600))
	t.Chdir(filepath.Join(outside, "cwd"))
	s, err := Open(filepath.Join(sandbox, "store"), &Options{SweepInterval: -1, Layout: "2x2"})
	require.NoError(t, err)
	defer s.Close()
	before := treeHash(t, outside)

	for name, id := range hostileIDs {
		valid := len(id) > 0 && len(id) <= MaxIDLength
		check := func(op string, err error) {
			t.Helper()
			if !valid {
				require.ErrorIs(t, err, ErrInvalidID, "%s: %s", name, op)
			} else {
				require.NoError(t, err, "%s: %s", name, op)
			}
			if err != nil && len(id) >= 8 {
				require.NotContains(t, err.Error(), id, "%s: %s", name, op)
			}
		}
		check("save", s.Save(bg, id, []byte("v"), time.Time{}))
		r, err := s.Load(bg, id)
		check("load", err)
		if valid {
			require.Equal(t, id, r.ID)
		}
		check("update", s.Update(bg, id, func(*Record) (*Record, error) {
			return &Record{Data: []byte("u"), Expiry: time.Now().Add(-time.Second)}, nil
		}))
		check("delete", s.Delete(bg, id))
		check("save expired", s.Save(bg, id, []byte("v"), time.Now().Add(-time.Second)))
	}
	seen := 0
	require.NoError(t, s.ForEach(bg, func(Record) error { seen++; return nil }))
	require.Zero(t, seen, "every hostile session was saved expired")
	n, err := s.DeleteExpired(bg)
	require.NoError(t, err)
	require.Positive(t, n)

	require.Equal(t, before, treeHash(t, outside), "something outside the store changed")
	requireOnlyStoreNames(t, s)
}

// storeName matches every path a store creates, relative to its root.
var storeName = regexp.MustCompile(`^(filestore\.json|counters|data|locks|locks/(sweep|store|stripe-[0-9a-f]{4})\.lock|data(/[0-9a-f]{2}){0,2}|data/[0-9a-f]{2}/[0-9a-f]{2}/[0-9a-f]{64})$`)

func requireOnlyStoreNames(t *testing.T, s *Store) {
	t.Helper()
	err := filepath.WalkDir(s.Dir(), func(p string, d fs.DirEntry, err error) error {
		require.NoError(t, err)
		if p == s.Dir() {
			return nil
		}
		rel, err := filepath.Rel(s.Dir(), p)
		require.NoError(t, err)
		require.Regexp(t, storeName, rel)
		return nil
	})
	require.NoError(t, err)
}

// TestModesUnderUmaskZero: with no umask to help, every directory the
// store creates is exactly 0700 and every file exactly 0600, whatever the
// layout and whichever operation created it.
func TestModesUnderUmaskZero(t *testing.T) {
	old := syscall.Umask(0)
	defer syscall.Umask(old)
	for _, layout := range []string{"flat", "1x2", "2x2"} {
		s := openTest(t, &Options{SweepInterval: -1, Layout: layout, Compress: true})
		for i := range 20 {
			id := fmt.Sprintf("id-%d", i)
			switch i % 4 {
			case 0:
				require.NoError(t, s.Save(bg, id, bytes.Repeat([]byte("z"), 1000), time.Time{}))
			case 1:
				require.NoError(t, s.Update(bg, id, increment))
			case 2:
				require.NoError(t, s.Save(bg, id, nil, time.Now().Add(-time.Second)))
			case 3:
				require.NoError(t, s.Delete(bg, id))
			}
		}
		_, err := s.DeleteExpired(bg)
		require.NoError(t, err)
		files := 0
		err = filepath.WalkDir(s.Dir(), func(p string, d fs.DirEntry, err error) error {
			require.NoError(t, err)
			fi, err := d.Info()
			require.NoError(t, err)
			want := fs.FileMode(0o600)
			if d.IsDir() {
				want = fs.ModeDir | 0o700
			} else {
				files++
			}
			require.Equal(t, want, fi.Mode(), "%s: %s", layout, p)
			return nil
		})
		require.NoError(t, err)
		require.Greater(t, files, 10)
	}
}

// TestUnsafeRootRefusedBeforeAnyWrite: Open refuses a root that other
// users could write to or swap, new or already a store, and writes
// nothing to it, or through it, first.
func TestUnsafeRootRefusedBeforeAnyWrite(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to give a directory to another uid")
	}
	unsafe := map[string]func(dir string) error{
		"world-writable": func(dir string) error { return os.Chmod(dir, 0o777) },
		"sticky 1733":    func(dir string) error { return os.Chmod(dir, 0o733|fs.ModeSticky) },
		"other uid":      func(dir string) error { return os.Chown(dir, 65534, 65534) },
	}
	for name, mk := range unsafe {
		for _, existing := range []bool{false, true} {
			dir := filepath.Join(t.TempDir(), "store")
			require.NoError(t, os.Mkdir(dir, 0o700))
			if existing {
				s, err := Open(dir, &Options{SweepInterval: -1})
				require.NoError(t, err)
				require.NoError(t, s.Save(bg, "id", []byte("x"), time.Now().Add(-time.Hour)))
				require.NoError(t, s.Close())
			}
			require.NoError(t, mk(dir))
			before := treeHash(t, dir)
			_, err := Open(dir, &Options{SweepInterval: time.Millisecond})
			require.ErrorIs(t, err, ErrUnsafeRoot, "%s, existing %v", name, existing)
			require.Equal(t, before, treeHash(t, dir), "%s: refused after writing", name)
		}
	}
	// A symlink to a directory, empty or a store: nothing is written
	// through it.
	for _, existing := range []bool{false, true} {
		real := filepath.Join(t.TempDir(), "real")
		if existing {
			s, err := Open(real, nil)
			require.NoError(t, err)
			require.NoError(t, s.Close())
		} else {
			require.NoError(t, os.Mkdir(real, 0o700))
		}
		link := filepath.Join(t.TempDir(), "link")
		require.NoError(t, os.Symlink(real, link))
		before := treeHash(t, real)
		_, err := Open(link, nil)
		require.ErrorIs(t, err, ErrUnsafeRoot)
		require.Equal(t, before, treeHash(t, real))
	}
}

// plant is something an attacker (or an accident) left at a record path.
// It returns a snapshot function: what must never change, whatever the
// store does to the name.
type plant func(t *testing.T, s *Store, path, id string) (snapshot func() string)

// expiredRecord is a valid record for id, expired: if the store followed
// or trusted the plant, Load would succeed and the sweeper would act.
func expiredRecord(id string) []byte {
	return encodeRecord(id, []byte("planted"), time.Unix(1e9, 0), 1, false)
}

var plants = map[string]plant{
	"symlink": func(t *testing.T, s *Store, path, id string) func() string {
		target := filepath.Join(t.TempDir(), "target")
		require.NoError(t, os.WriteFile(target, expiredRecord(id), 0o600))
		require.NoError(t, os.Symlink(target, path))
		return func() string { return treeHash(t, filepath.Dir(target)) }
	},
	"fifo": func(t *testing.T, s *Store, path, id string) func() string {
		require.NoError(t, syscall.Mkfifo(path, 0o600))
		return func() string { return "" } // a FIFO has no content; the test is that nothing blocks
	},
	"directory": func(t *testing.T, s *Store, path, id string) func() string {
		require.NoError(t, os.Mkdir(path, 0o700))
		require.NoError(t, os.WriteFile(filepath.Join(path, "inside"), expiredRecord(id), 0o600))
		return func() string { return treeHash(t, path) }
	},
	"hard link": func(t *testing.T, s *Store, path, id string) func() string {
		target := filepath.Join(filepath.Dir(s.Dir()), "hardlink-target")
		require.NoError(t, os.WriteFile(target, expiredRecord(id), 0o600))
		require.NoError(t, os.Link(target, path))
		return func() string { return fileHash(t, target) }
	},
	"foreign owner": func(t *testing.T, s *Store, path, id string) func() string {
		require.NoError(t, os.WriteFile(path, expiredRecord(id), 0o600))
		require.NoError(t, os.Lchown(path, 65534, 65534))
		// The name may be replaced; the file itself must not change.
		f, err := os.Open(path)
		require.NoError(t, err)
		t.Cleanup(func() { _ = f.Close() })
		return func() string {
			fi, err := f.Stat()
			require.NoError(t, err)
			b := make([]byte, fi.Size())
			_, err = f.ReadAt(b, 0)
			require.NoError(t, err)
			return fmt.Sprintf("%v %d %x", fi.Mode(), fi.Sys().(*syscall.Stat_t).Uid, b)
		}
	},
}

func fileHash(t *testing.T, path string) string {
	t.Helper()
	fi, err := os.Lstat(path)
	require.NoError(t, err)
	b, err := os.ReadFile(path)
	require.NoError(t, err)
	return fmt.Sprintf("%v %x", fi.Mode(), b)
}

// TestPlantedFilesNeverModified plants each kind of file at a record path
// and runs each operation against it, on a fresh store each time. Reads,
// updates, walks and sweeps refuse it with ErrCorrupt; Save replaces the
// name by rename and Delete removes the name, as designed; none of them
// blocks (a FIFO opened for reading would wait for a writer) and none
// changes what was planted.
func TestPlantedFilesNeverModified(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to plant a file owned by another uid")
	}
	const id = "planted-session"
	ops := map[string]struct {
		run     func(s *Store) error
		refuses bool          // must fail with ErrCorrupt
		bound   time.Duration // how long it may take: the writing ops fsync
	}{
		"load":   {func(s *Store) error { _, err := s.Load(bg, id); return err }, true, time.Second},
		"update": {func(s *Store) error { return s.Update(bg, id, increment) }, true, time.Second},
		"foreach": {func(s *Store) error {
			return s.ForEach(bg, func(Record) error { return errors.New("visited a planted file") })
		}, true, time.Second},
		"sweep": {func(s *Store) error {
			s.now = func() time.Time { return time.Now().Add(time.Hour) }
			n, err := s.DeleteExpired(bg)
			if n != 0 {
				return fmt.Errorf("swept %d", n)
			}
			return err
		}, true, time.Second},
		"save":   {func(s *Store) error { return s.Save(bg, id, []byte("mine"), time.Time{}) }, false, 10 * time.Second},
		"delete": {func(s *Store) error { return s.Delete(bg, id) }, false, 10 * time.Second},
	}
	var slowest time.Duration
	for kind, mk := range plants {
		for opName, op := range ops {
			s := openTest(t, nil)
			r, _ := s.refOf(id)
			require.NoError(t, s.mkdirAll(r.dirPath()))
			snapshot := mk(t, s, r.path(), id)
			before := snapshot()

			done := make(chan error, 1)
			start := time.Now()
			go func() { done <- op.run(s) }()
			var err error
			select {
			case err = <-done:
			case <-time.After(op.bound):
				t.Fatalf("%s on a %s: still blocked after %v", opName, kind, op.bound)
			}
			slowest = max(slowest, time.Since(start))

			if op.refuses {
				require.ErrorIs(t, err, ErrCorrupt, "%s on a %s", opName, kind)
				require.NotContains(t, err.Error(), id)
			}
			require.Equal(t, before, snapshot(), "%s on a %s changed it", opName, kind)
			if opName == "save" && err == nil {
				rec, err := s.Load(bg, id)
				require.NoError(t, err)
				require.Equal(t, "mine", string(rec.Data), "a save over a %s", kind)
			}
			if opName == "delete" && err == nil {
				_, err := os.Lstat(r.path())
				require.ErrorIs(t, err, fs.ErrNotExist, "a delete of a %s", kind)
			}
			requireNoTempFiles(t, s.Dir())
			require.NoError(t, s.Close())
		}
	}
	t.Logf("%d kinds x %d operations: slowest took %v", len(plants), len(ops), slowest)
}

// TestBadFilesThroughTheStore completes codec_test.go's bad-record table
// with what is wrong about a file rather than its bytes: a symlink, FIFO,
// directory, hard link or foreign-owned file at a record path, a file
// above the size limit, and a valid record at the wrong id's path. Each
// gives a typed error through Load, ForEach and the sweeper, and the
// sweeper leaves it where it is (it skips what it cannot trust).
func TestBadFilesThroughTheStore(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to plant a file owned by another uid")
	}
	checkHygiene(t)
	s := openTest(t, &Options{SweepInterval: -1, MaxRecordSize: 1024})
	kinds := map[string]plant{}
	for k, p := range plants {
		kinds[k] = p
	}
	kinds["oversize file"] = func(t *testing.T, s *Store, path, id string) func() string {
		b := encodeRecord(id, make([]byte, 4096), time.Now().Add(-time.Hour), 1, false)
		require.NoError(t, os.WriteFile(path, b, 0o600))
		return func() string { return fileHash(t, path) }
	}
	kinds["id mismatch"] = func(t *testing.T, s *Store, path, id string) func() string {
		require.NoError(t, os.WriteFile(path, expiredRecord("someone-else"), 0o600))
		return func() string { return fileHash(t, path) }
	}
	snaps := map[string]func() string{}
	befores := map[string]string{}
	for kind, mk := range kinds {
		id := "bad-" + kind
		r, _ := s.refOf(id)
		require.NoError(t, s.mkdirAll(r.dirPath()))
		snaps[kind] = mk(t, s, r.path(), id)
		befores[kind] = snaps[kind]()
	}
	typed := func(err error) bool { return errors.Is(err, ErrCorrupt) || errors.Is(err, ErrTooLarge) }
	for kind := range kinds {
		_, err := s.Load(bg, "bad-"+kind)
		require.True(t, typed(err), "load %s: %v", kind, err)
	}
	s.now = func() time.Time { return time.Now().Add(time.Hour) } // everything planted is expired
	err := s.ForEach(bg, func(Record) error { return errors.New("visited a bad file") })
	require.True(t, typed(err), "foreach: %v", err)
	n, err := s.DeleteExpired(bg)
	require.True(t, typed(err), "sweep: %v", err)
	require.Zero(t, n, "the sweeper removed a file it cannot trust")
	for kind := range kinds {
		r, _ := s.refOf("bad-" + kind)
		_, lerr := os.Lstat(r.path())
		require.NoError(t, lerr, "%s removed", kind)
		require.Equal(t, befores[kind], snaps[kind](), "%s changed", kind)
		require.NotContains(t, err.Error(), "bad-"+kind)
	}
}

// TestZstdBombThroughLoad: a few KiB of record that inflates to 1 GiB,
// planted in a store, loads as ErrCorrupt without the heap growing past a
// small multiple of MaxRecordSize.
func TestZstdBombThroughLoad(t *testing.T) {
	s := openTest(t, nil)
	bomb := rebuildZstd("bomb", zstdRLEBomb(1<<30), DefaultMaxRecordSize)
	require.Less(t, len(bomb), 40<<10)
	r, _ := s.refOf("bomb")
	require.NoError(t, s.mkdirAll(r.dirPath()))
	require.NoError(t, os.WriteFile(r.path(), bomb, 0o600))
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	_, err := s.Load(bg, "bomb")
	runtime.ReadMemStats(&after)
	require.ErrorIs(t, err, ErrCorrupt)
	grew := after.TotalAlloc - before.TotalAlloc
	require.Less(t, grew, uint64(8*DefaultMaxRecordSize), "loading a bomb allocated %d bytes", grew)
	t.Logf("a %d-byte record declaring 1 GiB: ErrCorrupt after %d bytes allocated", len(bomb), grew)
}
