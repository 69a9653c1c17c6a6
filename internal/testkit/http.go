package testkit

import (
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"strings"
	"testing"
	"time"
)

// ClientTimeout bounds each request of a Client, so that a hung server
// fails the test instead of hanging it. Like WaitTimeout it only guards;
// it says nothing about how fast a request should be.
const ClientTimeout = 30 * time.Second

// Client is an HTTP client for end-to-end tests that behaves like one
// browser: it keeps the cookies servers set in its own jar and sends them
// back. Unlike a browser, and so that one call is one request whose status
// the test sees, it follows no redirect; and it opens a new connection for
// every request, so that of several processes sharing a listening port the
// kernel picks one afresh each time.
//
// Create it with NewClient. Its methods are safe for concurrent use, but
// report failures with t.Fatalf: call them from the test's goroutine.
type Client struct {
	t testing.TB

	// HTTP is the underlying client, for what the methods do not cover.
	// A test that keeps its cookies itself may set HTTP.Jar to nil, before
	// any request; Cookie and SetCookie then must not be called.
	HTTP *http.Client
}

// NewClient returns a Client with an empty cookie jar whose methods fail
// the test t on a transport error. It does not block.
func NewClient(t testing.TB) *Client {
	jar, err := cookiejar.New(nil)
	if err != nil {
		t.Fatalf("testkit: cookie jar: %v", err)
	}
	return &Client{t: t, HTTP: &http.Client{
		Jar:       jar,
		Transport: &http.Transport{DisableKeepAlives: true},
		CheckRedirect: func(*http.Request, []*http.Request) error {
			return http.ErrUseLastResponse
		},
		Timeout: ClientTimeout,
	}}
}

// Response is what a test needs of one exchange, read in full.
type Response struct {
	Status  int
	Header  http.Header
	Body    string
	Cookies []*http.Cookie // the response's Set-Cookie headers
}

// Cookie returns the last cookie named name that the response sets, or
// nil. A cookie that deletes one (MaxAge < 0, or an empty value) is
// returned too: the caller tells them apart.
func (r Response) Cookie(name string) *http.Cookie {
	var found *http.Cookie
	for _, c := range r.Cookies {
		if c.Name == name {
			found = c
		}
	}
	return found
}

// Get requests u with GET; see Do for cookies.
func (c *Client) Get(u string, cookies ...*http.Cookie) Response {
	c.t.Helper()
	req, err := http.NewRequest(http.MethodGet, u, nil)
	if err != nil {
		c.t.Fatalf("testkit: GET %s: %v", u, err)
	}
	return c.Do(req, cookies...)
}

// PostForm posts form to u, URL-encoded, as an HTML form does; see Do for
// cookies.
func (c *Client) PostForm(u string, form url.Values, cookies ...*http.Cookie) Response {
	c.t.Helper()
	req, err := http.NewRequest(http.MethodPost, u, strings.NewReader(form.Encode()))
	if err != nil {
		c.t.Fatalf("testkit: POST %s: %v", u, err)
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	return c.Do(req, cookies...)
}

// Do sends req and returns the response, read in full, whatever its
// status; a transport error fails the test. Without cookies, the request
// carries the jar's cookies and the response's go into the jar, as in a
// browser. With cookies, the request carries exactly those (their names
// and values) and the jar is neither read nor written, as when someone
// replays a copied cookie from another machine.
func (c *Client) Do(req *http.Request, cookies ...*http.Cookie) Response {
	c.t.Helper()
	hc := c.HTTP
	if len(cookies) > 0 {
		bare := *c.HTTP
		bare.Jar = nil
		hc = &bare
		for _, ck := range cookies {
			req.AddCookie(&http.Cookie{Name: ck.Name, Value: ck.Value})
		}
	}
	resp, err := hc.Do(req)
	if err != nil {
		c.t.Fatalf("testkit: %s %s: %v", req.Method, req.URL.Path, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		c.t.Fatalf("testkit: %s %s: reading the body: %v", req.Method, req.URL.Path, err)
	}
	return Response{Status: resp.StatusCode, Header: resp.Header, Body: string(body), Cookies: resp.Cookies()}
}

// Cookie returns the cookie named name that the jar would send to u, or
// nil. Only its Name and Value are set, as the jar keeps no more.
func (c *Client) Cookie(u, name string) *http.Cookie {
	c.t.Helper()
	for _, ck := range c.HTTP.Jar.Cookies(c.parse(u)) {
		if ck.Name == name {
			return ck
		}
	}
	return nil
}

// SetCookie puts ck into the jar as if u had set it, replacing a cookie of
// the same name (and path); one with MaxAge < 0 removes it instead.
func (c *Client) SetCookie(u string, ck *http.Cookie) {
	c.t.Helper()
	c.HTTP.Jar.SetCookies(c.parse(u), []*http.Cookie{ck})
}

func (c *Client) parse(u string) *url.URL {
	c.t.Helper()
	pu, err := url.Parse(u)
	if err != nil {
		c.t.Fatalf("testkit: %v", err)
	}
	return pu
}
