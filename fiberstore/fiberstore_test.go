package fiberstore

import (
	"bytes"
	"context"
	"errors"
	"io/fs"
	"math"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/filestore-go/filestore"
)

// openTest opens a Storage that owns a fresh store. Its sweeper is off so
// that only the code under test removes records.
func openTest(t *testing.T, opts *filestore.Options) *Storage {
	t.Helper()
	o := filestore.Options{SweepInterval: -1}
	if opts != nil {
		o = *opts
	}
	s, err := Open(filepath.Join(t.TempDir(), "store"), &o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// api is the fiber.Storage method set in one of its two forms, so that each
// contract case runs against both.
type api struct {
	name  string
	get   func(s *Storage, key string) ([]byte, error)
	set   func(s *Storage, key string, val []byte, exp time.Duration) error
	del   func(s *Storage, key string) error
	reset func(s *Storage) error
}

var apis = []api{
	{
		name:  "plain",
		get:   (*Storage).Get,
		set:   (*Storage).Set,
		del:   (*Storage).Delete,
		reset: (*Storage).Reset,
	},
	{
		name: "context",
		get: func(s *Storage, key string) ([]byte, error) {
			return s.GetWithContext(context.Background(), key)
		},
		set: func(s *Storage, key string, val []byte, exp time.Duration) error {
			return s.SetWithContext(context.Background(), key, val, exp)
		},
		del: func(s *Storage, key string) error {
			return s.DeleteWithContext(context.Background(), key)
		},
		reset: func(s *Storage) error {
			return s.ResetWithContext(context.Background())
		},
	},
}

// count returns the number of live records in s's store.
func count(t *testing.T, s *Storage) int {
	t.Helper()
	n := 0
	if err := s.Conn().ForEach(context.Background(), func(filestore.Record) error {
		n++
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	return n
}

func mustGet(t *testing.T, a api, s *Storage, key string) []byte {
	t.Helper()
	v, err := a.get(s, key)
	if err != nil {
		t.Fatalf("get: %v", err)
	}
	return v
}

func mustSet(t *testing.T, a api, s *Storage, key, val string, exp time.Duration) {
	t.Helper()
	if err := a.set(s, key, []byte(val), exp); err != nil {
		t.Fatalf("set: %v", err)
	}
}

func TestContract(t *testing.T) {
	longKey := strings.Repeat("k", filestore.MaxIDLength+1)
	maxKey := strings.Repeat("k", filestore.MaxIDLength)

	cases := []struct {
		name string
		opts *filestore.Options
		run  func(t *testing.T, a api, s *Storage)
	}{
		{"set then get", nil, func(t *testing.T, a api, s *Storage) {
			mustSet(t, a, s, "k", "v", 0)
			if got := mustGet(t, a, s, "k"); string(got) != "v" {
				t.Errorf("get = %q, want %q", got, "v")
			}
		}},
		{"missing key is nil, nil", nil, func(t *testing.T, a api, s *Storage) {
			if got := mustGet(t, a, s, "absent"); got != nil {
				t.Errorf("get = %q, want nil", got)
			}
		}},
		{"empty key get is nil, nil", nil, func(t *testing.T, a api, s *Storage) {
			if got := mustGet(t, a, s, ""); got != nil {
				t.Errorf("get = %q, want nil", got)
			}
		}},
		{"empty key set is ignored", nil, func(t *testing.T, a api, s *Storage) {
			mustSet(t, a, s, "", "v", 0)
			if n := count(t, s); n != 0 {
				t.Errorf("%d records after set of empty key, want 0", n)
			}
		}},
		{"empty value set is ignored", nil, func(t *testing.T, a api, s *Storage) {
			mustSet(t, a, s, "k", "old", 0)
			if err := a.set(s, "k", nil, 0); err != nil {
				t.Fatal(err)
			}
			mustSet(t, a, s, "k", "", 0)
			if got := mustGet(t, a, s, "k"); string(got) != "old" {
				t.Errorf("get = %q, want the value from before the empty sets", got)
			}
			mustSet(t, a, s, "other", "", 0)
			if n := count(t, s); n != 1 {
				t.Errorf("%d records, want 1", n)
			}
		}},
		{"set replaces", nil, func(t *testing.T, a api, s *Storage) {
			mustSet(t, a, s, "k", "one", 0)
			mustSet(t, a, s, "k", "two", time.Hour)
			if got := mustGet(t, a, s, "k"); string(got) != "two" {
				t.Errorf("get = %q, want %q", got, "two")
			}
		}},
		{"exp 0 never expires", nil, func(t *testing.T, a api, s *Storage) {
			mustSet(t, a, s, "k", "v", 0)
			rec, err := s.Conn().Load(context.Background(), "k")
			if err != nil {
				t.Fatal(err)
			}
			if !rec.Expiry.IsZero() {
				t.Errorf("expiry = %v, want zero (never)", rec.Expiry)
			}
		}},
		{"positive exp sets expiry", nil, func(t *testing.T, a api, s *Storage) {
			before := time.Now()
			mustSet(t, a, s, "k", "v", time.Hour)
			after := time.Now()
			rec, err := s.Conn().Load(context.Background(), "k")
			if err != nil {
				t.Fatal(err)
			}
			if rec.Expiry.Before(before.Add(time.Hour)) || rec.Expiry.After(after.Add(time.Hour)) {
				t.Errorf("expiry is not an hour after the set")
			}
			if got := mustGet(t, a, s, "k"); string(got) != "v" {
				t.Errorf("get = %q, want %q", got, "v")
			}
		}},
		{"longest exp", nil, func(t *testing.T, a api, s *Storage) {
			mustSet(t, a, s, "k", "v", math.MaxInt64)
			if got := mustGet(t, a, s, "k"); string(got) != "v" {
				t.Errorf("get = %q, want %q", got, "v")
			}
		}},
		{"empty record written directly is nil, nil", nil, func(t *testing.T, a api, s *Storage) {
			if err := s.Conn().Save(context.Background(), "k", nil, time.Time{}); err != nil {
				t.Fatal(err)
			}
			if got := mustGet(t, a, s, "k"); got != nil {
				t.Errorf("get = %q, want nil", got)
			}
		}},
		{"expired value is nil, nil", nil, func(t *testing.T, a api, s *Storage) {
			mustSet(t, a, s, "k", "v", time.Nanosecond)
			if got := mustGet(t, a, s, "k"); got != nil {
				t.Errorf("get of expired value = %q, want nil", got)
			}
		}},
		{"negative exp never expires", nil, func(t *testing.T, a api, s *Storage) {
			// Each set replaces a value that had an expiry, so a negative
			// exp that kept the old expiry, or expired the value, shows.
			for _, exp := range []time.Duration{-time.Nanosecond, -time.Second, math.MinInt64} {
				mustSet(t, a, s, "k", "old", time.Hour)
				mustSet(t, a, s, "k", "new", exp)
				if got := mustGet(t, a, s, "k"); string(got) != "new" {
					t.Errorf("exp %v: get = %q, want %q", exp, got, "new")
				}
				rec, err := s.Conn().Load(context.Background(), "k")
				if err != nil {
					t.Fatal(err)
				}
				if !rec.Expiry.IsZero() {
					t.Errorf("exp %v: expiry = %v, want zero (never)", exp, rec.Expiry)
				}
			}
			if n, err := s.Conn().DeleteExpired(context.Background()); err != nil || n != 0 {
				t.Errorf("DeleteExpired = %d, %v; want nothing to sweep", n, err)
			}
			if got := mustGet(t, a, s, "k"); string(got) != "new" {
				t.Errorf("get after a sweep = %q, want %q", got, "new")
			}
		}},
		{"delete", nil, func(t *testing.T, a api, s *Storage) {
			mustSet(t, a, s, "k", "v", 0)
			mustSet(t, a, s, "keep", "v", 0)
			if err := a.del(s, "k"); err != nil {
				t.Fatal(err)
			}
			if got := mustGet(t, a, s, "k"); got != nil {
				t.Errorf("get after delete = %q, want nil", got)
			}
			if got := mustGet(t, a, s, "keep"); string(got) != "v" {
				t.Errorf("delete removed another key")
			}
		}},
		{"delete of missing or empty key is nil", nil, func(t *testing.T, a api, s *Storage) {
			for _, k := range []string{"absent", ""} {
				if err := a.del(s, k); err != nil {
					t.Errorf("delete(len %d) = %v, want nil", len(k), err)
				}
			}
		}},
		{"key of MaxIDLength", nil, func(t *testing.T, a api, s *Storage) {
			mustSet(t, a, s, maxKey, "v", 0)
			if got := mustGet(t, a, s, maxKey); string(got) != "v" {
				t.Errorf("get = %q, want %q", got, "v")
			}
		}},
		{"over-long key", nil, func(t *testing.T, a api, s *Storage) {
			err := a.set(s, longKey, []byte("v"), 0)
			if !errors.Is(err, filestore.ErrInvalidID) {
				t.Errorf("set = %v, want ErrInvalidID", err)
			}
			if err != nil && strings.Contains(err.Error(), longKey[:64]) {
				t.Errorf("error contains the key")
			}
			if got, err := a.get(s, longKey); got != nil || err != nil {
				t.Errorf("get = %q, %v; want nil, nil", got, err)
			}
			if err := a.del(s, longKey); err != nil {
				t.Errorf("delete = %v, want nil", err)
			}
		}},
		{"value over MaxRecordSize", &filestore.Options{MaxRecordSize: 64, SweepInterval: -1}, func(t *testing.T, a api, s *Storage) {
			mustSet(t, a, s, "fits", strings.Repeat("v", 64), 0)
			if err := a.set(s, "big", bytes.Repeat([]byte("v"), 65), 0); !errors.Is(err, filestore.ErrTooLarge) {
				t.Errorf("set = %v, want ErrTooLarge", err)
			}
			if got := mustGet(t, a, s, "big"); got != nil {
				t.Errorf("a rejected value was stored")
			}
		}},
		{"arbitrary keys", nil, func(t *testing.T, a api, s *Storage) {
			keys := []string{"../../etc/passwd", "a/b\\c", "\x00\xff binary", "ключ 🔑", "limiter_127.0.0.1", "GET_/cache?x=1"}
			for i, k := range keys {
				mustSet(t, a, s, k, strings.Repeat("v", i+1), 0)
			}
			for i, k := range keys {
				if got := mustGet(t, a, s, k); string(got) != strings.Repeat("v", i+1) {
					t.Errorf("key %d: get = %q", i, got)
				}
			}
			err := filepath.WalkDir(s.Conn().Dir(), func(path string, d fs.DirEntry, err error) error {
				if err != nil {
					return err
				}
				for i, k := range keys {
					if strings.Contains(d.Name(), k) {
						t.Errorf("key %d appears in file name", i)
					}
				}
				return nil
			})
			if err != nil {
				t.Fatal(err)
			}
		}},
		{"slices are not shared", nil, func(t *testing.T, a api, s *Storage) {
			val := []byte("value")
			if err := a.set(s, "k", val, 0); err != nil {
				t.Fatal(err)
			}
			val[0] = 'X'
			got := mustGet(t, a, s, "k")
			if string(got) != "value" {
				t.Fatalf("get = %q: set kept the caller's slice", got)
			}
			got[0] = 'Y'
			if got := mustGet(t, a, s, "k"); string(got) != "value" {
				t.Errorf("get = %q: get returned a shared slice", got)
			}
		}},
		{"reset deletes everything", nil, func(t *testing.T, a api, s *Storage) {
			for _, k := range []string{"a", "b", "c"} {
				mustSet(t, a, s, k, "v", 0)
			}
			mustSet(t, a, s, "expired", "v", time.Nanosecond)
			if err := a.reset(s); err != nil {
				t.Fatal(err)
			}
			if n := count(t, s); n != 0 {
				t.Errorf("%d live records after reset", n)
			}
			if n, err := s.Conn().DeleteExpired(context.Background()); err != nil || n != 0 {
				t.Errorf("DeleteExpired after reset = %d, %v; want an empty store", n, err)
			}
			mustSet(t, a, s, "a", "again", 0)
			if got := mustGet(t, a, s, "a"); string(got) != "again" {
				t.Errorf("store unusable after reset: get = %q", got)
			}
		}},
		{"corrupt record", nil, func(t *testing.T, a api, s *Storage) {
			mustSet(t, a, s, "bad", "v", 0)
			corrupt(t, s)
			mustSet(t, a, s, "good", "v", 0)
			if _, err := a.get(s, "bad"); !errors.Is(err, filestore.ErrCorrupt) {
				t.Errorf("get of corrupt record = %v, want ErrCorrupt", err)
			}
			if err := a.reset(s); !errors.Is(err, filestore.ErrCorrupt) {
				t.Errorf("reset = %v, want ErrCorrupt for the record it left", err)
			}
			if got := mustGet(t, a, s, "good"); got != nil {
				t.Errorf("reset kept a readable record")
			}
			// The corrupt file is the operator's to inspect, but Delete by
			// key still removes it.
			if err := a.del(s, "bad"); err != nil {
				t.Fatal(err)
			}
			if err := a.reset(s); err != nil {
				t.Errorf("reset after delete = %v", err)
			}
		}},
	}
	for _, a := range apis {
		t.Run(a.name, func(t *testing.T) {
			for _, c := range cases {
				t.Run(c.name, func(t *testing.T) {
					c.run(t, a, openTest(t, c.opts))
				})
			}
		})
	}
}

// corrupt overwrites the only record file in s's store with garbage.
func corrupt(t *testing.T, s *Storage) {
	t.Helper()
	var files []string
	err := filepath.WalkDir(filepath.Join(s.Conn().Dir(), "data"), func(path string, d fs.DirEntry, err error) error {
		if err == nil && d.Type().IsRegular() {
			files = append(files, path)
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(files) != 1 {
		t.Fatalf("found %d record files, want 1", len(files))
	}
	if err := os.WriteFile(files[0], []byte("not a record"), 0o600); err != nil {
		t.Fatal(err)
	}
}

func TestCancelledContext(t *testing.T) {
	s := openTest(t, nil)
	if err := s.Set("k", []byte("v"), 0); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()

	// The empty key is included: a dead context is reported whatever the
	// key, as gofiber/storage drivers do.
	for _, key := range []string{"k", "new", ""} {
		if v, err := s.GetWithContext(ctx, key); !errors.Is(err, context.Canceled) || v != nil {
			t.Errorf("get(len %d) = %q, %v; want nil, context.Canceled", len(key), v, err)
		}
		if err := s.SetWithContext(ctx, key, []byte("w"), 0); !errors.Is(err, context.Canceled) {
			t.Errorf("set(len %d) = %v, want context.Canceled", len(key), err)
		}
		if err := s.DeleteWithContext(ctx, key); !errors.Is(err, context.Canceled) {
			t.Errorf("delete(len %d) = %v, want context.Canceled", len(key), err)
		}
	}
	if err := s.ResetWithContext(ctx); !errors.Is(err, context.Canceled) {
		t.Errorf("reset = %v, want context.Canceled", err)
	}

	// None of them changed anything.
	if got, err := s.Get("k"); err != nil || string(got) != "v" {
		t.Errorf("get = %q, %v; want the value from before", got, err)
	}
	if got, err := s.Get("new"); err != nil || got != nil {
		t.Errorf("set with a cancelled context stored a value")
	}
}

// TestContextWhileLocked checks that a write waiting for a record's lock
// gives up when its context ends.
func TestContextWhileLocked(t *testing.T) {
	s := openTest(t, nil)
	locked := make(chan struct{})
	release := make(chan struct{})
	done := make(chan error, 1)
	go func() {
		done <- s.Conn().Update(context.Background(), "k", func(*filestore.Record) (*filestore.Record, error) {
			close(locked)
			<-release
			return &filestore.Record{Data: []byte("from update")}, nil
		})
	}()
	<-locked

	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if err := s.SetWithContext(ctx, "k", []byte("from set"), 0); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("set while locked = %v, want context.DeadlineExceeded", err)
	}
	ctx, cancel = context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if err := s.DeleteWithContext(ctx, "k"); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("delete while locked = %v, want context.DeadlineExceeded", err)
	}
	close(release)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if got, err := s.Get("k"); err != nil || string(got) != "from update" {
		t.Errorf("get = %q, %v; want the update's value", got, err)
	}
}

func TestCloseOwned(t *testing.T) {
	s := openTest(t, nil)
	if err := s.Set("k", []byte("v"), 0); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Errorf("second close = %v, want nil", err)
	}
	if _, err := s.Conn().Load(context.Background(), "k"); !errors.Is(err, filestore.ErrClosed) {
		t.Errorf("store after close: load = %v, want ErrClosed", err)
	}
	checkClosed(t, s)
}

func TestCloseBorrowed(t *testing.T) {
	st, err := filestore.Open(filepath.Join(t.TempDir(), "store"), &filestore.Options{SweepInterval: -1})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	s := New(st)
	if err := s.Set("k", []byte("v"), 0); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	checkClosed(t, s)
	rec, err := st.Load(context.Background(), "k")
	if err != nil || string(rec.Data) != "v" {
		t.Errorf("store after closing a Storage from New: load = %q, %v; want it still open", rec.Data, err)
	}
}

func checkClosed(t *testing.T, s *Storage) {
	t.Helper()
	if _, err := s.Get("k"); !errors.Is(err, filestore.ErrClosed) {
		t.Errorf("get = %v, want ErrClosed", err)
	}
	if err := s.Set("k", []byte("w"), 0); !errors.Is(err, filestore.ErrClosed) {
		t.Errorf("set = %v, want ErrClosed", err)
	}
	if err := s.Delete("k"); !errors.Is(err, filestore.ErrClosed) {
		t.Errorf("delete = %v, want ErrClosed", err)
	}
	if err := s.Reset(); !errors.Is(err, filestore.ErrClosed) {
		t.Errorf("reset = %v, want ErrClosed", err)
	}
}

func TestOpenError(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "unrelated"), []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := Open(dir, nil); !errors.Is(err, filestore.ErrNotStore) {
		t.Errorf("open of a non-empty directory = %v, want ErrNotStore", err)
	}
}

// TestConcurrent runs Sets, Gets and Deletes from many goroutines through
// two Storages on one directory, as two processes would; run it with -race.
func TestConcurrent(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "store")
	var ss [2]*Storage
	for i := range ss {
		s, err := Open(dir, &filestore.Options{NoSync: true, SweepInterval: -1})
		if err != nil {
			t.Fatal(err)
		}
		defer s.Close()
		ss[i] = s
	}
	keys := []string{"a", "b", "c"}
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Go(func() {
			s := ss[g%2]
			for i := range 50 {
				k := keys[(g+i)%len(keys)]
				var err error
				switch i % 3 {
				case 0:
					err = s.Set(k, []byte("value"), time.Hour)
				case 1:
					var v []byte
					v, err = s.Get(k)
					if v != nil && string(v) != "value" {
						t.Errorf("get read %q", v)
					}
				case 2:
					err = s.Delete(k)
				}
				if err != nil {
					t.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
}

// TestOversizedRecord checks that a record file too large for this
// process to read (another process, with a larger Options.MaxRecordSize,
// wrote it) is an unreadable record like a corrupt one: Get reports
// ErrCorrupt, Reset leaves it for the operator and reports it, and Delete
// removes it.
func TestOversizedRecord(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "store")
	big, err := filestore.Open(dir, &filestore.Options{SweepInterval: -1})
	if err != nil {
		t.Fatal(err)
	}
	defer big.Close()
	s, err := Open(dir, &filestore.Options{SweepInterval: -1, MaxRecordSize: 1024})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if err := big.Save(context.Background(), "big", bytes.Repeat([]byte("v"), 64<<10), time.Time{}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Conn().Load(context.Background(), "big"); !errors.Is(err, filestore.ErrCorrupt) {
		t.Fatalf("a record too large to read is %v, not ErrCorrupt", err)
	}
	if err := s.Set("small", []byte("v"), 0); err != nil {
		t.Fatal(err)
	}

	if v, err := s.Get("big"); !errors.Is(err, filestore.ErrCorrupt) || v != nil {
		t.Errorf("get of an oversized record = %d bytes, %v; want nil, ErrCorrupt", len(v), err)
	}
	if err := s.Reset(); !errors.Is(err, filestore.ErrCorrupt) {
		t.Errorf("reset = %v, want ErrCorrupt for the record it left", err)
	}
	if v, err := s.Get("small"); err != nil || v != nil {
		t.Errorf("reset kept a readable record: get = %q, %v", v, err)
	}
	if err := s.Delete("big"); err != nil {
		t.Fatal(err)
	}
	if err := s.Reset(); err != nil {
		t.Errorf("reset after delete = %v, want nil", err)
	}
}
