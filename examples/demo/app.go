package main

import (
	"encoding/json"
	"html/template"
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

// app is the demo web application as served by one worker process.
type app struct {
	sm     *scs.SessionManager
	worker int // 1-based worker number
	pid    int
	log    *slog.Logger
}

// newHandler returns the demo's HTTP handler for the given worker number
// and process id, with sessions managed by sm.
func newHandler(sm *scs.SessionManager, worker, pid int, log *slog.Logger) http.Handler {
	a := &app{sm: sm, worker: worker, pid: pid, log: log}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /{$}", a.home)
	mux.HandleFunc("POST /login", a.login)
	mux.HandleFunc("POST /count", a.count)
	mux.HandleFunc("POST /logout", a.logout)
	mux.HandleFunc("GET /api/state", a.state)

	// The forms carry no CSRF tokens: cross-origin POSTs are refused by
	// their Sec-Fetch-Site or Origin header instead.
	h := http.NewCrossOriginProtection().Handler(sm.LoadAndSave(mux))
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set(workerHeader, strconv.Itoa(worker))
		h.ServeHTTP(w, r)
	})
}

var page = template.Must(template.New("page").Parse(`<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>filestore demo</title>
<style>
body { font-family: system-ui, sans-serif; max-width: 36em; margin: 3em auto; padding: 0 1em; }
.worker { background: #eef; padding: .5em 1em; border-radius: .3em; }
.error { color: #a00; }
form { display: inline-block; margin-right: 1em; }
</style>
</head>
<body>
<h1>filestore demo</h1>
<p class="worker">Served by <strong>worker {{.Worker}}</strong> (pid {{.PID}}).
Reload a few times: every worker sees the same session.</p>
{{if .Error}}<p class="error">{{.Error}}</p>{{end}}
{{if .User}}
<p>Logged in as <strong>{{.User}}</strong>. Counter: <strong>{{.Count}}</strong></p>
<form method="post" action="/count"><button>Add one</button></form>
<form method="post" action="/logout"><button>Log out</button></form>
{{else}}
<form method="post" action="/login">
<label>User name <input name="user" maxlength="64" required autofocus></label>
<button>Log in</button>
</form>
<p>Any name will do; there is no password.</p>
{{end}}
</body>
</html>
`))

type pageData struct {
	Worker, PID int
	User        string
	Count       int
	Error       string
}

func (a *app) render(w http.ResponseWriter, r *http.Request, status int, errMsg string) {
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.WriteHeader(status)
	err := page.Execute(w, pageData{
		Worker: a.worker,
		PID:    a.pid,
		User:   a.sm.GetString(r.Context(), keyUser),
		Count:  a.sm.GetInt(r.Context(), keyCount),
		Error:  errMsg,
	})
	if err != nil {
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

// state is the page's content as JSON, for scripts and tests.
type state struct {
	Worker int    `json:"worker"`
	PID    int    `json:"pid"`
	User   string `json:"user"`
	Count  int    `json:"count"`
}

func (a *app) state(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "application/json")
	err := json.NewEncoder(w).Encode(state{
		Worker: a.worker,
		PID:    a.pid,
		User:   a.sm.GetString(r.Context(), keyUser),
		Count:  a.sm.GetInt(r.Context(), keyCount),
	})
	if err != nil {
		a.log.LogAttrs(r.Context(), slog.LevelError, "write state", slog.Any("error", err))
	}
}

func (a *app) serverError(w http.ResponseWriter, r *http.Request, err error) {
	a.log.LogAttrs(r.Context(), slog.LevelError, "request failed", slog.String("path", r.URL.Path), slog.Any("error", err))
	http.Error(w, http.StatusText(http.StatusInternalServerError), http.StatusInternalServerError)
}
