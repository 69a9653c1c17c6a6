package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/alexedwards/scs/redisstore"
	"github.com/alexedwards/scs/v2"
	"github.com/filestore-go/filestore"
	"github.com/filestore-go/filestore/internal/testkit"
	"github.com/filestore-go/filestore/scsstore"
	"github.com/gomodule/redigo/redis"
)

// runMigrate runs the tool in-process and returns its exit status and output.
func runMigrate(args ...string) (code int, stdout, stderr string) {
	var out, errb bytes.Buffer
	code = run(args, strings.NewReader(""), &out, &errb)
	return code, out.String(), errb.String()
}

// newFileStore opens a new store for the application's side of a test.
func newFileStore(t *testing.T) (*filestore.Store, string) {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "sessions")
	st, err := filestore.Open(dir, &filestore.Options{SweepInterval: -1, NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = st.Close() })
	return st, dir
}

func redisPool(r *testkit.Redis) *redis.Pool {
	return &redis.Pool{
		MaxIdle: 4,
		Dial:    func() (redis.Conn, error) { return redis.Dial("tcp", r.Addr()) },
	}
}

func redisDo(t *testing.T, pool *redis.Pool, cmd string, args ...any) any {
	t.Helper()
	c := pool.Get()
	defer c.Close()
	v, err := c.Do(cmd, args...)
	if err != nil {
		t.Fatalf("redis %s: %v", cmd, err)
	}
	return v
}

// requireNoIDs fails if any of the ids appears in the tool's output.
func requireNoIDs(t *testing.T, ids []string, outputs ...string) {
	t.Helper()
	for _, id := range ids {
		for _, o := range outputs {
			if strings.Contains(o, id) {
				t.Fatal("the tool printed a session id")
			}
		}
	}
}

// scsSession is a session an scs.SessionManager committed: its token, the
// value put in it and its expiry.
type scsSession struct {
	token, value string
	expiry       time.Time
}

// commitSessions makes n sessions through real scs session managers over
// scsstore, with lifetimes from one to several hours.
func commitSessions(t *testing.T, st *filestore.Store, n int) []scsSession {
	t.Helper()
	var out []scsSession
	for i := range n {
		sm := scs.New()
		sm.Store = scsstore.New(st)
		sm.Lifetime = time.Duration(1+i%5) * time.Hour
		ctx, err := sm.Load(context.Background(), "")
		if err != nil {
			t.Fatal(err)
		}
		v := fmt.Sprintf("user-%d", i)
		sm.Put(ctx, "user", v)
		token, expiry, err := sm.Commit(ctx)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, scsSession{token: token, value: v, expiry: expiry})
	}
	return out
}

func tokens(ss []scsSession) []string {
	var ids []string
	for _, s := range ss {
		ids = append(ids, s.token)
	}
	return ids
}

// TestMigrateSCS: sessions that scs wrote through scsstore read back,
// every value equal, through an scs.SessionManager over scs's redisstore,
// each expiring in Redis when it would have in the store.
func TestMigrateSCS(t *testing.T) {
	r := testkit.StartRedis(t)
	st, dir := newFileStore(t)
	sessions := commitSessions(t, st, 200)
	// A session that expired is not copied.
	if err := st.Save(context.Background(), "expired-token", []byte("x"), time.Now().Add(50*time.Millisecond)); err != nil {
		t.Fatal(err)
	}
	time.Sleep(100 * time.Millisecond)

	code, out, errOut := runMigrate("migrate", dir, "--to", r.URL(0), "--format", "scs", "--batch", "64")
	if code != 0 {
		t.Fatalf("migrate exited %d: %s%s", code, out, errOut)
	}
	requireNoIDs(t, append(tokens(sessions), "expired-token"), out, errOut)
	if !strings.Contains(out, "migrated 200 sessions") || !strings.Contains(out, "copied") {
		t.Fatalf("summary: %s", out)
	}

	pool := redisPool(r)
	defer pool.Close()
	sm := scs.New()
	sm.Store = redisstore.New(pool)
	for _, s := range sessions {
		ctx, err := sm.Load(context.Background(), s.token)
		if err != nil {
			t.Fatal(err)
		}
		if got := sm.GetString(ctx, "user"); got != s.value {
			t.Fatalf("a session reads %q from Redis, want %q", got, s.value)
		}
		pttl, err := redis.Int64(redisDo(t, pool, "PTTL", "scs:session:"+s.token), nil)
		if err != nil {
			t.Fatal(err)
		}
		want := time.Until(s.expiry).Milliseconds()
		if d := pttl - want; d < -1000 || d > 1000 {
			t.Fatalf("TTL in Redis %d ms, the original has %d ms left", pttl, want)
		}
	}
	if n, _ := redis.Int(redisDo(t, pool, "DBSIZE"), nil); n != len(sessions) {
		t.Fatalf("Redis holds %d keys, want %d", n, len(sessions))
	}

	// Running it again changes nothing and says so.
	code, out, errOut = runMigrate("migrate", dir, "--to", r.URL(0), "--format", "scs", "--json")
	if code != 0 {
		t.Fatalf("second migrate exited %d: %s%s", code, out, errOut)
	}
	var res migrateResult
	if err := json.Unmarshal([]byte(out), &res); err != nil {
		t.Fatalf("--json: %v: %s", err, out)
	}
	if res.Sessions != 200 || res.Copied != 0 || res.Kept != 200 {
		t.Fatalf("second run: %+v", res)
	}
	// --overwrite writes them all again, the same.
	code, out, _ = runMigrate("migrate", dir, "--to", r.URL(0), "--format", "scs", "--overwrite", "--json")
	if err := json.Unmarshal([]byte(out), &res); code != 0 || err != nil || res.Copied != 200 {
		t.Fatalf("--overwrite: exit %d, %v, %+v", code, err, res)
	}
}

// TestMigrateFiber: the Fiber format, read back with a Redis client: the
// key as is (or with --prefix), the data as is, the expiry to the
// millisecond, and no TTL for a session that never expires.
func TestMigrateFiber(t *testing.T) {
	r := testkit.StartRedis(t)
	st, dir := newFileStore(t)
	ctx := context.Background()
	type rec struct {
		data   string
		expiry time.Time
	}
	recs := map[string]rec{
		"fiber-a": {"\x00binary\xffdata", time.Now().Add(30 * time.Minute)},
		"fiber-b": {"plain", time.Now().Add(26 * time.Hour)},
		"fiber-c": {"forever", time.Time{}},
	}
	for id, r := range recs {
		if err := st.Save(ctx, id, []byte(r.data), r.expiry); err != nil {
			t.Fatal(err)
		}
	}
	pool := redisPool(r)
	defer pool.Close()
	for _, prefix := range []string{"", "app:"} {
		args := []string{"migrate", dir, "--to", r.URL(3), "--format", "fiber"}
		if prefix != "" {
			args = append(args, "--prefix", prefix)
		}
		code, out, errOut := runMigrate(args...)
		if code != 0 {
			t.Fatalf("migrate exited %d: %s%s", code, out, errOut)
		}
		requireNoIDs(t, []string{"fiber-a", "fiber-b", "fiber-c"}, out, errOut)
		for id, want := range recs {
			c := pool.Get()
			_, err := c.Do("SELECT", 3)
			if err != nil {
				t.Fatal(err)
			}
			got, err := redis.Bytes(c.Do("GET", prefix+id))
			if err != nil || string(got) != want.data {
				t.Fatalf("GET: %q, %v", got, err)
			}
			pttl, err := redis.Int64(c.Do("PTTL", prefix+id))
			c.Close()
			if err != nil {
				t.Fatal(err)
			}
			if want.expiry.IsZero() {
				if pttl != -1 {
					t.Fatalf("a session without expiry has PTTL %d in Redis, want -1 (none)", pttl)
				}
				continue
			}
			if d := pttl - time.Until(want.expiry).Milliseconds(); d < -1000 || d > 1000 {
				t.Fatalf("PTTL %d, want about %d", pttl, time.Until(want.expiry).Milliseconds())
			}
		}
	}
}

// TestMigrateRedisKilled: redis-server dies mid-migration; migrate exits 1
// with a clear error, and once Redis is back a rerun completes.
func TestMigrateRedisKilled(t *testing.T) {
	r := testkit.StartRedis(t)
	st, dir := newFileStore(t)
	ctx := context.Background()
	const n = 500
	var ids []string
	for i := range n {
		id := fmt.Sprintf("killed-session-%04d", i)
		ids = append(ids, id)
		if err := st.Save(ctx, id, []byte("v"), time.Now().Add(time.Hour)); err != nil {
			t.Fatal(err)
		}
	}
	batches := 0
	migrateBatchHook = func(point string) {
		if point != "done" {
			return
		}
		if batches++; batches == 2 {
			r.Kill()
		}
	}
	t.Cleanup(func() { migrateBatchHook = nil })
	code, out, errOut := runMigrate("migrate", dir, "--to", r.URL(0), "--format", "fiber", "--batch", "50")
	if code != 1 {
		t.Fatalf("migrate exited %d after Redis died, want 1: %s%s", code, out, errOut)
	}
	requireNoIDs(t, ids, out, errOut)
	for _, want := range []string{"lost the connection to redis", "100 sessions copied", "running migrate again is safe"} {
		if !strings.Contains(errOut, want) {
			t.Fatalf("stderr lacks %q: %s", want, errOut)
		}
	}
	migrateBatchHook = nil

	r.Restart() // empty: no persistence
	code, out, errOut = runMigrate("migrate", dir, "--to", r.URL(0), "--format", "fiber", "--batch", "50", "--json")
	if code != 0 {
		t.Fatalf("rerun exited %d: %s%s", code, out, errOut)
	}
	pool := redisPool(r)
	defer pool.Close()
	if got, _ := redis.Int(redisDo(t, pool, "DBSIZE"), nil); got != n {
		t.Fatalf("after the rerun Redis holds %d keys, want %d", got, n)
	}
}

// TestMigrateWithFallback: the README's procedure. Users log in on the old
// deployment (scs over the filestore); the new one serves
// Fallback(redisstore, filestore); migrate runs while those users make
// requests, one logs out and one changes their session; then the fallback
// is dropped. Everyone logged in is still logged in with their latest
// data, and the one who logged out stays out.
func TestMigrateWithFallback(t *testing.T) {
	r := testkit.StartRedis(t)
	st, dir := newFileStore(t)
	pool := redisPool(r)
	defer pool.Close()

	// Many sessions, so that migrate takes a while, and three users with
	// browsers.
	commitSessions(t, st, 3000)
	server := func(store scs.Store) *httptestServer { return newSessionServer(t, store) }
	old := server(scsstore.New(st))
	users := make([]*testkit.Client, 3)
	for i := range users {
		users[i] = testkit.NewClient(t)
		mustGet(t, users[i], old.URL+"/put?key=user&value="+fmt.Sprint("u", i))
	}
	cookie := func(c *testkit.Client) string { return c.Cookie(old.URL, "session").Value }
	fallback := server(scsstore.Fallback(redisstore.New(pool), scsstore.New(st)))
	for _, c := range users {
		c.SetCookie(fallback.URL, c.Cookie(old.URL, "session"))
	}
	stayer, changer, leaver := users[0], users[1], users[2]
	leaverToken := cookie(leaver)

	var wg sync.WaitGroup
	var code int
	var out, errOut string
	wg.Add(1)
	// The first batch pauses the migration until the requests below
	// have run.
	started, proceed := make(chan struct{}), make(chan struct{})
	migrateBatchHook = func(point string) {
		select {
		case <-started:
		default:
			if point == "done" {
				close(started)
				<-proceed
			}
		}
	}
	t.Cleanup(func() { migrateBatchHook = nil })
	go func() {
		defer wg.Done()
		code, out, errOut = runMigrate("migrate", dir, "--to", r.URL(0), "--format", "scs", "--batch", "100")
	}()
	migrated := make(chan struct{})
	go func() { wg.Wait(); close(migrated) }()
	select {
	case <-started:
	case <-migrated:
		t.Fatalf("migrate ended before its first batch: exit %d: %s%s", code, out, errOut)
	}
	// Requests during the migration.
	for i := range 20 {
		if got := mustGet(t, stayer, fallback.URL+"/get?key=user"); got != "u0" {
			t.Fatalf("request %d during the migration: user = %q, want u0", i, got)
		}
	}
	mustGet(t, changer, fallback.URL+"/put?key=user&value=u1-changed")
	mustGet(t, leaver, fallback.URL+"/destroy")
	close(proceed)
	<-migrated
	if code != 0 {
		t.Fatalf("migrate exited %d: %s%s", code, out, errOut)
	}

	// The fallback is dropped: Redis alone.
	final := server(redisstore.New(pool))
	for _, c := range users {
		if ck := c.Cookie(fallback.URL, "session"); ck != nil {
			c.SetCookie(final.URL, ck)
		}
	}
	if got := mustGet(t, stayer, final.URL+"/get?key=user"); got != "u0" {
		t.Fatalf("after the move: user = %q, want u0", got)
	}
	if got := mustGet(t, changer, final.URL+"/get?key=user"); got != "u1-changed" {
		t.Fatalf("after the move: the changed session reads %q", got)
	}
	if got := testkit.NewClient(t).Get(final.URL+"/get?key=user", &http.Cookie{Name: "session", Value: leaverToken}).Body; got != "" {
		t.Fatalf("a session logged out during the migration came back: %q", got)
	}
}

// TestMigrateDeletedDuringRun: sessions deleted from the store after
// migrate read them (users logging out through Fallback) do not live on in
// Redis.
func TestMigrateDeletedDuringRun(t *testing.T) {
	// Deleted after the walk read them and before their SETs went out,
	// and after the SETs were answered; learnt from the store's change
	// notifications, and (on a network filesystem, where those miss other
	// hosts' deletions) by reading every copy back.
	for _, tc := range []struct {
		point string
		flags []string
	}{
		{"sending", nil}, {"written", nil},
		{"sending", []string{"--allow-network-fs"}}, {"written", []string{"--allow-network-fs"}},
	} {
		point := tc.point
		t.Run(strings.Join(append([]string{point}, tc.flags...), " "), func(t *testing.T) {
			r := testkit.StartRedis(t)
			st, dir := newFileStore(t)
			sessions := commitSessions(t, st, 10)
			migrateBatchHook = func(p string) {
				if p == point {
					for _, s := range sessions[:3] {
						if err := st.Delete(context.Background(), s.token); err != nil {
							t.Error(err)
						}
					}
				}
			}
			t.Cleanup(func() { migrateBatchHook = nil })
			code, out, errOut := runMigrate(append([]string{"migrate", dir, "--to", r.URL(0), "--format", "scs", "--json"}, tc.flags...)...)
			if code != 0 {
				t.Fatalf("exit %d: %s%s", code, out, errOut)
			}
			var res migrateResult
			if err := json.Unmarshal([]byte(out), &res); err != nil {
				t.Fatal(err)
			}
			if res.Copied != 7 || res.Gone != 3 {
				t.Fatalf("summary %+v, want 7 copied and 3 gone", res)
			}
			pool := redisPool(r)
			defer pool.Close()
			for i, s := range sessions {
				n, _ := redis.Int(redisDo(t, pool, "EXISTS", "scs:session:"+s.token), nil)
				if want := map[bool]int{true: 0, false: 1}[i < 3]; n != want {
					t.Fatalf("session %d: EXISTS = %d, want %d", i, n, want)
				}
			}
		})
	}
}

// TestMigrateDryRun reads the store and reports, touching no Redis.
func TestMigrateDryRun(t *testing.T) {
	st, dir := newFileStore(t)
	sessions := commitSessions(t, st, 5)
	code, out, errOut := runMigrate("migrate", dir, "--to", "redis://127.0.0.1:1/0", "--format", "scs", "--dry-run")
	if code != 0 {
		t.Fatalf("exit %d: %s%s", code, out, errOut)
	}
	requireNoIDs(t, tokens(sessions), out, errOut)
	if !strings.Contains(out, "would migrate (dry run) 5 sessions") {
		t.Fatalf("summary: %s", out)
	}
}

func TestMigrateBadInput(t *testing.T) {
	_, dir := newFileStore(t)
	for _, tc := range []struct {
		args []string
		code int
		want string
	}{
		{[]string{"migrate", dir, "--to", "redis://h:1", "--format", "memcache"}, 2, "--format"},
		{[]string{"migrate", dir, "--to", "http://h:1", "--format", "scs"}, 2, "scheme"},
		{[]string{"migrate", dir, "--to", "redis://h:1/x", "--format", "scs"}, 2, "database"},
		{[]string{"migrate", dir, "--format", "scs"}, 2, "to"},
		{[]string{"migrate", filepath.Join(t.TempDir(), "none"), "--to", "redis://127.0.0.1:1", "--format", "scs"}, 1, "not a filestore"},
		{[]string{"migrate", dir, "--to", "redis://127.0.0.1:1", "--format", "scs"}, 1, "cannot connect"},
	} {
		code, out, errOut := runMigrate(tc.args...)
		if code != tc.code || !strings.Contains(errOut, tc.want) {
			t.Errorf("%q: exit %d, stderr %q; want %d and %q (stdout %q)", tc.args, code, errOut, tc.code, tc.want, out)
		}
	}
}

// TestMigrateUnreadableRecord: a record that cannot be read is skipped and
// named by key in a warning, the rest is copied, and the exit status is 1.
func TestMigrateUnreadableRecord(t *testing.T) {
	r := testkit.StartRedis(t)
	st, dir := newFileStore(t)
	ctx := context.Background()
	for _, id := range []string{"good-1", "good-2", "doomed"} {
		if err := st.Save(ctx, id, []byte("v"), time.Now().Add(time.Hour)); err != nil {
			t.Fatal(err)
		}
	}
	var path string
	err := st.Scan(ctx, func(fi filestore.FileInfo) error {
		if fi.Key == filestore.Key("doomed") && fi.State == filestore.FileLive {
			path = filepath.Join(dir, filepath.FromSlash(fi.Path))
		}
		return nil
	})
	if err != nil || path == "" {
		t.Fatalf("record not found by Scan: %v", err)
	}
	if err := os.WriteFile(path, []byte("garbage"), 0o600); err != nil {
		t.Fatal(err)
	}
	code, out, errOut := runMigrate("migrate", dir, "--to", r.URL(0), "--format", "fiber")
	if code != 1 {
		t.Fatalf("exit %d, want 1: %s%s", code, out, errOut)
	}
	requireNoIDs(t, []string{"good-1", "good-2", "doomed"}, out, errOut)
	if !strings.Contains(errOut, filestore.Key("doomed")) || !regexp.MustCompile(`copied\s+2\s`).MatchString(out) {
		t.Fatalf("stdout %q, stderr %q", out, errOut)
	}
	pool := redisPool(r)
	defer pool.Close()
	if n, _ := redis.Int(redisDo(t, pool, "DBSIZE"), nil); n != 2 {
		t.Fatalf("Redis holds %d keys, want 2", n)
	}
}
