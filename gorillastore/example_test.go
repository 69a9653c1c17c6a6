package gorillastore_test

import (
	"errors"
	"fmt"
	"log"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"

	"github.com/filestore-go/filestore"
	"github.com/filestore-go/filestore/gorillastore"
)

// A handler counts a visitor's requests in their session; the second
// request carries the cookie the first one set. Logging out deletes the
// session's record, so the count starts over.
func Example() {
	dir, err := os.MkdirTemp("", "gorillastore-example")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(dir)

	fs, err := filestore.Open(filepath.Join(dir, "sessions"), nil)
	if err != nil {
		log.Fatal(err)
	}
	defer fs.Close()
	store := gorillastore.NewStore(fs, []byte("32-byte-long-authentication-key!"))

	count := func(w http.ResponseWriter, r *http.Request) {
		sess, err := store.Get(r, "visit")
		if err != nil {
			log.Print(err) // a bad cookie; sess is a new session
		}
		n, _ := sess.Values["n"].(int)
		sess.Values["n"] = n + 1
		if r.URL.Path == "/logout" {
			sess.Options.MaxAge = -1
		}
		if err := sess.Save(r, w); err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		fmt.Printf("%s: new=%v visits=%d\n", r.URL.Path, sess.IsNew, n+1)
	}

	var cookies []*http.Cookie
	for _, path := range []string{"/", "/", "/logout", "/"} {
		r := httptest.NewRequest(http.MethodGet, path, nil)
		for _, c := range cookies {
			r.AddCookie(c)
		}
		w := httptest.NewRecorder()
		count(w, r)
		cookies = nil
		for _, c := range w.Result().Cookies() {
			if c.MaxAge >= 0 { // a browser drops cookies with Max-Age=0
				cookies = append(cookies, c)
			}
		}
	}
	// Output:
	// /: new=true visits=1
	// /: new=false visits=2
	// /logout: new=false visits=3
	// /: new=true visits=1
}

// NewFilesystemStore cannot fail, like the sessions.NewFilesystemStore it
// replaces; Err reports whether it could open the directory.
func ExampleNewFilesystemStore() {
	dir, err := os.MkdirTemp("", "gorillastore-example")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(dir)

	store := gorillastore.NewFilesystemStore(filepath.Join(dir, "sessions"), []byte("32-byte-long-authentication-key!"))
	if err := store.Err(); err != nil {
		log.Fatal(err)
	}
	defer store.Close()
	fmt.Println("ready")

	// A directory that holds something other than a session store is
	// refused rather than swept.
	bad := gorillastore.NewFilesystemStore(dir, []byte("32-byte-long-authentication-key!"))
	fmt.Println(errors.Is(bad.Err(), filestore.ErrNotStore))
	// Output:
	// ready
	// true
}
