//go:build unix

package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/chromedp/cdproto/cdp"
	"github.com/chromedp/cdproto/network"
	"github.com/chromedp/cdproto/runtime"
	"github.com/chromedp/chromedp"
)

// The browser test drives the demo in headless Chromium as a person would.
// It skips where no Chromium is installed, unless requireBrowserEnv is set
// to 1, as CI does, which makes a missing browser a failure.
const requireBrowserEnv = "FILESTORE_REQUIRE_BROWSER"

var (
	updateScreenshot = flag.Bool("update-screenshot", false, "write the page after login to screenshot.png, which the README shows")
	screenshotDir    = flag.String("screenshots", "", "keep the browser test's screenshots in this `directory` (default: a temporary one)")
)

// Bounds. The whole browser session has one deadline, so no step can hang
// the test; each wait for the page has a shorter one, so a failure names
// the step that failed. Neither says anything about how fast the page is.
const (
	browserTimeout = 2 * time.Minute
	stepTimeout    = 20 * time.Second
)

// The browser window: a small laptop's, so that the committed screenshot
// (the window, not the whole page) stays small and readable in the README.
const (
	windowWidth  = 900
	windowHeight = 1000
)

// findChromium returns the path of a Chromium or Chrome binary, or "".
func findChromium() string {
	if _, err := os.Stat("/usr/bin/chromium"); err == nil {
		return "/usr/bin/chromium" // Debian's package: a wrapper script
	}
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome", "google-chrome-stable"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	return ""
}

// browser is one headless Chromium with one tab.
type browser struct {
	t   *testing.T
	ctx context.Context // the tab's

	mu         sync.Mutex
	exceptions []string // uncaught JavaScript exceptions
}

func newBrowser(t *testing.T, exe string) *browser {
	t.Helper()
	// Made first so it is removed last, after the browser has exited.
	dataDir := t.TempDir()
	ctx, cancel := context.WithTimeout(context.Background(), browserTimeout)
	t.Cleanup(cancel)
	stderr := new(lockedBuffer)
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(exe),
		chromedp.UserDataDir(dataDir),
		chromedp.DisableGPU,
		// The test talks to 127.0.0.1 only; these keep Chromium from
		// reaching out on its own, which a closed network refuses.
		chromedp.Flag("disable-quic", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-sync", true),
		chromedp.WindowSize(windowWidth, windowHeight),
		// Its output has D-Bus complaints, harmless without a session
		// bus; the rest is shown if the test fails.
		chromedp.CombinedOutput(stderr),
	)
	actx, cancelAlloc := chromedp.NewExecAllocator(ctx, opts...)
	t.Cleanup(cancelAlloc) // kills Chromium and waits for it
	tctx, cancelTab := chromedp.NewContext(actx)
	t.Cleanup(cancelTab)
	t.Cleanup(func() {
		if !t.Failed() {
			return
		}
		var lines []string
		for l := range strings.Lines(stderr.String()) {
			if !strings.Contains(l, "dbus/") {
				lines = append(lines, l)
			}
		}
		t.Logf("chromium output, without its D-Bus complaints:\n%s", strings.Join(lines, ""))
	})

	b := &browser{t: t, ctx: tctx}
	// Listen starts the browser; every uncaught exception fails the test.
	err := chromedp.Listen(tctx, func(ev any) {
		if ev, ok := ev.(*runtime.EventExceptionThrown); ok {
			d := ev.ExceptionDetails
			msg := d.Text
			if d.Exception != nil && d.Exception.Description != "" {
				msg = d.Exception.Description
			}
			b.mu.Lock()
			b.exceptions = append(b.exceptions, fmt.Sprintf("%s:%d: %s", d.URL, d.LineNumber+1, msg))
			b.mu.Unlock()
		}
	})
	if err != nil {
		t.Fatalf("start chromium: %v", err)
	}
	t.Cleanup(b.checkExceptions)
	return b
}

func (b *browser) checkExceptions() {
	b.mu.Lock()
	defer b.mu.Unlock()
	for _, e := range b.exceptions {
		b.t.Errorf("uncaught exception in the page: %s", e)
	}
	b.exceptions = nil
}

// do runs actions, failing the test with what on error.
func (b *browser) do(what string, actions ...chromedp.Action[chromedp.Void]) {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, stepTimeout)
	defer cancel()
	if err := chromedp.Do(ctx, actions...); err != nil {
		b.t.Fatalf("%s: %v", what, err)
	}
}

// eval evaluates a JavaScript expression in the page.
func eval[T any](b *browser, expr string) T {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, stepTimeout)
	defer cancel()
	v, err := chromedp.Run(ctx, chromedp.Evaluate[T](expr))
	if err != nil {
		b.t.Fatalf("evaluate %s: %v", expr, err)
	}
	return v
}

// waitUntil waits until a JavaScript expression is true in the page.
func (b *browser) waitUntil(what, expr string) {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, stepTimeout)
	defer cancel()
	_, err := chromedp.Run(ctx, chromedp.Poll[chromedp.Void](expr,
		chromedp.WithPollingInterval(20*time.Millisecond), chromedp.WithPollingTimeout(stepTimeout)))
	if err != nil {
		b.t.Fatalf("waiting until %s: %v", what, err)
	}
}

// row is one answer in the panel, as a person reads it.
type row struct {
	Worker int    `json:"worker"`
	PID    int    `json:"pid"`
	User   string `json:"user"`
	Count  int    `json:"count"`
}

const readRows = `[...document.querySelectorAll('#workers tbody tr:not(.missing)')].map(tr => ({
	worker: Number(tr.cells[0].textContent),
	pid: Number(tr.cells[1].textContent),
	user: tr.cells[3].textContent,
	count: Number(tr.cells[4].textContent),
}))`

// round returns how many times the panel has asked every worker.
func (b *browser) round() int {
	b.t.Helper()
	return eval[int](b, `Number(document.getElementById('workers').dataset.round)`)
}

// waitRound waits until the panel has finished a round after round.
func (b *browser) waitRound(round int) {
	b.t.Helper()
	b.waitUntil("the panel asks every worker", `Number(document.getElementById('workers').dataset.round) > `+strconv.Itoa(round))
}

// waitIdle waits until the panel is not asking.
func (b *browser) waitIdle() {
	b.t.Helper()
	b.waitUntil("the panel is idle", `!document.getElementById('ask').disabled`)
}

// ask presses "Ask again" and returns the answers.
func (b *browser) ask() []row {
	b.t.Helper()
	b.waitIdle()
	r := b.round()
	b.do("ask every worker", chromedp.Click(chromedp.ID("ask")))
	b.waitRound(r)
	return eval[[]row](b, readRows)
}

// askUntil presses "Ask again" until done accepts the answers, at most
// tries times, and returns them.
func (b *browser) askUntil(what string, tries int, done func([]row) bool) []row {
	b.t.Helper()
	var rows []row
	for range tries {
		if rows = b.ask(); done(rows) {
			return rows
		}
	}
	b.t.Fatalf("after asking %d times, never %s; last answers: %+v", tries, what, rows)
	return nil
}

// screenshot saves the whole page, or with window set only what the
// window shows, as name.png in dir, and returns the image.
func (b *browser) screenshot(dir, name string, window bool) []byte {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, stepTimeout)
	defer cancel()
	shot := chromedp.FullScreenshot(100) // 100: PNG
	if window {
		shot = chromedp.CaptureScreenshot()
	}
	png, err := chromedp.Run(ctx, shot)
	if err != nil {
		b.t.Fatalf("screenshot %s: %v", name, err)
	}
	path := filepath.Join(dir, name+".png")
	if err := os.WriteFile(path, png, 0o644); err != nil {
		b.t.Fatal(err)
	}
	b.t.Logf("screenshot: %s", path)
	return png
}

// sessionCookie returns the demo's cookie in the browser, or nil.
func (b *browser) sessionCookie(u string) *network.Cookie {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, stepTimeout)
	defer cancel()
	res, err := chromedp.Run(ctx, func(ctx context.Context, t *chromedp.Target) (network.GetCookiesResult, error) {
		return cdp.Call(ctx, t, network.GetCookies, network.GetCookiesParams{URLs: []string{u}})
	})
	if err != nil {
		b.t.Fatalf("read cookies: %v", err)
	}
	for _, c := range res.Cookies {
		if c.Name == "filestore_demo" {
			return c
		}
	}
	return nil
}

// setCookie puts c back into the browser for u, as someone who copied it
// would.
func (b *browser) setCookie(u string, c *network.Cookie) {
	b.t.Helper()
	b.do("set the cookie", func(ctx context.Context, t *chromedp.Target) (chromedp.Void, error) {
		_, err := cdp.Call(ctx, t, network.SetCookie, network.SetCookieParams{Name: c.Name, Value: c.Value, URL: u, Path: "/"})
		return chromedp.Void{}, err
	})
}

// logIn logs in as user from the page at u, and waits for the logged-in
// page and its first look at every worker.
func (b *browser) logIn(u, user string) {
	b.t.Helper()
	b.do("open the page", chromedp.Navigate(u))
	b.do("log in",
		chromedp.SendKeys(chromedp.ID("user-name"), user),
		chromedp.Click(chromedp.ID("login-button")),
		// The form posts and the browser follows the redirect; a query
		// waits for the new document, where a poll would fail with it.
		chromedp.WaitVisible(chromedp.ID("user")),
	)
	b.waitUntil("the page says who is logged in",
		`document.getElementById('user')?.textContent === `+strconv.Quote(user))
	b.waitUntil("the panel has answers", `Number(document.getElementById('workers').dataset.round) > 0`)
}

// clickCounter clicks "Add one" and waits for the panel it refreshes.
func (b *browser) clickCounter() []row {
	b.t.Helper()
	b.waitIdle()
	r := b.round()
	b.do("click the counter", chromedp.Click(chromedp.ID("count-button")))
	b.waitRound(r)
	return eval[[]row](b, readRows)
}

func distinctWorkers(rows []row) int {
	seen := map[int]bool{}
	for _, r := range rows {
		seen[r.Worker] = true
	}
	return len(seen)
}

func TestBrowser(t *testing.T) {
	exe := findChromium()
	if exe == "" {
		if os.Getenv(requireBrowserEnv) == "1" {
			t.Fatalf("no Chromium found, and %s=1 requires one", requireBrowserEnv)
		}
		t.Skipf("no Chromium found (install the chromium package); %s=1 makes this a failure", requireBrowserEnv)
	}
	shots := *screenshotDir
	if shots == "" {
		shots = t.TempDir()
	} else if err := os.MkdirAll(shots, 0o755); err != nil {
		t.Fatal(err)
	}

	const workers = 4
	d := startDemo(t, workers)
	b := newBrowser(t, exe)
	home := d.url + "/"

	// Log in and click the counter: after every click, every worker that
	// answers reads the same user and counter.
	b.logIn(home, "alice")
	const clicks = 10
	for i := 1; i <= clicks; i++ {
		for _, r := range b.clickCounter() {
			if r.User != "alice" || r.Count != i {
				t.Fatalf("after click %d worker %d (pid %d) shows %q, counter %d; want alice, %d", i, r.Worker, r.PID, r.User, r.Count, i)
			}
		}
		if got := eval[string](b, `document.getElementById('count').textContent`); got != strconv.Itoa(i) {
			t.Fatalf("after click %d the page's counter says %s", i, got)
		}
	}
	rows := b.askUntil("reached two workers", 10, func(rows []row) bool { return distinctWorkers(rows) >= 2 })
	for _, r := range rows {
		if r.User != "alice" || r.Count != clicks {
			t.Fatalf("worker %d shows %q, counter %d; want alice, %d", r.Worker, r.User, r.Count, clicks)
		}
	}
	t.Logf("%d workers answered in one round", distinctWorkers(rows))
	if summary := eval[string](b, `document.getElementById('summary').textContent`); !strings.Contains(summary, "every one reads alice, counter 10") {
		t.Errorf("the panel's summary says %q", summary)
	}

	// The feed shows the saves, by this session's short key.
	b.waitUntil("the feed shows the clicks", `document.querySelectorAll('#events li.saved.mine').length >= `+strconv.Itoa(clicks))
	feedFrom := eval[string](b, `document.getElementById('feed-status').dataset.worker`)
	if n, err := strconv.Atoi(feedFrom); err != nil || n < 1 || n > workers {
		t.Errorf("the feed names worker %q", feedFrom)
	}

	if *updateScreenshot {
		// A picture that shows every worker at once.
		b.askUntil("reached every worker", 20, func(rows []row) bool { return distinctWorkers(rows) == workers })
		png := b.screenshot(shots, "logged-in", true)
		if err := os.WriteFile("screenshot.png", png, 0o644); err != nil {
			t.Fatal(err)
		}
		t.Logf("wrote screenshot.png, %d bytes", len(png))
	} else {
		b.screenshot(shots, "logged-in", true)
	}

	// Log out. The feed reports the record deleted, and the cookie the
	// browser had is anonymous to every worker: put it back, as someone
	// who copied it would, and ask until all of them have answered.
	old := b.sessionCookie(d.url)
	if old == nil {
		t.Fatal("no session cookie in the browser after login")
	}
	b.do("log out", chromedp.Click(chromedp.ID("logout-button")))
	b.waitUntil("the feed shows the session deleted", `document.querySelector('#events li.deleted.mine') !== null`)
	b.waitUntil("the page says the session ended", `!document.getElementById('ended').hidden`)
	if b.sessionCookie(d.url) != nil {
		t.Error("the browser still has a session cookie after logout")
	}
	b.setCookie(d.url, old)
	rejected := map[int]bool{}
	b.askUntil("reached every worker with the old cookie", 20, func(rows []row) bool {
		for _, r := range rows {
			if r.User != "anonymous" || r.Count != 0 {
				t.Fatalf("worker %d (pid %d) accepted the logged-out cookie: %q, counter %d", r.Worker, r.PID, r.User, r.Count)
			}
			rejected[r.Worker] = true
		}
		return len(rejected) == workers
	})
	b.screenshot(shots, "logged-out", false)

	// Kill the worker that serves the page's feed: the other workers
	// serve the session at once, the feed reconnects to one of them, and
	// the supervisor starts a new process in the dead one's place, which
	// serves the session too.
	b.logIn(home, "bob")
	b.clickCounter()
	b.waitUntil("the feed is connected", `document.getElementById('feed-status').dataset.pid !== undefined`)
	victimPID := eval[string](b, `document.getElementById('feed-status').dataset.pid`)
	victim, err := strconv.Atoi(victimPID)
	if err != nil {
		t.Fatalf("the feed names pid %q", victimPID)
	}
	victimWorker := eval[string](b, `document.getElementById('feed-status').dataset.worker`)
	if err := syscall.Kill(victim, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	b.waitUntil("the feed reconnects to a live worker",
		`(document.getElementById('feed-status').dataset.pid ?? '') !== `+strconv.Quote(victimPID))
	b.askUntil("saw the killed worker back from a new process", 100, func(rows []row) bool {
		back := false
		for _, r := range rows {
			if r.User != "bob" || r.Count != 1 {
				t.Fatalf("after the kill worker %d (pid %d) shows %q, counter %d; want bob, 1", r.Worker, r.PID, r.User, r.Count)
			}
			back = back || (strconv.Itoa(r.Worker) == victimWorker && r.PID != victim)
		}
		return back
	})
	// The session goes on: a click counts everywhere, and the new feed
	// reports it.
	for _, r := range b.clickCounter() {
		if r.User != "bob" || r.Count != 2 {
			t.Fatalf("after a click worker %d (pid %d) shows %q, counter %d; want bob, 2", r.Worker, r.PID, r.User, r.Count)
		}
	}
	b.waitUntil("the new feed reports the click", `document.querySelector('#events li.saved.mine') !== null`)
	b.screenshot(shots, "after-kill", false)

	// On a phone the page is laid out at the screen's width (without a
	// viewport meta tag a mobile browser lays it out at a desktop's
	// 980 px and shrinks it), and fits it: nothing but the panel's table,
	// in its own scroller, may be wider.
	const phoneWidth = 390
	b.do("emulate a phone", chromedp.EmulateViewport(phoneWidth, 844, chromedp.EmulateMobile))
	if w := eval[int](b, `window.innerWidth`); w != phoneWidth {
		t.Errorf("on a %d px wide phone the page is laid out %d px wide", phoneWidth, w)
	}
	if w := eval[int](b, `document.documentElement.scrollWidth - window.innerWidth`); w > 0 {
		t.Errorf("on a %d px wide phone the page is %d px too wide", phoneWidth, w)
	}
	b.screenshot(shots, "phone", false)

	// Ctrl-C stops the demo cleanly even while the page holds an event
	// stream open.
	if err := d.cmd.Process.Signal(os.Interrupt); err != nil {
		t.Fatal(err)
	}
	if code := d.wait(t); code != 0 {
		t.Fatalf("supervisor exited with status %d after SIGINT, want 0", code)
	}
}
