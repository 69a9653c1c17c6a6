package scsstore_test

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/alexedwards/scs/v2"
	"github.com/filestore-go/filestore"
	"github.com/filestore-go/filestore/internal/testkit"
	"github.com/filestore-go/filestore/scsstore"
)

// routes exposes a session manager's verbs over HTTP, for tests that drive
// scs the way an application does.
func routes(sm *scs.SessionManager) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("/put", func(w http.ResponseWriter, r *http.Request) {
		sm.Put(r.Context(), r.FormValue("key"), r.FormValue("value"))
	})
	mux.HandleFunc("/get", func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, sm.GetString(r.Context(), r.FormValue("key")))
	})
	mux.HandleFunc("/pop", func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, sm.PopString(r.Context(), r.FormValue("key")))
	})
	mux.HandleFunc("/destroy", func(w http.ResponseWriter, r *http.Request) {
		if err := sm.Destroy(r.Context()); err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
		}
	})
	mux.HandleFunc("/renew", func(w http.ResponseWriter, r *http.Request) {
		if err := sm.RenewToken(r.Context()); err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
		}
	})
	return sm.LoadAndSave(mux)
}

// newServer serves a session manager backed by st, after configure (if not
// nil) has adjusted it.
func newServer(t *testing.T, st scs.Store, configure func(*scs.SessionManager)) (*httptest.Server, *scs.SessionManager) {
	t.Helper()
	sm := scs.New()
	sm.Store = st
	if configure != nil {
		configure(sm)
	}
	srv := httptest.NewServer(routes(sm))
	t.Cleanup(srv.Close)
	return srv, sm
}

// browser is one user's browser: its cookie jar keeps the session cookie.
type browser struct {
	t *testing.T
	c *testkit.Client
}

func newBrowser(t *testing.T) *browser {
	return &browser{t: t, c: testkit.NewClient(t)}
}

// do requests base+path and returns the response body. It fails the test
// on any status but 200.
func (b *browser) do(base, path string) string {
	b.t.Helper()
	r := b.c.Get(base + path)
	if r.Status != http.StatusOK {
		b.t.Fatalf("GET %s: status %d: %s", path, r.Status, r.Body)
	}
	return r.Body
}

// token returns the session cookie the browser holds for base, or "".
func (b *browser) token(base string) string {
	b.t.Helper()
	if c := b.c.Cookie(base, "session"); c != nil {
		return c.Value
	}
	return ""
}

// replay requests base+path presenting only the given session token, as an
// attacker holding a stolen cookie would.
func replay(t *testing.T, base, path, token string) string {
	t.Helper()
	return testkit.NewClient(t).Get(base+path, &http.Cookie{Name: "session", Value: token}).Body
}

func TestHTTPPutGetPop(t *testing.T) {
	st, _, _ := newStore(t)
	srv, _ := newServer(t, st, nil)
	b := newBrowser(t)

	b.do(srv.URL, "/put?key=greeting&value=hello")
	if b.token(srv.URL) == "" {
		t.Fatal("no session cookie after Put")
	}
	if got := b.do(srv.URL, "/get?key=greeting"); got != "hello" {
		t.Fatalf("get = %q, want hello", got)
	}
	if got := b.do(srv.URL, "/pop?key=greeting"); got != "hello" {
		t.Fatalf("pop = %q, want hello", got)
	}
	if got := b.do(srv.URL, "/get?key=greeting"); got != "" {
		t.Fatalf("get after pop = %q, want empty", got)
	}
}

func TestHTTPDestroy(t *testing.T) {
	st, _, _ := newStore(t)
	srv, _ := newServer(t, st, nil)
	b := newBrowser(t)

	b.do(srv.URL, "/put?key=user&value=alice")
	old := b.token(srv.URL)
	b.do(srv.URL, "/destroy")
	if got := b.do(srv.URL, "/get?key=user"); got != "" {
		t.Fatalf("get after destroy = %q, want empty", got)
	}
	if got := replay(t, srv.URL, "/get?key=user", old); got != "" {
		t.Fatalf("replaying a destroyed session's cookie gave %q, want empty", got)
	}
	if _, found, err := st.Find(old); found || err != nil {
		t.Fatalf("Find of a destroyed session = %v, %v; want false, nil", found, err)
	}
}

// A session that was never committed has no token; destroying it makes scs
// delete the empty token, which must succeed.
func TestHTTPDestroyUncommitted(t *testing.T) {
	st, _, _ := newStore(t)
	srv, _ := newServer(t, st, nil)
	b := newBrowser(t)
	b.do(srv.URL, "/destroy")
	b.do(srv.URL, "/renew")
	if m, err := st.All(); err != nil || len(m) != 1 {
		t.Fatalf("after renewing a fresh session: %d sessions, %v; want 1, nil", len(m), err)
	}
}

func TestHTTPRenewToken(t *testing.T) {
	st, _, _ := newStore(t)
	srv, _ := newServer(t, st, nil)
	b := newBrowser(t)

	b.do(srv.URL, "/put?key=user&value=alice")
	old := b.token(srv.URL)
	b.do(srv.URL, "/renew")
	renewed := b.token(srv.URL)
	if renewed == "" || renewed == old {
		t.Fatal("RenewToken did not issue a new session cookie")
	}
	if got := b.do(srv.URL, "/get?key=user"); got != "alice" {
		t.Fatalf("get after renew = %q, want alice", got)
	}
	if _, found, err := st.Find(old); found || err != nil {
		t.Fatalf("Find of the old token = %v, %v; want false, nil", found, err)
	}
	if _, found, err := st.Find(renewed); !found || err != nil {
		t.Fatalf("Find of the new token = %v, %v; want true, nil", found, err)
	}
	if got := replay(t, srv.URL, "/get?key=user", old); got != "" {
		t.Fatalf("replaying the pre-renewal cookie gave %q, want empty", got)
	}
}

func TestHTTPIterate(t *testing.T) {
	st, _, _ := newStore(t)
	srv, sm := newServer(t, st, nil)
	users := map[string]*browser{}
	for _, name := range []string{"alice", "bob", "carol"} {
		users[name] = newBrowser(t)
		users[name].do(srv.URL, "/put?key=user&value="+name)
	}

	seen := func() []string {
		t.Helper()
		var names []string
		err := sm.Iterate(context.Background(), func(ctx context.Context) error {
			names = append(names, sm.GetString(ctx, "user"))
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		slices.Sort(names)
		return names
	}
	if got, want := seen(), []string{"alice", "bob", "carol"}; !slices.Equal(got, want) {
		t.Fatalf("Iterate saw %q, want %q", got, want)
	}

	// Log bob out everywhere, as an admin would.
	err := sm.Iterate(context.Background(), func(ctx context.Context) error {
		if sm.GetString(ctx, "user") == "bob" {
			return sm.Destroy(ctx)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if got, want := seen(), []string{"alice", "carol"}; !slices.Equal(got, want) {
		t.Fatalf("after destroying bob, Iterate saw %q, want %q", got, want)
	}
	if got := users["bob"].do(srv.URL, "/get?key=user"); got != "" {
		t.Fatalf("bob's browser still has a session for %q", got)
	}
	if got := users["alice"].do(srv.URL, "/get?key=user"); got != "alice" {
		t.Fatalf("alice's browser has a session for %q, want alice", got)
	}

	// An error from fn stops Iterate and is returned.
	stop := errors.New("stop")
	if err := sm.Iterate(context.Background(), func(context.Context) error { return stop }); err != stop {
		t.Fatalf("Iterate = %v, want fn's error", err)
	}
}

// storedExpiry returns the expiry that the store holds for token.
func storedExpiry(t *testing.T, fs *filestore.Store, token string) time.Time {
	t.Helper()
	rec, err := fs.Load(context.Background(), token)
	if err != nil {
		t.Fatal(err)
	}
	return rec.Expiry
}

// sleepPast sleeps until t has passed on the wall clock, which is the
// clock the store compares expiries with.
func sleepPast(t time.Time) {
	for time.Now().Round(0).Before(t.Add(time.Millisecond)) {
		time.Sleep(time.Until(t) + 5*time.Millisecond)
	}
}

func TestHTTPLifetime(t *testing.T) {
	t.Parallel()
	st, fs, _ := newStore(t)
	srv, _ := newServer(t, st, func(sm *scs.SessionManager) { sm.Lifetime = 500 * time.Millisecond })
	b := newBrowser(t)

	start := time.Now()
	b.do(srv.URL, "/put?key=user&value=alice")
	tok := b.token(srv.URL)
	exp := storedExpiry(t, fs, tok)
	if exp.Before(start) || exp.After(time.Now().Add(500*time.Millisecond)) {
		t.Fatalf("stored expiry is %v after the request started, want within the 500ms lifetime", exp.Sub(start))
	}
	if got := b.do(srv.URL, "/get?key=user"); got != "alice" {
		t.Fatalf("get before expiry = %q, want alice", got)
	}

	sleepPast(exp)
	if _, found, err := st.Find(tok); found || err != nil {
		t.Fatalf("Find after the lifetime = %v, %v; want false, nil", found, err)
	}
	if m, err := st.All(); err != nil || len(m) != 0 {
		t.Fatalf("All after the lifetime = %d sessions, %v; want 0, nil", len(m), err)
	}
	if got := b.do(srv.URL, "/get?key=user"); got != "" {
		t.Fatalf("get after the lifetime = %q, want empty", got)
	}
}

func TestHTTPIdleTimeout(t *testing.T) {
	t.Parallel()
	st, fs, _ := newStore(t)
	srv, _ := newServer(t, st, func(sm *scs.SessionManager) {
		sm.Lifetime = time.Hour
		sm.IdleTimeout = 500 * time.Millisecond
	})
	b := newBrowser(t)

	b.do(srv.URL, "/put?key=user&value=alice")
	tok := b.token(srv.URL)
	first := storedExpiry(t, fs, tok)
	if first.After(time.Now().Add(500 * time.Millisecond)) {
		t.Fatal("stored expiry is past the idle timeout: IdleTimeout was not applied")
	}

	// Any use of the session pushes its expiry out.
	time.Sleep(20 * time.Millisecond)
	if got := b.do(srv.URL, "/get?key=user"); got != "alice" {
		t.Fatalf("get while active = %q, want alice", got)
	}
	second := storedExpiry(t, fs, tok)
	if !second.After(first) {
		t.Fatalf("a request did not extend the idle expiry (moved by %v)", second.Sub(first))
	}

	sleepPast(second)
	if got := b.do(srv.URL, "/get?key=user"); got != "" {
		t.Fatalf("get after idling out = %q, want empty", got)
	}
	if _, found, err := st.Find(tok); found || err != nil {
		t.Fatalf("Find after idling out = %v, %v; want false, nil", found, err)
	}
}

// serveChild is the second process of TestTwoProcesses: it serves the
// store in dir, acks its URL and runs until the parent stops it.
func serveChild(t *testing.T, dir string) {
	fs, err := filestore.Open(dir, &filestore.Options{NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	defer fs.Close()
	srv, _ := newServer(t, scsstore.New(fs), nil)
	testkit.Ack("%s", srv.URL)
	testkit.WaitForStop()
}

func TestTwoProcesses(t *testing.T) {
	if dir, ok := testkit.Worker(t); ok {
		serveChild(t, dir)
		return
	}

	dir := filepath.Join(t.TempDir(), "sessions")
	fs, err := filestore.Open(dir, &filestore.Options{NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	defer fs.Close()
	srv, sm := newServer(t, scsstore.New(fs), nil)
	here := srv.URL
	child := testkit.StartWorker(t, dir)
	there := child.NextAck()

	// Cookies are not scoped by port, so one browser talks to both
	// processes with the same session cookie.
	b := newBrowser(t)
	b.do(there, "/put?key=from&value=child")
	if got := b.do(here, "/get?key=from"); got != "child" {
		t.Fatalf("this process sees %q, want the child's write", got)
	}
	b.do(here, "/put?key=from&value=parent")
	if got := b.do(there, "/get?key=from"); got != "parent" {
		t.Fatalf("the child sees %q, want this process's write", got)
	}

	old := b.token(here)
	b.do(there, "/renew")
	if b.token(here) == old {
		t.Fatal("the child's RenewToken issued no new cookie")
	}
	if got := b.do(here, "/get?key=from"); got != "parent" {
		t.Fatalf("after the child renewed the token this process sees %q, want parent", got)
	}
	if got := replay(t, here, "/get?key=from", old); got != "" {
		t.Fatalf("this process still accepts the token the child renewed away: %q", got)
	}

	n := 0
	err = sm.Iterate(context.Background(), func(ctx context.Context) error {
		n++
		if got := sm.GetString(ctx, "from"); got != "parent" {
			t.Errorf("Iterate saw from=%q, want parent", got)
		}
		return nil
	})
	if err != nil || n != 1 {
		t.Fatalf("Iterate visited %d sessions, %v; want 1, nil", n, err)
	}

	b.do(there, "/destroy")
	if got := b.do(here, "/get?key=from"); got != "" {
		t.Fatalf("this process still has the session the child destroyed: %q", got)
	}
	if err := child.Wait(); err != nil {
		t.Error(err)
	}
}
