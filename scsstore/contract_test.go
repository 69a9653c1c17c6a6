package scsstore_test

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/filestore-go/filestore"
	"github.com/filestore-go/filestore/scsstore"
)

// openFS opens a fresh filestore in a temp directory and closes it when the
// test ends.
func openFS(t *testing.T) *filestore.Store {
	t.Helper()
	fs, err := filestore.Open(filepath.Join(t.TempDir(), "sessions"), &filestore.Options{SweepInterval: -1, NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { fs.Close() })
	return fs
}

// syncBuffer is a bytes.Buffer that a logger may write from any goroutine.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// newStore returns an adapter over a fresh filestore whose log lines are
// collected in the returned buffer.
func newStore(t *testing.T) (*scsstore.Store, *filestore.Store, *syncBuffer) {
	t.Helper()
	fs := openFS(t)
	st := scsstore.New(fs)
	logs := new(syncBuffer)
	st.Logger = slog.New(slog.NewTextHandler(logs, nil))
	return st, fs, logs
}

const (
	tokenA = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
	tokenB = "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb"
)

func TestFindUnusableTokens(t *testing.T) {
	st, _, logs := newStore(t)
	if err := st.Commit(tokenA, []byte("a"), time.Now().Add(time.Hour)); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name, token string
	}{
		{"empty", ""},
		{"2KiB", strings.Repeat("x", 2048)},
		{"one over MaxIDLength", strings.Repeat("x", filestore.MaxIDLength+1)},
		{"missing", tokenB},
		{"path traversal", "../../../../etc/passwd"},
		{"NUL and control bytes", "tok\x00en\n\r"},
		{"invalid UTF-8", "\xff\xfe\xfd"},
		{"prefix of a live token", tokenA[:10]},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			for _, find := range []func(string) ([]byte, bool, error){
				st.Find,
				func(tok string) ([]byte, bool, error) { return st.FindCtx(context.Background(), tok) },
			} {
				b, found, err := find(tt.token)
				if err != nil || found || b != nil {
					t.Errorf("Find = %q, %v, %v; want nil, false, nil", b, found, err)
				}
			}
		})
	}
	if logs.String() != "" {
		t.Errorf("unusable tokens were logged: %s", logs)
	}
}

func TestDeleteMissingOrUnusable(t *testing.T) {
	st, _, _ := newStore(t)
	for _, tok := range []string{"", tokenA, strings.Repeat("x", 2048), "../x"} {
		if err := st.Delete(tok); err != nil {
			t.Errorf("Delete of a token of length %d: %v", len(tok), err)
		}
		if err := st.DeleteCtx(context.Background(), tok); err != nil {
			t.Errorf("DeleteCtx of a token of length %d: %v", len(tok), err)
		}
	}
}

func TestCommitFindDelete(t *testing.T) {
	st, _, _ := newStore(t)
	if err := st.Commit(tokenA, []byte("one"), time.Now().Add(time.Hour)); err != nil {
		t.Fatal(err)
	}
	b, found, err := st.Find(tokenA)
	if err != nil || !found || string(b) != "one" {
		t.Fatalf("Find = %q, %v, %v; want one, true, nil", b, found, err)
	}
	b[0] = 'X' // the caller owns the slice
	if b, _, _ := st.Find(tokenA); string(b) != "one" {
		t.Fatalf("Find after modifying a returned slice = %q, want one", b)
	}

	// Commit overwrites the data.
	if err := st.CommitCtx(context.Background(), tokenA, []byte("two"), time.Now().Add(time.Hour)); err != nil {
		t.Fatal(err)
	}
	if b, found, err := st.FindCtx(context.Background(), tokenA); err != nil || !found || string(b) != "two" {
		t.Fatalf("Find after overwrite = %q, %v, %v; want two, true, nil", b, found, err)
	}

	// Commit overwrites the expiry too: moving it into the past ends the
	// session.
	if err := st.Commit(tokenA, []byte("three"), time.Now().Add(-time.Second)); err != nil {
		t.Fatal(err)
	}
	if b, found, err := st.Find(tokenA); err != nil || found || b != nil {
		t.Fatalf("Find of an expired session = %q, %v, %v; want nil, false, nil", b, found, err)
	}
	if m, err := st.All(); err != nil || len(m) != 0 {
		t.Fatalf("All with one expired session = %d sessions, %v; want 0, nil", len(m), err)
	}

	if err := st.Commit(tokenA, []byte("four"), time.Now().Add(time.Hour)); err != nil {
		t.Fatal(err)
	}
	if err := st.Delete(tokenA); err != nil {
		t.Fatal(err)
	}
	if _, found, err := st.Find(tokenA); err != nil || found {
		t.Fatalf("Find after Delete = %v, %v; want false, nil", found, err)
	}
}

func TestCommitRejectsUnusableTokens(t *testing.T) {
	st, _, _ := newStore(t)
	for _, tok := range []string{"", strings.Repeat("x", filestore.MaxIDLength+1)} {
		err := st.Commit(tok, []byte("x"), time.Now().Add(time.Hour))
		if !errors.Is(err, filestore.ErrInvalidID) {
			t.Errorf("Commit of a token of length %d: %v, want ErrInvalidID", len(tok), err)
		}
	}
	// The longest token the store accepts works.
	long := strings.Repeat("y", filestore.MaxIDLength)
	if err := st.Commit(long, []byte("x"), time.Now().Add(time.Hour)); err != nil {
		t.Fatal(err)
	}
	if _, found, err := st.Find(long); !found || err != nil {
		t.Fatalf("Find of a MaxIDLength token = %v, %v; want true, nil", found, err)
	}
}

func TestAllEmptyIsNonNil(t *testing.T) {
	st, _, _ := newStore(t)
	for _, all := range []func() (map[string][]byte, error){
		st.All,
		func() (map[string][]byte, error) { return st.AllCtx(context.Background()) },
	} {
		m, err := all()
		if err != nil || m == nil || len(m) != 0 {
			t.Fatalf("All on an empty store = %v (nil: %v), %v; want an empty non-nil map", m, m == nil, err)
		}
	}
}

func TestAllReturnsLiveSessions(t *testing.T) {
	st, _, _ := newStore(t)
	want := map[string]string{tokenA: "a", tokenB: "b"}
	for tok, v := range want {
		if err := st.Commit(tok, []byte(v), time.Now().Add(time.Hour)); err != nil {
			t.Fatal(err)
		}
	}
	if err := st.Commit("expired-token", []byte("gone"), time.Now().Add(-time.Minute)); err != nil {
		t.Fatal(err)
	}
	m, err := st.All()
	if err != nil {
		t.Fatal(err)
	}
	if len(m) != len(want) {
		t.Fatalf("All returned %d sessions, want %d", len(m), len(want))
	}
	for tok, v := range want {
		if string(m[tok]) != v {
			t.Errorf("All()[token %q...] = %q, want %q", tok[:1], m[tok], v)
		}
	}
}

// recordFile returns the path of the only regular file under the store's
// data directory.
func recordFile(t *testing.T, fs *filestore.Store) string {
	t.Helper()
	var files []string
	err := filepath.WalkDir(filepath.Join(fs.Dir(), "data"), func(path string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.Type().IsRegular() {
			files = append(files, path)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(files) != 1 {
		t.Fatalf("found %d regular files under data/, want 1", len(files))
	}
	return files[0]
}

func TestCorruptRecord(t *testing.T) {
	st, fs, logs := newStore(t)
	if err := st.Commit(tokenA, []byte("soon corrupt"), time.Now().Add(time.Hour)); err != nil {
		t.Fatal(err)
	}
	path := recordFile(t, fs)
	if err := os.WriteFile(path, bytes.Repeat([]byte("garbage!"), 16), 0o600); err != nil {
		t.Fatal(err)
	}
	// Written after the corruption, so the walk of All sees a good record
	// alongside the bad one.
	if err := st.Commit(tokenB, []byte("fine"), time.Now().Add(time.Hour)); err != nil {
		t.Fatal(err)
	}

	b, found, err := st.Find(tokenA)
	if err != nil || found || b != nil {
		t.Fatalf("Find of a corrupt record = %q, %v, %v; want nil, false, nil", b, found, err)
	}
	if !strings.Contains(logs.String(), "unreadable") {
		t.Errorf("Find of a corrupt record logged %q, want a line about an unreadable record", logs)
	}

	m, err := st.All()
	if err != nil {
		t.Fatalf("All with a corrupt record: %v", err)
	}
	if len(m) != 1 || string(m[tokenB]) != "fine" {
		t.Fatalf("All with a corrupt record returned %d sessions, want only the good one", len(m))
	}
	if n := strings.Count(logs.String(), "level=WARN"); n != 2 {
		t.Errorf("got %d log lines about unreadable records, want 2 (Find and All): %s", n, logs)
	}
	if strings.Contains(logs.String(), tokenA) || strings.Contains(logs.String(), tokenB) {
		t.Error("a session token appears in the log")
	}

	// The corrupt record stays until deleted; Delete removes it.
	if err := st.Delete(tokenA); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(path); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("corrupt record file still exists after Delete: %v", err)
	}
}

func TestSystemFailuresAreErrors(t *testing.T) {
	st, fs, _ := newStore(t)
	if err := st.Commit(tokenA, []byte("a"), time.Now().Add(time.Hour)); err != nil {
		t.Fatal(err)
	}

	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, _, err := st.FindCtx(ctx, tokenA); !errors.Is(err, context.Canceled) {
		t.Errorf("FindCtx with a canceled context: %v, want context.Canceled", err)
	}
	if err := st.CommitCtx(ctx, tokenA, nil, time.Time{}); !errors.Is(err, context.Canceled) {
		t.Errorf("CommitCtx with a canceled context: %v, want context.Canceled", err)
	}
	if err := st.DeleteCtx(ctx, tokenA); !errors.Is(err, context.Canceled) {
		t.Errorf("DeleteCtx with a canceled context: %v, want context.Canceled", err)
	}
	if m, err := st.AllCtx(ctx); !errors.Is(err, context.Canceled) || m != nil {
		t.Errorf("AllCtx with a canceled context: %d sessions, %v; want nil, context.Canceled", len(m), err)
	}

	fs.Close()
	if _, found, err := st.Find(tokenA); !errors.Is(err, filestore.ErrClosed) || found {
		t.Errorf("Find after Close: %v, %v; want false, ErrClosed", found, err)
	}
	if err := st.Commit(tokenA, nil, time.Time{}); !errors.Is(err, filestore.ErrClosed) {
		t.Errorf("Commit after Close: %v, want ErrClosed", err)
	}
	if err := st.Delete(tokenA); !errors.Is(err, filestore.ErrClosed) {
		t.Errorf("Delete after Close: %v, want ErrClosed", err)
	}
	if _, err := st.All(); !errors.Is(err, filestore.ErrClosed) {
		t.Errorf("All after Close: %v, want ErrClosed", err)
	}
	for _, err := range []error{
		st.Commit(tokenA, nil, time.Time{}),
		st.Delete(tokenA),
	} {
		if err != nil && strings.Contains(err.Error(), tokenA) {
			t.Error("an error message contains the session token")
		}
	}
}

// TestOversizedRecord checks that a record file too large for this process
// to read (another process, with a larger Options.MaxRecordSize, wrote it)
// is treated like any other unreadable record: not found, and logged.
func TestOversizedRecord(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "sessions")
	big, err := filestore.Open(dir, &filestore.Options{SweepInterval: -1, NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	defer big.Close()
	fs, err := filestore.Open(dir, &filestore.Options{SweepInterval: -1, NoSync: true, MaxRecordSize: 1024})
	if err != nil {
		t.Fatal(err)
	}
	defer fs.Close()
	if err := big.Save(context.Background(), tokenA, bytes.Repeat([]byte("x"), 64<<10), time.Now().Add(time.Hour)); err != nil {
		t.Fatal(err)
	}
	if _, err := fs.Load(context.Background(), tokenA); !errors.Is(err, filestore.ErrCorrupt) {
		t.Fatalf("a record too large to read is %v, not ErrCorrupt", err)
	}
	st := scsstore.New(fs)
	logs := new(syncBuffer)
	st.Logger = slog.New(slog.NewTextHandler(logs, nil))
	if err := st.Commit(tokenB, []byte("fine"), time.Now().Add(time.Hour)); err != nil {
		t.Fatal(err)
	}

	if b, found, err := st.Find(tokenA); err != nil || found || b != nil {
		t.Fatalf("Find of an oversized record = %d bytes, %v, %v; want nil, false, nil", len(b), found, err)
	}
	m, err := st.All()
	if err != nil {
		t.Fatalf("All with an oversized record: %v", err)
	}
	if len(m) != 1 || string(m[tokenB]) != "fine" {
		t.Fatalf("All with an oversized record returned %d sessions, want only the readable one", len(m))
	}
	if n := strings.Count(logs.String(), "level=WARN"); n != 2 {
		t.Errorf("got %d log lines about unreadable records, want 2 (Find and All): %s", n, logs)
	}
}
