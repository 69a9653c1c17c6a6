package fiberstore_test

import (
	"fmt"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"time"

	"github.com/filestore-go/filestore"
	"github.com/filestore-go/filestore/fiberstore"
	"github.com/gofiber/fiber/v3"
	"github.com/gofiber/fiber/v3/middleware/session"
)

// Fiber's session middleware keeps its sessions in a filestore, so that
// every process serving the app, on this host, sees the same sessions.
func ExampleNew() {
	dir, err := os.MkdirTemp("", "fiberstore-example")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(dir)

	fs, err := filestore.Open(filepath.Join(dir, "sessions"), nil)
	if err != nil {
		log.Fatal(err)
	}
	defer fs.Close() // New does not take ownership of fs

	app := fiber.New()
	app.Use(session.New(session.Config{Storage: fiberstore.New(fs)}))
	app.Get("/", func(c fiber.Ctx) error {
		sess := session.FromContext(c)
		n, _ := sess.Get("visits").(int)
		sess.Set("visits", n+1)
		return c.SendString(fmt.Sprint("visit ", n+1))
	})

	var cookie *http.Cookie
	for range 3 {
		req := httptest.NewRequest(http.MethodGet, "/", nil)
		if cookie != nil {
			req.AddCookie(cookie)
		}
		resp, err := app.Test(req)
		if err != nil {
			log.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		fmt.Println(string(body))
		for _, c := range resp.Cookies() {
			if c.Name == "session_id" {
				cookie = c
			}
		}
	}
	// Output:
	// visit 1
	// visit 2
	// visit 3
}

func ExampleOpen() {
	dir, err := os.MkdirTemp("", "fiberstore-example")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(dir)

	store, err := fiberstore.Open(filepath.Join(dir, "cache"), nil)
	if err != nil {
		log.Fatal(err)
	}
	defer store.Close() // closes the filestore too: Open's Storage owns it

	if err := store.Set("greeting", []byte("hello"), time.Hour); err != nil {
		log.Fatal(err)
	}
	v, err := store.Get("greeting")
	fmt.Printf("%s %v\n", v, err)

	v, err = store.Get("missing")
	fmt.Println(v == nil, err)
	// Output:
	// hello <nil>
	// true <nil>
}
