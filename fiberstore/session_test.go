package fiberstore

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"

	"github.com/filestore-go/filestore"
	"github.com/filestore-go/filestore/internal/testkit"
	"github.com/gofiber/fiber/v3"
	"github.com/gofiber/fiber/v3/middleware/session"
)

const cookieName = "session_id" // the session middleware's default

// newApp returns a Fiber app whose sessions live in st, with three routes:
// /set?v= stores v in the session, /get returns it, /logout destroys the
// session.
func newApp(st fiber.Storage) *fiber.App {
	app := fiber.New()
	app.Use(session.New(session.Config{Storage: st}))
	app.Get("/set", func(c fiber.Ctx) error {
		session.FromContext(c).Set("v", c.Query("v"))
		return c.SendString("ok")
	})
	app.Get("/get", func(c fiber.Ctx) error {
		v, _ := session.FromContext(c).Get("v").(string)
		return c.SendString(v)
	})
	app.Get("/logout", func(c fiber.Ctx) error {
		if err := session.FromContext(c).Destroy(); err != nil {
			return err
		}
		return c.SendString("bye")
	})
	return app
}

// sessionCookie returns the value of the session cookie among cookies, a
// response's, or "" if there is none. A cookie that deletes the session
// counts as none.
func sessionCookie(cookies []*http.Cookie) string {
	for _, c := range cookies {
		if c.Name == cookieName && c.MaxAge >= 0 && c.Value != "" {
			return c.Value
		}
	}
	return ""
}

func TestSessionMiddleware(t *testing.T) {
	st := openTest(t, nil)
	app := newApp(st)

	do := func(path, cookie string) (body, setCookie string) {
		t.Helper()
		req := httptest.NewRequest(http.MethodGet, path, nil)
		if cookie != "" {
			req.AddCookie(&http.Cookie{Name: cookieName, Value: cookie})
		}
		resp, err := app.Test(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		if err != nil {
			t.Fatal(err)
		}
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("GET %s: status %d", path, resp.StatusCode)
		}
		return string(b), sessionCookie(resp.Cookies())
	}

	_, id := do("/set?v=hello", "")
	if id == "" {
		t.Fatal("no session cookie")
	}
	if n := count(t, st); n != 1 {
		t.Fatalf("%d records after creating a session, want 1", n)
	}
	rec, err := st.Conn().Load(context.Background(), id)
	if err != nil {
		t.Fatalf("session is not stored under its id: %v", err)
	}
	if rec.Expiry.IsZero() {
		t.Error("session stored without expiry; want the idle timeout")
	}
	if body, _ := do("/get", id); body != "hello" {
		t.Errorf("get = %q, want %q", body, "hello")
	}
	do("/logout", id)
	if n := count(t, st); n != 0 {
		t.Errorf("%d records after logout, want 0", n)
	}
	body, fresh := do("/get", id)
	if body != "" || fresh == id {
		t.Error("destroyed session still usable")
	}

	// A client controls its cookie; one longer than any key the store can
	// hold must get a fresh session, not a panic in the middleware.
	body, fresh = do("/get", strings.Repeat("x", filestore.MaxIDLength+1))
	if body != "" || fresh == "" {
		t.Error("over-long cookie did not get a fresh session")
	}
}

// TestSessionTwoProcesses runs the session middleware in two processes, as
// Fiber's prefork does, on one store directory: this test process and a
// worker re-executed from the test binary, each with its own Fiber app
// listening on 127.0.0.1. A session created through one is used, changed
// and destroyed through the other.
func TestSessionTwoProcesses(t *testing.T) {
	if dir, ok := testkit.Worker(t); ok {
		runWorker(t, dir)
		return
	}
	dir := filepath.Join(t.TempDir(), "store")
	st, err := Open(dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	local := serve(t, newApp(st))
	w := testkit.StartWorker(t, dir)
	remote := w.NextAck()

	_, id := get(t, local, "/set?v=alpha", "")
	if id == "" {
		t.Fatal("no session cookie")
	}
	body, set := get(t, remote, "/get", id)
	if body != "alpha" {
		t.Errorf("worker read %q, want the value set through this process", body)
	}
	if set != "" && set != id {
		t.Error("worker started a new session instead of using the shared one")
	}
	get(t, remote, "/set?v=beta", id)
	if body, _ := get(t, local, "/get", id); body != "beta" {
		t.Errorf("read %q, want the value set through the worker", body)
	}
	get(t, remote, "/logout", id)
	body, set = get(t, local, "/get", id)
	if body != "" || set == "" || set == id {
		t.Error("session destroyed through the worker is still live here")
	}
	if err := w.Wait(); err != nil {
		t.Error(err)
	}
}

// serve runs app on a fresh 127.0.0.1 port until the test ends and returns
// its base URL.
func serve(t *testing.T, app *fiber.App) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() {
		done <- app.Listener(ln, fiber.ListenConfig{DisableStartupMessage: true})
	}()
	t.Cleanup(func() {
		if err := app.Shutdown(); err != nil {
			t.Error(err)
		}
		if err := <-done; err != nil {
			t.Error(err)
		}
	})
	return "http://" + ln.Addr().String()
}

// runWorker is the worker process: it serves sessions from dir on
// 127.0.0.1, acks its base URL, and stops when the parent tells it to.
func runWorker(t *testing.T, dir string) {
	st, err := Open(dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	app := newApp(st)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() {
		done <- app.Listener(ln, fiber.ListenConfig{DisableStartupMessage: true})
	}()
	testkit.Ack("http://%s", ln.Addr())
	testkit.WaitForStop()
	if err := app.Shutdown(); err != nil {
		t.Error(err)
	}
	if err := <-done; err != nil && !errors.Is(err, net.ErrClosed) {
		t.Error(err)
	}
}

// get sends GET base+path with the session cookie (if not empty) over real
// HTTP and returns the body and the session cookie set in the response.
func get(t *testing.T, base, path, cookie string) (body, setCookie string) {
	t.Helper()
	var cookies []*http.Cookie
	if cookie != "" {
		cookies = append(cookies, &http.Cookie{Name: cookieName, Value: cookie})
	}
	r := testkit.NewClient(t).Get(base+path, cookies...)
	if r.Status != http.StatusOK {
		t.Fatalf("GET %s: status %d", path, r.Status)
	}
	return r.Body, sessionCookie(r.Cookies)
}
