package gorillastore_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	iofs "io/fs"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/filestore-go/filestore"
	"github.com/filestore-go/filestore/gorillastore"
	"github.com/filestore-go/filestore/internal/testkit"
	"github.com/gorilla/securecookie"
	"github.com/gorilla/sessions"
)

const cookieName = "sess"

var (
	hashKey  = []byte("0123456789abcdef0123456789abcdef")
	blockKey = []byte("fedcba9876543210")
)

// openFS opens a fresh filestore with no background sweeper, so that tests
// decide when records are swept.
func openFS(t *testing.T, opts *filestore.Options) *filestore.Store {
	t.Helper()
	if opts == nil {
		opts = &filestore.Options{}
	}
	opts.SweepInterval = -1
	fs, err := filestore.Open(filepath.Join(t.TempDir(), "sessions"), opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { fs.Close() })
	return fs
}

// result is what the test application reports about the session it saw.
type result struct {
	Status int
	New    bool
	Value  string
	Err    string // from Get
	Cookie *http.Cookie
}

// app is a small web application using store the way gorilla documents:
// Get the session, change Values or Options, Save.
func app(store sessions.Store) http.Handler {
	mux := http.NewServeMux()
	reply := func(w http.ResponseWriter, sess *sessions.Session, getErr error) {
		res := result{New: sess.IsNew}
		if v, ok := sess.Values["v"].(string); ok {
			res.Value = v
		}
		if getErr != nil {
			res.Err = getErr.Error()
		}
		json.NewEncoder(w).Encode(res)
	}
	// A Get error leaves a new session to work with, as gorilla documents.
	mux.HandleFunc("/get", func(w http.ResponseWriter, r *http.Request) {
		sess, err := store.Get(r, cookieName)
		reply(w, sess, err)
	})
	mux.HandleFunc("/set", func(w http.ResponseWriter, r *http.Request) {
		sess, err := store.Get(r, cookieName)
		sess.Values["v"] = r.FormValue("v")
		if ma := r.FormValue("maxage"); ma != "" {
			sess.Options.MaxAge, _ = strconv.Atoi(ma)
		}
		if err := sess.Save(r, w); err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		reply(w, sess, err)
	})
	mux.HandleFunc("/logout", func(w http.ResponseWriter, r *http.Request) {
		sess, err := store.Get(r, cookieName)
		sess.Options.MaxAge = -1
		if err := sess.Save(r, w); err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		reply(w, sess, err)
	})
	return mux
}

// browser sends requests to an httptest server with at most one session
// cookie, which the test can inspect and replace.
type browser struct {
	t      *testing.T
	srv    *httptest.Server
	c      *testkit.Client
	cookie *http.Cookie
}

func newBrowser(t *testing.T, h http.Handler) *browser {
	srv := httptest.NewServer(h) // listens on 127.0.0.1
	t.Cleanup(srv.Close)
	c := testkit.NewClient(t)
	c.HTTP.Jar = nil // the browser keeps its one cookie in b.cookie
	return &browser{t: t, srv: srv, c: c}
}

// do requests path with the current cookie and applies the response's
// Set-Cookie, as a browser would (a cookie with Max-Age<=0 is dropped).
func (b *browser) do(path string, query url.Values) result {
	b.t.Helper()
	var cookies []*http.Cookie
	if b.cookie != nil {
		cookies = append(cookies, b.cookie)
	}
	r := b.c.Get(b.srv.URL+path+"?"+query.Encode(), cookies...)
	var res result
	if r.Status == http.StatusOK {
		if err := json.Unmarshal([]byte(r.Body), &res); err != nil {
			b.t.Fatalf("%s: bad reply %q: %v", path, r.Body, err)
		}
	} else {
		res.Err = r.Body
	}
	res.Status = r.Status
	if c := r.Cookie(cookieName); c != nil {
		res.Cookie = c
		if c.MaxAge < 0 || c.Value == "" {
			b.cookie = nil
		} else {
			b.cookie = c
		}
	}
	return res
}

func (b *browser) mustDo(path string, query url.Values) result {
	b.t.Helper()
	res := b.do(path, query)
	if res.Status != http.StatusOK || res.Err != "" {
		b.t.Fatalf("%s: status %d, error %q", path, res.Status, res.Err)
	}
	return res
}

// records returns every live record in fs.
func records(t *testing.T, fs *filestore.Store) []filestore.Record {
	t.Helper()
	var recs []filestore.Record
	err := fs.ForEach(context.Background(), func(r filestore.Record) error {
		recs = append(recs, r)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return recs
}

// oneRecord returns fs's only live record.
func oneRecord(t *testing.T, fs *filestore.Store) filestore.Record {
	t.Helper()
	recs := records(t, fs)
	if len(recs) != 1 {
		t.Fatalf("store holds %d live records, want 1", len(recs))
	}
	return recs[0]
}

func TestSaveAndReload(t *testing.T) {
	fs := openFS(t, nil)
	store := gorillastore.NewStore(fs, hashKey, blockKey)
	b := newBrowser(t, app(store))

	if res := b.mustDo("/get", nil); !res.New || res.Value != "" || res.Cookie != nil {
		t.Fatalf("first visit: got %+v, want a new empty session and no cookie", res)
	}
	before := time.Now()
	res := b.mustDo("/set", url.Values{"v": {"hello"}})
	after := time.Now()
	if res.Cookie == nil || res.Cookie.MaxAge != 86400*30 || res.Cookie.Path != "/" {
		t.Fatalf("Save set cookie %v, want one with Max-Age 30 days and Path /", res.Cookie)
	}

	rec := oneRecord(t, fs)
	if min, max := before.Add(30*24*time.Hour), after.Add(30*24*time.Hour); rec.Expiry.Before(min) || rec.Expiry.After(max) {
		t.Errorf("record expiry %v, want MaxAge (30 days) after Save, in [%v, %v]", rec.Expiry, min, max)
	}
	if len(rec.ID) != 52 {
		t.Errorf("session id has %d characters, want 52 (base32 of 32 random bytes)", len(rec.ID))
	}
	if strings.Contains(res.Cookie.Value, rec.ID) {
		t.Error("the cookie holds the raw session id; want it encoded by the codecs")
	}
	if strings.Contains(string(rec.Data), "hello") {
		t.Error("the record holds the value in clear; want it encrypted by the codecs")
	}
	err := filepath.WalkDir(fs.Dir(), func(path string, _ iofs.DirEntry, err error) error {
		if strings.Contains(path, rec.ID) {
			t.Error("a path in the store contains the session id")
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}

	for i := range 2 {
		if res := b.mustDo("/get", nil); res.New || res.Value != "hello" {
			t.Fatalf("reload %d: got %+v, want the saved session", i, res)
		}
	}
	b.mustDo("/set", url.Values{"v": {"again"}})
	if res := b.mustDo("/get", nil); res.Value != "again" {
		t.Fatalf("after second save: value %q, want %q", res.Value, "again")
	}
	if got := oneRecord(t, fs); got.ID != rec.ID {
		t.Error("saving an existing session changed its id")
	}
}

func TestGetUsesRegistry(t *testing.T) {
	store := gorillastore.NewStore(openFS(t, nil), hashKey)
	r := httptest.NewRequest(http.MethodGet, "/", nil)
	s1, err := store.Get(r, cookieName)
	if err != nil {
		t.Fatal(err)
	}
	s2, err := store.Get(r, cookieName)
	if err != nil {
		t.Fatal(err)
	}
	if s1 != s2 {
		t.Error("two Gets on one request returned different sessions")
	}
	s3, err := store.New(r, cookieName)
	if err != nil {
		t.Fatal(err)
	}
	if s3 == s1 {
		t.Error("New returned the registered session")
	}
	s1.Options.MaxAge = 7
	if store.Options.MaxAge == 7 {
		t.Error("changing a session's Options changed the store's")
	}
}

func TestLogoutDeletesRecord(t *testing.T) {
	fs := openFS(t, nil)
	store := gorillastore.NewStore(fs, hashKey)
	b := newBrowser(t, app(store))

	b.mustDo("/set", url.Values{"v": {"secret"}})
	stolen := b.cookie
	id := oneRecord(t, fs).ID

	res := b.mustDo("/logout", nil)
	if res.Cookie == nil || res.Cookie.MaxAge >= 0 {
		t.Fatalf("logout set cookie %v, want one that deletes it (Max-Age=0)", res.Cookie)
	}
	if _, err := fs.Load(context.Background(), id); !errors.Is(err, filestore.ErrNotFound) {
		t.Fatalf("Load after logout: %v, want ErrNotFound", err)
	}
	if n := len(records(t, fs)); n != 0 {
		t.Fatalf("store holds %d records after logout, want 0", n)
	}

	// A copy of the cookie taken before logout no longer opens the session.
	b.cookie = stolen
	if res := b.mustDo("/get", nil); !res.New || res.Value != "" {
		t.Fatalf("old cookie after logout: got %+v, want a new empty session", res)
	}
	// The empty cookie gorilla's stores set to delete one is no session,
	// not an error.
	b.cookie = &http.Cookie{Name: cookieName, Value: ""}
	if res := b.mustDo("/get", nil); !res.New {
		t.Fatalf("empty cookie: got %+v, want a new session", res)
	}
	// Logging out a session that was never saved is harmless.
	b.cookie = nil
	if res := b.mustDo("/logout", nil); res.Cookie == nil || res.Cookie.MaxAge >= 0 {
		t.Fatalf("logout without a session set cookie %v, want a deleting one", res.Cookie)
	}
}

func TestMissingRecordGetsFreshID(t *testing.T) {
	fs := openFS(t, nil)
	store := gorillastore.NewStore(fs, hashKey)
	b := newBrowser(t, app(store))

	b.mustDo("/set", url.Values{"v": {"one"}})
	old := oneRecord(t, fs).ID
	if err := fs.Delete(context.Background(), old); err != nil {
		t.Fatal(err)
	}
	if res := b.mustDo("/get", nil); !res.New || res.Value != "" {
		t.Fatalf("cookie for a deleted record: got %+v, want a new session and no error", res)
	}
	b.mustDo("/set", url.Values{"v": {"two"}})
	if got := oneRecord(t, fs); got.ID == old {
		t.Error("a session saved after its record was deleted reused the old id")
	}
	if res := b.mustDo("/get", nil); res.Value != "two" {
		t.Fatalf("value %q, want %q", res.Value, "two")
	}
}

func TestMaxAgeBecomesExpiry(t *testing.T) {
	fs := openFS(t, nil)
	store := gorillastore.NewStore(fs, hashKey)
	b := newBrowser(t, app(store))

	before := time.Now()
	b.mustDo("/set", url.Values{"v": {"short"}, "maxage": {"1"}})
	after := time.Now()
	rec := oneRecord(t, fs)
	if min, max := before.Add(time.Second), after.Add(time.Second); rec.Expiry.Before(min) || rec.Expiry.After(max) {
		t.Fatalf("record expiry %v, want one second after Save, in [%v, %v]", rec.Expiry, min, max)
	}
	if res := b.mustDo("/get", nil); res.Value != "short" {
		t.Fatalf("before expiry: value %q, want %q", res.Value, "short")
	}

	time.Sleep(time.Until(rec.Expiry) + 10*time.Millisecond)
	// The browser would drop the cookie now; one that keeps it (or an
	// attacker who copied it) must not get the session back.
	if res := b.mustDo("/get", nil); !res.New || res.Value != "" {
		t.Fatalf("after expiry: got %+v, want a new empty session", res)
	}
	n, err := fs.DeleteExpired(context.Background())
	if err != nil || n != 1 {
		t.Fatalf("DeleteExpired = %d, %v; want the expired session swept", n, err)
	}
}

func TestBrowserSession(t *testing.T) {
	fs := openFS(t, nil)
	store := gorillastore.NewStore(fs, hashKey)
	b := newBrowser(t, app(store))

	before := time.Now()
	res := b.mustDo("/set", url.Values{"v": {"tab"}, "maxage": {"0"}})
	after := time.Now()
	if res.Cookie == nil || res.Cookie.MaxAge != 0 || !res.Cookie.Expires.IsZero() {
		t.Fatalf("cookie %v, want a session cookie (no Max-Age, no Expires)", res.Cookie)
	}
	rec := oneRecord(t, fs)
	ttl := gorillastore.DefaultBrowserSessionTTL
	if rec.Expiry.Before(before.Add(ttl)) || rec.Expiry.After(after.Add(ttl)) {
		t.Errorf("record expiry %v, want DefaultBrowserSessionTTL after Save", rec.Expiry)
	}
	if res := b.mustDo("/get", nil); res.New || res.Value != "tab" {
		t.Fatalf("reload: got %+v, want the saved browser session", res)
	}

	store.BrowserSessionTTL = 0
	b.mustDo("/set", url.Values{"v": {"forever"}, "maxage": {"0"}})
	if rec := oneRecord(t, fs); !rec.Expiry.IsZero() {
		t.Errorf("with BrowserSessionTTL 0, record expiry %v, want none", rec.Expiry)
	}
}

func TestHugeMaxAge(t *testing.T) {
	fs := openFS(t, nil)
	b := newBrowser(t, app(gorillastore.NewStore(fs, hashKey)))
	b.mustDo("/set", url.Values{"v": {"x"}, "maxage": {strconv.Itoa(1 << 62)}})
	if rec := oneRecord(t, fs); !rec.Expiry.After(time.Now().AddDate(200, 0, 0)) {
		t.Errorf("MaxAge 2^62 s gave record expiry %v, want centuries ahead", rec.Expiry)
	}
}

func TestTamperedCookie(t *testing.T) {
	fs := openFS(t, nil)
	store := gorillastore.NewStore(fs, hashKey)
	b := newBrowser(t, app(store))
	b.mustDo("/set", url.Values{"v": {"mine"}})
	good := b.cookie.Value

	// A cookie for the same store, signed with another key.
	other := gorillastore.NewStore(openFS(t, nil), []byte("another-hash-key-another-hash-ke"))
	ob := newBrowser(t, app(other))
	ob.mustDo("/set", url.Values{"v": {"theirs"}})

	flip := []byte(good)
	i := len(flip) / 2
	if flip[i] == 'A' {
		flip[i] = 'B'
	} else {
		flip[i] = 'A'
	}
	for name, value := range map[string]string{
		"flipped byte": string(flip),
		"truncated":    good[:len(good)-4],
		"garbage":      "not-a-cookie",
		"other key":    ob.cookie.Value,
	} {
		b.cookie = &http.Cookie{Name: cookieName, Value: value}
		res := b.do("/get", nil)
		if res.Status != http.StatusOK || res.Err == "" || !res.New || res.Value != "" {
			t.Errorf("%s: got %+v, want an error and a new empty session", name, res)
		}
	}

	// Saving after a rejected cookie starts a new session; the old one is
	// untouched.
	b.cookie = &http.Cookie{Name: cookieName, Value: string(flip)}
	b.do("/set", url.Values{"v": {"fresh"}})
	if n := len(records(t, fs)); n != 2 {
		t.Fatalf("store holds %d records, want the old session and a new one", n)
	}
	b.cookie = &http.Cookie{Name: cookieName, Value: good}
	if res := b.mustDo("/get", nil); res.Value != "mine" {
		t.Fatalf("original cookie: value %q, want %q", res.Value, "mine")
	}
}

func TestCookieNameBindsRecord(t *testing.T) {
	// A valid cookie for one session name, presented under another, is
	// rejected: the codecs bind the name.
	fs := openFS(t, nil)
	store := gorillastore.NewStore(fs, hashKey)
	w := httptest.NewRecorder()
	r := httptest.NewRequest(http.MethodGet, "/", nil)
	sess, _ := store.New(r, "a")
	sess.Values["v"] = "x"
	if err := sess.Save(r, w); err != nil {
		t.Fatal(err)
	}
	c := w.Result().Cookies()[0]
	r = httptest.NewRequest(http.MethodGet, "/", nil)
	r.AddCookie(&http.Cookie{Name: "b", Value: c.Value})
	if sess, err := store.New(r, "b"); err == nil || !sess.IsNew {
		t.Fatalf("cookie of session a read as b: err %v, IsNew %v; want an error", err, sess.IsNew)
	}
}

func TestKeyRotation(t *testing.T) {
	fs := openFS(t, nil)
	oldKey := []byte("old-hash-key-old-hash-key-old-ha")
	b := newBrowser(t, app(gorillastore.NewStore(fs, oldKey)))
	b.mustDo("/set", url.Values{"v": {"kept"}})

	rotated := gorillastore.NewStore(fs, hashKey, nil, oldKey, nil)
	rb := newBrowser(t, app(rotated))
	rb.cookie = b.cookie
	if res := rb.mustDo("/get", nil); res.Value != "kept" {
		t.Fatalf("after rotation: value %q, want %q", res.Value, "kept")
	}
	rb.mustDo("/set", url.Values{"v": {"resigned"}})
	// Re-saved with the new key, the session no longer opens with the old.
	b.cookie = rb.cookie
	if res := b.do("/get", nil); res.Err == "" {
		t.Fatal("the old-key store read a session saved with the new key")
	}
}

func TestSizeLimits(t *testing.T) {
	fs := openFS(t, &filestore.Options{MaxRecordSize: 64 << 10})
	store := gorillastore.NewStore(fs, hashKey)
	b := newBrowser(t, app(store))

	// FilesystemStore refuses values over securecookie's 4096 bytes.
	big := strings.Repeat("x", 16<<10)
	b.mustDo("/set", url.Values{"v": {big}})
	if res := b.mustDo("/get", nil); res.Value != big {
		t.Fatalf("16 KiB value came back with %d bytes", len(res.Value))
	}

	// Over the filestore's cap: ErrTooLarge, and the old session stays.
	r := httptest.NewRequest(http.MethodGet, "/", nil)
	sess, _ := store.New(r, cookieName)
	sess.Values["v"] = strings.Repeat("y", 128<<10)
	if err := store.Save(r, httptest.NewRecorder(), sess); !errors.Is(err, filestore.ErrTooLarge) {
		t.Fatalf("Save of 128 KiB into a 64 KiB store: %v, want ErrTooLarge", err)
	}

	store.MaxLength(1000)
	sess.Values["v"] = strings.Repeat("z", 2000)
	if err := store.Save(r, httptest.NewRecorder(), sess); err == nil {
		t.Fatal("Save of 2000 bytes with MaxLength 1000 succeeded")
	}
}

func TestConcurrentSessions(t *testing.T) {
	fs := openFS(t, &filestore.Options{NoSync: true})
	store := gorillastore.NewStore(fs, hashKey, blockKey)
	h := app(store)
	var wg sync.WaitGroup
	for i := range 8 {
		b := newBrowser(t, h)
		wg.Go(func() {
			for j := range 10 {
				v := fmt.Sprintf("%d-%d", i, j)
				if res := b.do("/set", url.Values{"v": {v}}); res.Status != http.StatusOK || res.Err != "" {
					t.Errorf("client %d: set: %+v", i, res)
					return
				}
				if res := b.do("/get", nil); res.Value != v || res.Err != "" {
					t.Errorf("client %d: got %q (%s), want %q", i, res.Value, res.Err, v)
					return
				}
			}
		})
	}
	wg.Wait()
	if n := len(records(t, fs)); n != 8 {
		t.Errorf("store holds %d records, want one per client (8)", n)
	}
}

func TestUnusableStores(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "unrelated"), []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	r := httptest.NewRequest(http.MethodGet, "/", nil)
	for name, tc := range map[string]struct {
		store *gorillastore.Store
		want  error
	}{
		"not a store":   {gorillastore.NewFilesystemStore(dir, hashKey), filestore.ErrNotStore},
		"nil filestore": {gorillastore.NewStore(nil, hashKey), nil},
		"nil Store":     {nil, nil},
	} {
		err := tc.store.Err()
		if err == nil || (tc.want != nil && !errors.Is(err, tc.want)) {
			t.Errorf("%s: Err() = %v, want %v", name, err, tc.want)
		}
		sess, err := tc.store.New(r, cookieName)
		if err == nil || sess == nil || !sess.IsNew || sess.Options == nil {
			t.Errorf("%s: New = %v, %v; want a new session and an error", name, sess, err)
			continue
		}
		if err := tc.store.Save(r, httptest.NewRecorder(), sess); err == nil {
			t.Errorf("%s: Save succeeded", name)
		}
		if err := tc.store.Close(); err != nil {
			t.Errorf("%s: Close: %v", name, err)
		}
	}

	store := gorillastore.NewStore(openFS(t, nil), hashKey)
	if err := store.Save(r, httptest.NewRecorder(), nil); err == nil {
		t.Error("Save(nil session) succeeded")
	}
	sess := sessions.NewSession(store, cookieName) // no Options
	if err := store.Save(r, httptest.NewRecorder(), sess); err != nil {
		t.Errorf("Save of a session without Options: %v", err)
	}
	noKeys := gorillastore.NewStore(openFS(t, nil))
	if err := noKeys.Save(r, httptest.NewRecorder(), sessions.NewSession(noKeys, cookieName)); err == nil {
		t.Error("Save with no codecs succeeded")
	}
}

func TestNewFilesystemStore(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "sessions")
	store := gorillastore.NewFilesystemStore(dir, hashKey)
	if err := store.Err(); err != nil {
		t.Fatal(err)
	}
	b := newBrowser(t, app(store))
	b.mustDo("/set", url.Values{"v": {"v1"}})
	if res := b.mustDo("/get", nil); res.Value != "v1" {
		t.Fatalf("value %q, want %q", res.Value, "v1")
	}
	if err := store.Close(); err != nil {
		t.Fatal(err)
	}
	if res := b.do("/get", nil); !strings.Contains(res.Err, "closed") {
		t.Fatalf("Get after Close: %+v, want a closed-store error", res)
	}

	// The sessions are in a filestore anyone can reopen.
	fs, err := filestore.Open(dir, &filestore.Options{SweepInterval: -1})
	if err != nil {
		t.Fatal(err)
	}
	defer fs.Close()
	if rec := oneRecord(t, fs); len(rec.Data) == 0 {
		t.Fatal("empty record")
	}
}

// GinStore must satisfy an interface shaped like gin-contrib/sessions'
// Store for a type shaped like its Options.
type ginOptions struct {
	Path   string
	MaxAge int
}

func (o ginOptions) ToGorillaOptions() *sessions.Options {
	return &sessions.Options{Path: o.Path, MaxAge: o.MaxAge}
}

type ginStore interface {
	sessions.Store
	Options(ginOptions)
}

var _ ginStore = gorillastore.GinStore[ginOptions]{}

func TestGinStoreOptions(t *testing.T) {
	fs := openFS(t, nil)
	store := gorillastore.NewStore(fs, hashKey)
	var gs ginStore = gorillastore.GinStore[ginOptions]{Store: store}
	gs.Options(ginOptions{Path: "/app", MaxAge: 60})
	if store.Options.Path != "/app" || store.Options.MaxAge != 60 {
		t.Fatalf("store options %+v after GinStore.Options", store.Options)
	}
	b := newBrowser(t, app(gs))
	before := time.Now()
	res := b.mustDo("/set", url.Values{"v": {"gin"}})
	if res.Cookie.Path != "/app" || res.Cookie.MaxAge != 60 {
		t.Fatalf("cookie %v, want the options set through gin", res.Cookie)
	}
	if rec := oneRecord(t, fs); rec.Expiry.Before(before.Add(time.Minute)) || rec.Expiry.After(time.Now().Add(time.Minute)) {
		t.Fatalf("record expiry %v, want a minute after Save", rec.Expiry)
	}
}

// Cross-process: the test binary re-executes itself as a worker that opens
// the same directory. The worker gets the parent's cookie in a file, reads
// the parent's session and saves its own, and hands its cookie back.
func TestCrossProcess(t *testing.T) {
	if dir, ok := testkit.Worker(t); ok {
		if err := worker(dir); err != nil {
			t.Fatal(err)
		}
		return
	}
	dir := t.TempDir()
	storeDir := filepath.Join(dir, "sessions")
	fs, err := filestore.Open(storeDir, &filestore.Options{SweepInterval: -1})
	if err != nil {
		t.Fatal(err)
	}
	defer fs.Close()
	b := newBrowser(t, app(gorillastore.NewStore(fs, hashKey, blockKey)))
	b.mustDo("/set", url.Values{"v": {"from parent"}})
	if err := os.WriteFile(filepath.Join(dir, "parent.cookie"), []byte(b.cookie.Value), 0o600); err != nil {
		t.Fatal(err)
	}

	if err := testkit.StartWorker(t, dir).Wait(); err != nil {
		t.Fatal(err)
	}

	c, err := os.ReadFile(filepath.Join(dir, "worker.cookie"))
	if err != nil {
		t.Fatal(err)
	}
	b.cookie = &http.Cookie{Name: cookieName, Value: string(c)}
	if res := b.mustDo("/get", nil); res.New || res.Value != "from worker" {
		t.Fatalf("session saved by the worker: got %+v", res)
	}
	if n := len(records(t, fs)); n != 2 {
		t.Fatalf("store holds %d records, want 2", n)
	}
}

// worker is the child side of TestCrossProcess.
func worker(dir string) error {
	store := gorillastore.NewFilesystemStore(filepath.Join(dir, "sessions"), hashKey, blockKey)
	if err := store.Err(); err != nil {
		return err
	}
	defer store.Close()
	h := app(store)

	c, err := os.ReadFile(filepath.Join(dir, "parent.cookie"))
	if err != nil {
		return err
	}
	r := httptest.NewRequest(http.MethodGet, "/get", nil)
	r.AddCookie(&http.Cookie{Name: cookieName, Value: string(c)})
	w := httptest.NewRecorder()
	h.ServeHTTP(w, r)
	var res result
	if err := json.NewDecoder(w.Body).Decode(&res); err != nil {
		return err
	}
	if res.New || res.Value != "from parent" || res.Err != "" {
		return fmt.Errorf("parent's session: got %+v", res)
	}

	w = httptest.NewRecorder()
	h.ServeHTTP(w, httptest.NewRequest(http.MethodGet, "/set?v=from+worker", nil))
	cookies := w.Result().Cookies()
	if w.Code != http.StatusOK || len(cookies) != 1 {
		return fmt.Errorf("save: status %d, %d cookies", w.Code, len(cookies))
	}
	return os.WriteFile(filepath.Join(dir, "worker.cookie"), []byte(cookies[0].Value), 0o600)
}

// The cookie is the session id and the record is the session values, each
// encoded with gorilla's securecookie, as FilesystemStore does.
func TestCookieAndRecordFormat(t *testing.T) {
	fs := openFS(t, nil)
	store := gorillastore.NewStore(fs, hashKey, blockKey)
	b := newBrowser(t, app(store))
	b.mustDo("/set", url.Values{"v": {"x"}})
	var id string
	codecs := securecookie.CodecsFromPairs(hashKey, blockKey)
	if err := securecookie.DecodeMulti(cookieName, b.cookie.Value, &id, codecs...); err != nil {
		t.Fatal(err)
	}
	rec, err := fs.Load(context.Background(), id)
	if err != nil {
		t.Fatal(err)
	}
	values := map[any]any{}
	if err := securecookie.DecodeMulti(cookieName, string(rec.Data), &values, codecs...); err != nil {
		t.Fatal(err)
	}
	if values["v"] != "x" {
		t.Fatalf("record values %v", values)
	}
}

// BenchmarkRequest measures one request that loads a session through its
// cookie, changes it and saves it, with and without fsync.
func BenchmarkRequest(b *testing.B) {
	for _, noSync := range []bool{false, true} {
		b.Run("NoSync="+strconv.FormatBool(noSync), func(b *testing.B) {
			fs, err := filestore.Open(filepath.Join(b.TempDir(), "s"), &filestore.Options{NoSync: noSync, SweepInterval: -1})
			if err != nil {
				b.Fatal(err)
			}
			defer fs.Close()
			store := gorillastore.NewStore(fs, hashKey, blockKey)
			r := httptest.NewRequest(http.MethodGet, "/", nil)
			sess, _ := store.New(r, cookieName)
			sess.Values["user"] = "someone"
			w := httptest.NewRecorder()
			if err := store.Save(r, w, sess); err != nil {
				b.Fatal(err)
			}
			cookie := w.Result().Cookies()[0]
			for i := 0; b.Loop(); i++ {
				r := httptest.NewRequest(http.MethodGet, "/", nil)
				r.AddCookie(cookie)
				sess, err := store.New(r, cookieName)
				if err != nil || sess.IsNew {
					b.Fatalf("load: %v", err)
				}
				sess.Values["n"] = i
				if err := store.Save(r, httptest.NewRecorder(), sess); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
