package scsstore_test

import (
	"fmt"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"

	"github.com/alexedwards/scs/v2"
	"github.com/filestore-go/filestore"
	"github.com/filestore-go/filestore/scsstore"
)

// Switching an scs application from the in-memory store to a directory
// that every worker process shares is one line.
func Example() {
	tmp, err := os.MkdirTemp("", "scsstore-example")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(tmp)

	fs, err := filestore.Open(filepath.Join(tmp, "sessions"), nil)
	if err != nil {
		log.Fatal(err)
	}
	defer fs.Close() // the adapter does not own fs

	sessionManager := scs.New()
	sessionManager.Store = scsstore.New(fs) // was: memstore.New(), the default

	mux := http.NewServeMux()
	mux.HandleFunc("/put", func(w http.ResponseWriter, r *http.Request) {
		sessionManager.Put(r.Context(), "message", "Hello from a session!")
	})
	mux.HandleFunc("/get", func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, sessionManager.GetString(r.Context(), "message"))
	})
	handler := sessionManager.LoadAndSave(mux)

	put := httptest.NewRecorder()
	handler.ServeHTTP(put, httptest.NewRequest("GET", "/put", nil))

	get := httptest.NewRequest("GET", "/get", nil)
	for _, c := range put.Result().Cookies() {
		get.AddCookie(c)
	}
	rec := httptest.NewRecorder()
	handler.ServeHTTP(rec, get)
	fmt.Println(rec.Body.String())

	// Output:
	// Hello from a session!
}
