package testkit

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"slices"
	"strings"
	"testing"
)

func TestWorker(t *testing.T) {
	if arg, ok := Worker(t); ok {
		Ack("got %s", arg)
		Ack("two\nlines")
		fmt.Println("not an ack")
		WaitForStop()
		Ack("stopped")
		return
	}
	if _, ok := Worker(t); ok {
		t.Fatal("the parent took itself for a worker")
	}
	w := StartWorker(t, "an argument")
	if got := w.NextAck(); got != "got an argument" {
		t.Errorf("first ack %q, want the argument echoed", got)
	}
	if got := w.NextAck(); got != "two lines" {
		t.Errorf("second ack %q, want its newline replaced", got)
	}
	if err := w.Wait(); err != nil {
		t.Fatal(err)
	}
	if got, want := w.Acks(), []string{"got an argument", "two lines", "stopped"}; !slices.Equal(got, want) {
		t.Errorf("Acks = %q, want %q: Wait must end WaitForStop", got, want)
	}
	if out := w.Output(); !strings.Contains(out, "not an ack") {
		t.Errorf("Output = %q, want the worker's other lines", out)
	}
	if err := w.Wait(); err != nil {
		t.Errorf("second Wait = %v, want the first one's nil", err)
	}
}

func TestWorkerFails(t *testing.T) {
	if _, ok := Worker(t); ok {
		fmt.Fprintln(os.Stderr, "the worker's complaint")
		os.Exit(3)
	}
	err := StartWorker(t, "").Wait()
	if err == nil || !strings.Contains(err.Error(), "exit status 3") || !strings.Contains(err.Error(), "the worker's complaint") {
		t.Fatalf("Wait = %v, want the exit status and the worker's stderr", err)
	}
}

// A worker for a subtest runs that subtest only, even with a name that
// means something in a regular expression.
func TestWorkerSubtest(t *testing.T) {
	for _, name := range []string{"plain", "a+b (c)"} {
		t.Run(name, func(t *testing.T) {
			if arg, ok := Worker(t); ok {
				Ack("%s in %s", arg, t.Name())
				return
			}
			w := StartWorker(t, "x")
			if got, want := w.NextAck(), "x in "+t.Name(); got != want {
				t.Errorf("ack %q, want %q", got, want)
			}
			if err := w.Wait(); err != nil {
				t.Fatal(err)
			}
			if n := len(w.Acks()); n != 1 {
				t.Errorf("%d acks, want 1: the worker ran more than its own subtest", n)
			}
		})
	}
}

func TestClient(t *testing.T) {
	mux := http.NewServeMux()
	mux.HandleFunc("/set", func(w http.ResponseWriter, r *http.Request) {
		http.SetCookie(w, &http.Cookie{Name: "s", Value: r.FormValue("v"), Path: "/"})
	})
	mux.HandleFunc("/show", func(w http.ResponseWriter, r *http.Request) {
		var names []string
		for _, c := range r.Cookies() {
			names = append(names, c.Name+"="+c.Value)
		}
		fmt.Fprint(w, strings.Join(names, ";"))
	})
	mux.HandleFunc("/form", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprint(w, r.Method+" "+r.PostFormValue("v"))
	})
	mux.HandleFunc("/away", func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, "/show", http.StatusSeeOther)
	})
	srv := httptest.NewServer(mux)
	defer srv.Close()

	c := NewClient(t)
	r := c.Get(srv.URL + "/set?v=one")
	if ck := r.Cookie("s"); r.Status != http.StatusOK || ck == nil || ck.Value != "one" {
		t.Fatalf("GET /set: status %d, cookie %v; want 200 and s=one", r.Status, ck)
	}
	if got := c.Get(srv.URL + "/show").Body; got != "s=one" {
		t.Errorf("the jar sent %q, want s=one", got)
	}
	if ck := c.Cookie(srv.URL, "s"); ck == nil || ck.Value != "one" {
		t.Errorf("Cookie = %v, want s=one", ck)
	}

	// Explicit cookies replace the jar's, and the jar keeps its own.
	if got := c.Get(srv.URL+"/show", &http.Cookie{Name: "s", Value: "copied"}).Body; got != "s=copied" {
		t.Errorf("with an explicit cookie the server saw %q, want only s=copied", got)
	}
	c.Get(srv.URL+"/set?v=two", &http.Cookie{Name: "x", Value: "y"})
	if ck := c.Cookie(srv.URL, "s"); ck == nil || ck.Value != "one" {
		t.Errorf("a response to a request with explicit cookies changed the jar: %v", ck)
	}

	c.SetCookie(srv.URL, &http.Cookie{Name: "s", Value: "set"})
	if got := c.Get(srv.URL + "/show").Body; got != "s=set" {
		t.Errorf("after SetCookie the jar sent %q, want s=set", got)
	}
	c.SetCookie(srv.URL, &http.Cookie{Name: "s", MaxAge: -1})
	if ck := c.Cookie(srv.URL, "s"); ck != nil {
		t.Errorf("SetCookie with MaxAge -1 left %v", ck)
	}

	if r := c.PostForm(srv.URL+"/form", url.Values{"v": {"a b"}}); r.Body != "POST a b" {
		t.Errorf("PostForm: server saw %q", r.Body)
	}
	if r := c.Get(srv.URL + "/away"); r.Status != http.StatusSeeOther || r.Header.Get("Location") != "/show" {
		t.Errorf("GET /away: status %d, Location %q; want the redirect itself", r.Status, r.Header.Get("Location"))
	}
}
