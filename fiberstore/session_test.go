package fiberstore

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/filestore-go/filestore"
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

// sessionCookie returns the session cookie resp sets, or "" if none. A
// cookie that deletes the session counts as none.
func sessionCookie(resp *http.Response) string {
	for _, c := range resp.Cookies() {
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
		return string(b), sessionCookie(resp)
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

// workerEnv, when set, makes TestSessionTwoProcesses act as the worker
// process serving sessions from the store directory it names.
const workerEnv = "FIBERSTORE_TEST_WORKER_DIR"

// portPrefix starts the line on which a worker reports its address.
const portPrefix = "fiberstore-worker-port="

// TestSessionTwoProcesses runs the session middleware in two processes, as
// Fiber's prefork does, on one store directory: this test process and a
// worker re-executed from the test binary, each with its own Fiber app
// listening on 127.0.0.1. A session created through one is used, changed
// and destroyed through the other.
func TestSessionTwoProcesses(t *testing.T) {
	if dir := os.Getenv(workerEnv); dir != "" {
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
	remote := startWorker(t, dir)

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

// startWorker starts the worker process on dir and returns its base URL.
// The worker exits when its stdin closes, which the cleanup does before
// checking that it exited cleanly.
func startWorker(t *testing.T, dir string) string {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^"+t.Name()+"$")
	cmd.Env = append(os.Environ(), workerEnv+"="+dir)
	cmd.Stderr = os.Stderr
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	var out strings.Builder
	port := make(chan int, 1)
	scanned := make(chan struct{})
	go func() {
		defer close(scanned)
		// Keep reading after the port line so the worker never blocks on
		// a full pipe, and keep its output for a failure message.
		sc := bufio.NewScanner(stdout)
		reported := false
		for sc.Scan() {
			line := sc.Text()
			if p, ok := strings.CutPrefix(line, portPrefix); ok && !reported {
				n, _ := strconv.Atoi(p)
				port <- n
				reported = true
				continue
			}
			out.WriteString(line + "\n")
		}
		if !reported {
			close(port)
		}
	}()
	t.Cleanup(func() {
		stdin.Close()
		<-scanned // Wait must not run before reads from the pipe end
		if err := cmd.Wait(); err != nil {
			t.Errorf("worker: %v\n%s", err, out.String())
		}
	})

	var p int
	select {
	case p = <-port:
	case <-time.After(time.Minute):
		// Only a guard against a hung worker.
	}
	if p == 0 {
		t.Fatal("worker did not report its port")
	}
	return "http://127.0.0.1:" + strconv.Itoa(p)
}

// runWorker is the worker process: it serves sessions from dir on
// 127.0.0.1 until its stdin closes.
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
	fmt.Printf("%s%d\n", portPrefix, ln.Addr().(*net.TCPAddr).Port)
	_, _ = io.Copy(io.Discard, os.Stdin)
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
	req, err := http.NewRequest(http.MethodGet, base+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	if cookie != "" {
		req.AddCookie(&http.Cookie{Name: cookieName, Value: cookie})
	}
	resp, err := http.DefaultClient.Do(req)
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
	return string(b), sessionCookie(resp)
}
