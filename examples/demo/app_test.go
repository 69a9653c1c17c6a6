//go:build unix

package main

import (
	"bufio"
	"context"
	"encoding/json"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/filestore-go/filestore"
	"github.com/filestore-go/filestore/internal/testkit"
)

// newTestApp serves the demo handler as worker 7 of 3 over a fresh store,
// which it returns too.
func newTestApp(t *testing.T) (*httptest.Server, *filestore.Store) {
	t.Helper()
	fs, err := filestore.Open(filepath.Join(t.TempDir(), "sessions"), &filestore.Options{NoSync: true, SweepInterval: -1})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { fs.Close() })
	log := slog.New(slog.DiscardHandler)
	ctx, cancel := context.WithCancel(context.Background())
	info := workerInfo{n: 7, workers: 3, pid: 4242, started: time.Now()}
	srv := httptest.NewServer(newHandler(newSessionManager(fs, log), info, startFeed(ctx, fs, 7, log), ctx.Done(), log))
	t.Cleanup(srv.Close)
	// Cleanups run last first: the event streams end (as at a worker's
	// shutdown) before srv.Close waits for every request.
	t.Cleanup(cancel)
	return srv, fs
}

func TestPageShowsWorkerAndEscapesUser(t *testing.T) {
	srv, _ := newTestApp(t)
	c := testkit.NewClient(t)
	r := c.Get(srv.URL + "/")
	for _, want := range []string{
		"<strong>worker 7</strong> (pid 4242)",
		`data-workers="3"`,
		`action="/login"`,
		`<meta name="viewport"`,
	} {
		if !strings.Contains(r.Body, want) {
			t.Fatalf("anonymous page lacks %s:\n%s", want, r.Body)
		}
	}
	if csp := r.Header.Get("Content-Security-Policy"); !strings.Contains(csp, "default-src 'self'") {
		t.Errorf("Content-Security-Policy %q does not restrict the page to its own origin", csp)
	}
	if r := post(t, c, srv.URL+"/login", url.Values{"user": {"<b>mallory</b>"}}); r.status != http.StatusSeeOther {
		t.Fatalf("login: status %d, want 303", r.status)
	}
	post(t, c, srv.URL+"/count", nil)
	page := c.Get(srv.URL + "/").Body
	if strings.Contains(page, "<b>mallory</b>") || !strings.Contains(page, "&lt;b&gt;mallory&lt;/b&gt;") {
		t.Fatalf("user name not escaped:\n%s", page)
	}
	if !strings.Contains(page, `<strong id="count">1</strong>`) || !strings.Contains(page, `action="/logout"`) {
		t.Fatalf("logged-in page lacks the counter or the logout form:\n%s", page)
	}
	token := sessionCookie(c, srv.URL).Value
	if !strings.Contains(page, `data-key="`+shortKey(token)+`"`) {
		t.Errorf("logged-in page does not name its record by short key")
	}
	if strings.Contains(page, token) {
		t.Error("the page shows the raw session id")
	}
}

func TestStaticFiles(t *testing.T) {
	srv, _ := newTestApp(t)
	c := testkit.NewClient(t)
	for path, typ := range map[string]string{
		"/static/demo.js":     "text/javascript",
		"/static/demo.css":    "text/css",
		"/static/favicon.svg": "image/svg+xml",
	} {
		r := c.Get(srv.URL + path)
		if r.Status != http.StatusOK || !strings.HasPrefix(r.Header.Get("Content-Type"), typ) || r.Body == "" {
			t.Errorf("GET %s: status %d, type %q, %d bytes; want 200 and %s", path, r.Status, r.Header.Get("Content-Type"), len(r.Body), typ)
		}
	}
	if r := c.Get(srv.URL + "/static/nosuch.js"); r.Status != http.StatusNotFound {
		t.Errorf("GET of a missing file: status %d, want 404", r.Status)
	}
}

// The panel's requests must each leave on a connection of their own, and
// must not write: scs with an idle timeout saves the session on every
// request that goes through LoadAndSave.
func TestStateIsReadOnlyAndClosesConnection(t *testing.T) {
	srv, fs := newTestApp(t)
	c := testkit.NewClient(t)
	post(t, c, srv.URL+"/login", url.Values{"user": {"alice"}})
	token := sessionCookie(c, srv.URL).Value
	expiry := func() time.Time {
		t.Helper()
		rec, err := fs.Load(context.Background(), token)
		if err != nil {
			t.Fatal(err)
		}
		return rec.Expiry
	}

	before := expiry()
	// A keep-alive client, as a browser is; the Transport takes the
	// Connection header out into resp.Close.
	resp, err := srv.Client().Get(srv.URL + "/api/state")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if !resp.Close {
		t.Error("GET /api/state keeps the connection open")
	}
	s := get(t, c, srv.URL+"/api/state").state
	if s.User != "alice" || s.Worker != 7 || s.PID != 4242 || s.UptimeMS < 0 {
		t.Errorf("GET /api/state = %+v, want alice on worker 7, pid 4242", s)
	}
	if after := expiry(); !after.Equal(before) {
		t.Errorf("GET /api/state saved the session (expiry %v, then %v)", before, after)
	}
	// The page goes through LoadAndSave, so the check above can fail.
	c.Get(srv.URL + "/")
	if after := expiry(); after.Equal(before) {
		t.Error("GET / did not save the session; the read-only check above proves nothing")
	}
}

// sseEvent is one Server-Sent Event.
type sseEvent struct {
	name, data string
}

// openEvents opens srv's event stream and returns its events, one at a
// time; the stream is closed when the test ends.
func openEvents(t *testing.T, srv *httptest.Server) <-chan sseEvent {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, srv.URL+"/events", nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := srv.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusOK || resp.Header.Get("Content-Type") != "text/event-stream" {
		t.Fatalf("GET /events: status %d, type %q", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	events := make(chan sseEvent)
	go func() {
		defer resp.Body.Close()
		defer close(events)
		sc := bufio.NewScanner(resp.Body)
		var ev sseEvent
		for sc.Scan() {
			line := sc.Text()
			switch {
			case line == "":
				if ev.name != "" {
					select {
					case events <- ev:
					case <-ctx.Done():
						return
					}
				}
				ev = sseEvent{}
			case strings.HasPrefix(line, "event: "):
				ev.name = strings.TrimPrefix(line, "event: ")
			case strings.HasPrefix(line, "data: "):
				ev.data = strings.TrimPrefix(line, "data: ")
			}
		}
	}()
	return events
}

// nextEvent returns the next event, failing the test when the stream ends
// or none arrives within testkit.WaitTimeout.
func nextEvent(t *testing.T, events <-chan sseEvent) sseEvent {
	t.Helper()
	select {
	case ev, ok := <-events:
		if !ok {
			t.Fatal("the event stream ended")
		}
		return ev
	case <-time.After(testkit.WaitTimeout):
		t.Fatal("no event arrived")
		return sseEvent{}
	}
}

// nextChange returns the next event, which must be a change.
func nextChange(t *testing.T, events <-chan sseEvent) change {
	t.Helper()
	ev := nextEvent(t, events)
	if ev.name != "change" {
		t.Fatalf("event %q, want change", ev.name)
	}
	var c change
	if err := json.Unmarshal([]byte(ev.data), &c); err != nil {
		t.Fatal(err)
	}
	return c
}

// wantHello reads the event that opens a stream: a hello from watching
// worker 7.
func wantHello(t *testing.T, events <-chan sseEvent) {
	t.Helper()
	ev := nextEvent(t, events)
	var h hello
	if ev.name != "hello" || json.Unmarshal([]byte(ev.data), &h) != nil || h.Worker != 7 || !h.Watching {
		t.Fatalf("first event %q %s, want a hello from watching worker 7", ev.name, ev.data)
	}
}

func TestEventsReportChangesByShortKey(t *testing.T) {
	srv, _ := newTestApp(t)
	events := openEvents(t, srv)
	wantHello(t, events)

	c := testkit.NewClient(t)
	post(t, c, srv.URL+"/login", url.Values{"user": {"alice"}})
	token := sessionCookie(c, srv.URL).Value
	key := shortKey(token)
	if got := nextChange(t, events); got.Kind != "saved" || got.Key != key || got.Worker != 7 {
		t.Fatalf("after login: %+v, want saved %s from worker 7", got, key)
	}
	post(t, c, srv.URL+"/logout", nil)
	if got := nextChange(t, events); got.Kind != "deleted" || got.Key != key {
		t.Fatalf("after logout: %+v, want deleted %s", got, key)
	}

	// A page that connects later gets the same changes from the history.
	later := openEvents(t, srv)
	wantHello(t, later)
	var kinds []string
	for range 2 {
		c := nextChange(t, later)
		if c.Key != key {
			t.Fatalf("history has key %q, want %s", c.Key, key)
		}
		kinds = append(kinds, c.Kind)
	}
	if !slices.Equal(kinds, []string{"saved", "deleted"}) {
		t.Errorf("history %q, want saved then deleted", kinds)
	}
}

func TestLoginRenewsToken(t *testing.T) {
	srv, _ := newTestApp(t)
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
	srv, _ := newTestApp(t)
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
