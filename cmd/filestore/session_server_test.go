package main

import (
	"io"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/alexedwards/scs/v2"
	"github.com/filestore-go/filestore/internal/testkit"
)

type httptestServer = httptest.Server

// newSessionServer serves an scs session manager over store: /put, /get
// and /destroy, as an application would.
func newSessionServer(t *testing.T, store scs.Store) *httptest.Server {
	t.Helper()
	sm := scs.New()
	sm.Store = store
	mux := http.NewServeMux()
	mux.HandleFunc("/put", func(w http.ResponseWriter, r *http.Request) {
		sm.Put(r.Context(), r.FormValue("key"), r.FormValue("value"))
	})
	mux.HandleFunc("/get", func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.WriteString(w, sm.GetString(r.Context(), r.FormValue("key")))
	})
	mux.HandleFunc("/destroy", func(w http.ResponseWriter, r *http.Request) {
		if err := sm.Destroy(r.Context()); err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
		}
	})
	srv := httptest.NewServer(sm.LoadAndSave(mux))
	t.Cleanup(srv.Close)
	return srv
}

// mustGet requests u and returns the body, failing on any status but 200.
func mustGet(t *testing.T, c *testkit.Client, u string) string {
	t.Helper()
	r := c.Get(u)
	if r.Status != http.StatusOK {
		t.Fatalf("GET: status %d: %s", r.Status, r.Body)
	}
	return r.Body
}
