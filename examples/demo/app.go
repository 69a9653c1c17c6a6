package main

import (
	"embed"
	"encoding/json"
	"fmt"
	"html/template"
	"io"
	"io/fs"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/alexedwards/scs/v2"
	"github.com/filestore-go/filestore"
	"github.com/filestore-go/filestore/scsstore"
)

// Session keys.
const (
	keyUser  = "user"
	keyCount = "count"
)

// maxUserLen bounds the user name, in bytes: it is stored in the session
// and echoed on every page.
const maxUserLen = 64

// workerHeader names the response header that says which worker served a
// request, for tests and curious users.
const workerHeader = "X-Demo-Worker"

// pingInterval is how often an idle event stream sends a comment, so that
// a stream whose worker died is noticed by the browser, which reconnects.
const pingInterval = 15 * time.Second

// The page, its stylesheet and its script. They are served by the demo
// itself, so the page works offline, and the Content-Security-Policy
// allows nothing else.
//
//go:embed web
var webFiles embed.FS

var page = template.Must(template.ParseFS(webFiles, "web/page.html"))

const contentSecurityPolicy = "default-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"

// newSessionManager returns the session manager of one worker, keeping
// sessions in fs.
func newSessionManager(fs *filestore.Store, log *slog.Logger) *scs.SessionManager {
	st := scsstore.New(fs)
	st.Logger = log
	sm := scs.New()
	sm.Store = st
	sm.Lifetime = 12 * time.Hour
	sm.IdleTimeout = 30 * time.Minute
	sm.Cookie.Name = "filestore_demo"
	sm.ErrorFunc = func(w http.ResponseWriter, r *http.Request, err error) {
		log.LogAttrs(r.Context(), slog.LevelError, "session store", slog.Any("error", err))
		http.Error(w, "session store unavailable", http.StatusInternalServerError)
	}
	return sm
}

// workerInfo says which worker process serves.
type workerInfo struct {
	n       int       // 1-based worker number
	workers int       // how many workers the supervisor runs
	pid     int       // this process
	started time.Time // when this process started serving
}

// app is the demo web application as served by one worker process.
type app struct {
	sm   *scs.SessionManager
	info workerInfo
	feed *feed
	done <-chan struct{} // closed when the worker shuts down: ends event streams
	log  *slog.Logger
}

// newHandler returns the demo's HTTP handler for one worker, with sessions
// managed by sm and changes reported by feed. Event streams end when done
// is closed, so that http.Server.Shutdown, which waits for every request,
// need not wait for them.
func newHandler(sm *scs.SessionManager, info workerInfo, feed *feed, done <-chan struct{}, log *slog.Logger) http.Handler {
	a := &app{sm: sm, info: info, feed: feed, done: done, log: log}
	static, err := fs.Sub(webFiles, "web")
	if err != nil {
		panic(err) // cannot happen: web is embedded
	}

	// Only the routes that read or change the session as a person does
	// load and save it: with an idle timeout, scs saves the session on
	// every request it loads, and the panel's polling, the event stream
	// and the static files would each show up in the feed as a save.
	withSession := sm.LoadAndSave
	mux := http.NewServeMux()
	mux.Handle("GET /{$}", withSession(http.HandlerFunc(a.home)))
	mux.Handle("POST /login", withSession(http.HandlerFunc(a.login)))
	mux.Handle("POST /count", withSession(http.HandlerFunc(a.count)))
	mux.Handle("POST /logout", withSession(http.HandlerFunc(a.logout)))
	mux.HandleFunc("GET /api/state", a.state)
	mux.HandleFunc("GET /events", a.events)
	mux.Handle("GET /static/", http.StripPrefix("/static/", http.FileServerFS(static)))

	// The forms carry no CSRF tokens: cross-origin POSTs are refused by
	// their Sec-Fetch-Site or Origin header instead.
	h := http.NewCrossOriginProtection().Handler(mux)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hd := w.Header()
		hd.Set(workerHeader, strconv.Itoa(info.n))
		hd.Set("Content-Security-Policy", contentSecurityPolicy)
		hd.Set("X-Content-Type-Options", "nosniff")
		h.ServeHTTP(w, r)
	})
}

type pageData struct {
	Worker, Workers, PID int
	User                 string
	Count                int
	Key                  string // the short key of the session's record, when logged in
	Error                string
}

func (a *app) render(w http.ResponseWriter, r *http.Request, status int, errMsg string) {
	d := pageData{
		Worker:  a.info.n,
		Workers: a.info.workers,
		PID:     a.info.pid,
		User:    a.sm.GetString(r.Context(), keyUser),
		Count:   a.sm.GetInt(r.Context(), keyCount),
		Error:   errMsg,
	}
	if d.User != "" {
		d.Key = shortKey(a.sm.Token(r.Context()))
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	if err := page.Execute(w, d); err != nil {
		a.log.LogAttrs(r.Context(), slog.LevelError, "render page", slog.Any("error", err))
	}
}

func (a *app) home(w http.ResponseWriter, r *http.Request) {
	a.render(w, r, http.StatusOK, "")
}

func (a *app) login(w http.ResponseWriter, r *http.Request) {
	user := strings.TrimSpace(r.PostFormValue("user"))
	if user == "" || len(user) > maxUserLen || !utf8.ValidString(user) {
		a.render(w, r, http.StatusBadRequest, "Please enter a user name of 1 to 64 bytes.")
		return
	}
	// A new token on every privilege change defeats session fixation.
	if err := a.sm.RenewToken(r.Context()); err != nil {
		a.serverError(w, r, err)
		return
	}
	a.sm.Put(r.Context(), keyUser, user)
	http.Redirect(w, r, "/", http.StatusSeeOther)
}

func (a *app) count(w http.ResponseWriter, r *http.Request) {
	if a.sm.GetString(r.Context(), keyUser) == "" {
		a.render(w, r, http.StatusForbidden, "Please log in first.")
		return
	}
	// scs loads and commits the whole session per request, so two
	// simultaneous clicks by one user may count once.
	a.sm.Put(r.Context(), keyCount, a.sm.GetInt(r.Context(), keyCount)+1)
	http.Redirect(w, r, "/", http.StatusSeeOther)
}

func (a *app) logout(w http.ResponseWriter, r *http.Request) {
	if err := a.sm.Destroy(r.Context()); err != nil {
		a.serverError(w, r, err)
		return
	}
	http.Redirect(w, r, "/", http.StatusSeeOther)
}

// state is what one worker knows of the caller's session, as JSON, for the
// page's panel, scripts and tests.
type state struct {
	Worker   int    `json:"worker"`
	PID      int    `json:"pid"`
	UptimeMS int64  `json:"up_ms"`
	User     string `json:"user"`
	Count    int    `json:"count"`
}

// state answers with this worker's view of the caller's session. It loads
// the session read-only, without scs's LoadAndSave, so that asking never
// writes.
func (a *app) state(w http.ResponseWriter, r *http.Request) {
	// A browser sends parallel requests down the keep-alive connections
	// it already holds, and SO_REUSEPORT pins a connection to the worker
	// that accepted it. Closing the connection after each answer makes
	// the page's next request a new connection, which the kernel may give
	// to any worker.
	w.Header().Set("Connection", "close")
	w.Header().Set("Cache-Control", "no-store")
	var token string
	if c, err := r.Cookie(a.sm.Cookie.Name); err == nil {
		token = c.Value
	}
	ctx, err := a.sm.Load(r.Context(), token)
	if err != nil {
		a.serverError(w, r, err)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	err = json.NewEncoder(w).Encode(state{
		Worker:   a.info.n,
		PID:      a.info.pid,
		UptimeMS: time.Since(a.info.started).Milliseconds(),
		User:     a.sm.GetString(ctx, keyUser),
		Count:    a.sm.GetInt(ctx, keyCount),
	})
	if err != nil {
		a.log.LogAttrs(r.Context(), slog.LevelError, "write state", slog.Any("error", err))
	}
}

// hello opens an event stream: who serves it, and whether it can report
// anything.
type hello struct {
	Worker   int  `json:"worker"`
	PID      int  `json:"pid"`
	Watching bool `json:"watching"`
}

// events streams the store's changes as Server-Sent Events: a hello, the
// recent changes, then each change as this worker sees it, until the
// browser goes away, the feed drops the stream, or the worker stops.
func (a *app) events(w http.ResponseWriter, r *http.Request) {
	recent, changes, unsubscribe := a.feed.subscribe()
	defer unsubscribe()
	w.Header().Set("Content-Type", "text/event-stream")
	w.Header().Set("Cache-Control", "no-store")
	rc := http.NewResponseController(w)

	// retry: how soon the browser reconnects, to another worker if this
	// one died.
	if _, err := io.WriteString(w, "retry: 1000\n\n"); err != nil {
		return
	}
	if sendEvent(w, "hello", hello{Worker: a.info.n, PID: a.info.pid, Watching: a.feed.err == nil}) != nil {
		return
	}
	for _, c := range recent {
		if sendEvent(w, "change", c) != nil {
			return
		}
	}
	ping := time.NewTicker(pingInterval)
	defer ping.Stop()
	for {
		if rc.Flush() != nil {
			return
		}
		var err error
		select {
		case c, ok := <-changes:
			if !ok {
				return
			}
			err = sendEvent(w, "change", c)
		case <-ping.C:
			_, err = io.WriteString(w, ": ping\n\n")
		case <-r.Context().Done():
			return
		case <-a.done:
			return
		}
		if err != nil {
			return
		}
	}
}

// sendEvent writes one Server-Sent Event. Compact JSON has no newline, so
// it fits one data line.
func sendEvent(w io.Writer, name string, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	_, err = fmt.Fprintf(w, "event: %s\ndata: %s\n\n", name, b)
	return err
}

func (a *app) serverError(w http.ResponseWriter, r *http.Request, err error) {
	a.log.LogAttrs(r.Context(), slog.LevelError, "request failed", slog.String("path", r.URL.Path), slog.Any("error", err))
	http.Error(w, http.StatusText(http.StatusInternalServerError), http.StatusInternalServerError)
}
