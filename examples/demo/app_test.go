//go:build unix

package main

import (
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"path/filepath"
	"strings"
	"testing"

	"github.com/filestore-go/filestore"
	"github.com/filestore-go/filestore/internal/testkit"
)

// newTestApp serves the demo handler as worker 7 over a fresh store.
func newTestApp(t *testing.T) *httptest.Server {
	t.Helper()
	fs, err := filestore.Open(filepath.Join(t.TempDir(), "sessions"), &filestore.Options{NoSync: true, SweepInterval: -1})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { fs.Close() })
	log := slog.New(slog.DiscardHandler)
	srv := httptest.NewServer(newHandler(newSessionManager(fs, log), 7, 4242, log))
	t.Cleanup(srv.Close)
	return srv
}

func TestPageShowsWorkerAndEscapesUser(t *testing.T) {
	srv := newTestApp(t)
	c := testkit.NewClient(t)
	if page := c.Get(srv.URL + "/").Body; !strings.Contains(page, "worker 7</strong> (pid 4242)") || !strings.Contains(page, `action="/login"`) {
		t.Fatalf("anonymous page lacks the worker or the login form:\n%s", page)
	}
	if r := post(t, c, srv.URL+"/login", url.Values{"user": {"<b>mallory</b>"}}); r.status != http.StatusSeeOther {
		t.Fatalf("login: status %d, want 303", r.status)
	}
	post(t, c, srv.URL+"/count", nil)
	page := c.Get(srv.URL + "/").Body
	if strings.Contains(page, "<b>mallory</b>") || !strings.Contains(page, "&lt;b&gt;mallory&lt;/b&gt;") {
		t.Fatalf("user name not escaped:\n%s", page)
	}
	if !strings.Contains(page, "Counter: <strong>1</strong>") || !strings.Contains(page, `action="/logout"`) {
		t.Fatalf("logged-in page lacks the counter or the logout form:\n%s", page)
	}
}

func TestLoginRenewsToken(t *testing.T) {
	srv := newTestApp(t)
	c := testkit.NewClient(t)
	post(t, c, srv.URL+"/login", url.Values{"user": {"alice"}})
	post(t, c, srv.URL+"/count", nil)
	first := sessionCookie(c, srv.URL)
	if first == nil {
		t.Fatal("no session cookie after login")
	}

	// Logging in again, as someone else, must not reuse the token.
	post(t, c, srv.URL+"/login", url.Values{"user": {"bob"}})
	second := sessionCookie(c, srv.URL)
	if second == nil || second.Value == first.Value {
		t.Fatal("login did not issue a new session token")
	}
	if s := get(t, c, srv.URL+"/api/state"); s.state.User != "bob" || s.state.Count != 1 {
		t.Fatalf("after the second login: user %q count %d, want bob 1", s.state.User, s.state.Count)
	}

	if s := get(t, c, srv.URL+"/api/state", first); s.state.User != "" {
		t.Fatalf("the pre-login token still works, for user %q", s.state.User)
	}
}

func TestRejectedRequests(t *testing.T) {
	srv := newTestApp(t)
	c := testkit.NewClient(t)
	for _, name := range []string{"", "   ", strings.Repeat("x", maxUserLen+1), "\xff"} {
		if r := post(t, c, srv.URL+"/login", url.Values{"user": {name}}); r.status != http.StatusBadRequest {
			t.Errorf("login with a name of %d bytes: status %d, want 400", len(name), r.status)
		}
	}
	if r := post(t, c, srv.URL+"/count", nil); r.status != http.StatusForbidden {
		t.Errorf("count without login: status %d, want 403", r.status)
	}
	if sessionCookie(c, srv.URL) != nil {
		t.Error("rejected requests created a session")
	}
	if r := get(t, c, srv.URL+"/login"); r.status != http.StatusMethodNotAllowed {
		t.Errorf("GET /login: status %d, want 405", r.status)
	}

	// A cross-site form post, as a browser would send it from another
	// site, is refused.
	req, err := http.NewRequest(http.MethodPost, srv.URL+"/login", strings.NewReader("user=eve"))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("Sec-Fetch-Site", "cross-site")
	if r := do(t, c, req); r.status != http.StatusForbidden {
		t.Errorf("cross-site login: status %d, want 403", r.status)
	}
	if sessionCookie(c, srv.URL) != nil {
		t.Error("a cross-site login created a session")
	}
}
