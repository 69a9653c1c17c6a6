package frameworktest

import (
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strconv"
	"testing"

	ginsessions "github.com/gin-contrib/sessions"
	"github.com/gin-gonic/gin"
	"github.com/gorilla/sessions"
	"github.com/labstack/echo-contrib/session"
	"github.com/labstack/echo/v4"

	"github.com/filestore-go/filestore/gorillastore"
	"github.com/filestore-go/filestore/internal/testkit"
)

var key = []byte("0123456789abcdef0123456789abcdef")

// The check that matters most is this line compiling.
var _ ginsessions.Store = gorillastore.GinStore[ginsessions.Options]{}

func newStore(t *testing.T) *gorillastore.Store {
	t.Helper()
	store := gorillastore.NewFilesystemStore(filepath.Join(t.TempDir(), "sessions"), key)
	if err := store.Err(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { store.Close() })
	return store
}

// visit requests url three times with one browser-like client, which
// keeps the session cookie, and returns the bodies.
func visit(t *testing.T, url string) []string {
	t.Helper()
	c := testkit.NewClient(t)
	var bodies []string
	for range 3 {
		r := c.Get(url)
		if r.Status != http.StatusOK {
			t.Fatalf("status %d: %s", r.Status, r.Body)
		}
		bodies = append(bodies, r.Body)
	}
	return bodies
}

func checkCounts(t *testing.T, got []string) {
	t.Helper()
	for i, b := range got {
		if want := strconv.Itoa(i + 1); b != want {
			t.Fatalf("visit %d: got %q, want %q", i+1, b, want)
		}
	}
}

func TestGin(t *testing.T) {
	gin.SetMode(gin.TestMode)
	store := newStore(t)
	gs := gorillastore.GinStore[ginsessions.Options]{Store: store}
	gs.Options(ginsessions.Options{Path: "/", MaxAge: 3600, HttpOnly: true})
	if store.Options.MaxAge != 3600 || !store.Options.HttpOnly {
		t.Fatalf("store options %+v after Options", store.Options)
	}

	r := gin.New()
	r.Use(ginsessions.Sessions("sess", gs))
	r.GET("/", func(c *gin.Context) {
		sess := ginsessions.Default(c)
		n, _ := sess.Get("n").(int)
		sess.Set("n", n+1)
		if err := sess.Save(); err != nil {
			c.String(http.StatusInternalServerError, err.Error())
			return
		}
		c.String(http.StatusOK, strconv.Itoa(n+1))
	})
	srv := httptest.NewServer(r)
	defer srv.Close()
	checkCounts(t, visit(t, srv.URL))
}

func TestEcho(t *testing.T) {
	e := echo.New()
	e.Use(session.Middleware(newStore(t)))
	e.GET("/", func(c echo.Context) error {
		sess, err := session.Get("sess", c)
		if err != nil {
			return err
		}
		n, _ := sess.Values["n"].(int)
		sess.Values["n"] = n + 1
		if err := sess.Save(c.Request(), c.Response()); err != nil {
			return err
		}
		return c.String(http.StatusOK, strconv.Itoa(n+1))
	})
	srv := httptest.NewServer(e)
	defer srv.Close()
	checkCounts(t, visit(t, srv.URL))
}

var _ sessions.Store = (*gorillastore.Store)(nil)
