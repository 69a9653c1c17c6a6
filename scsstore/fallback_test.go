package scsstore_test

import (
	"context"
	"maps"
	"testing"
	"time"

	"github.com/alexedwards/scs/v2"
	"github.com/alexedwards/scs/v2/memstore"
	"github.com/filestore-go/filestore"
	"github.com/filestore-go/filestore/scsstore"
)

// requireSame fails unless fs holds token's record with want's data and
// expiry (to the millisecond, as Redis keeps it).
func requireRecord(t *testing.T, fs *filestore.Store, token string, data []byte, expiry time.Time) {
	t.Helper()
	rec, err := fs.Load(context.Background(), token)
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	if string(rec.Data) != string(data) {
		t.Fatalf("data differs")
	}
	if d := rec.Expiry.Sub(expiry); d < -time.Millisecond || d > time.Millisecond {
		t.Fatalf("expiry %v, want %v", rec.Expiry, expiry)
	}
}

func requireGone(t *testing.T, st scs.Store, token string) {
	t.Helper()
	if _, found, err := st.Find(token); found || err != nil {
		t.Fatalf("Find = %v, %v; want not found", found, err)
	}
}

// TestFallbackKeepsUserLoggedIn: a user logged in on the old store stays
// logged in once the application serves Fallback(new, old), the session
// moves to the new store on its first request, and logging out removes it
// from both.
func TestFallbackKeepsUserLoggedIn(t *testing.T) {
	oldSt, oldFS, _ := newStore(t)
	newSt, newFS, _ := newStore(t)
	b := newBrowser(t)

	before, _ := newServer(t, oldSt, nil)
	b.do(before.URL, "/put?key=user&value=alice")
	token := b.token(before.URL)
	oldRec, err := oldFS.Load(context.Background(), token)
	if err != nil {
		t.Fatal(err)
	}

	// The new deployment: same cookie, the Fallback store.
	fb := scsstore.Fallback(newSt, oldSt)
	after, _ := newServer(t, fb, nil)
	b.c.SetCookie(after.URL, b.c.Cookie(before.URL, "session"))
	if got := b.do(after.URL, "/get?key=user"); got != "alice" {
		t.Fatalf("after the switch get = %q, want alice", got)
	}
	// Copied with the old record's data and expiry.
	requireRecord(t, newFS, token, oldRec.Data, oldRec.Expiry)

	// Writes go to the new store only.
	b.do(after.URL, "/put?key=cart&value=3")
	if got := b.do(after.URL, "/get?key=cart"); got != "3" {
		t.Fatalf("get cart = %q", got)
	}
	if rec, err := oldFS.Load(context.Background(), token); err != nil || string(rec.Data) != string(oldRec.Data) {
		t.Fatalf("the old store's record changed (err %v)", err)
	}

	// Logging out removes the session from both stores.
	b.do(after.URL, "/destroy")
	requireGone(t, oldSt, token)
	requireGone(t, newSt, token)
	if got := replay(t, after.URL, "/get?key=user", token); got != "" {
		t.Fatalf("a destroyed session's cookie still reads %q", got)
	}
}

// TestFallbackExpiryFromCodec: a secondary that is no ExpiryFinder (scs's
// memstore) gives the copy the deadline scs's codec keeps in the data.
func TestFallbackExpiryFromCodec(t *testing.T) {
	mem := memstore.NewWithCleanupInterval(0)
	newSt, newFS, _ := newStore(t)
	deadline := time.Now().Add(2 * time.Hour).Round(time.Millisecond)
	data, err := scs.GobCodec{}.Encode(deadline, map[string]any{"user": "bob"})
	if err != nil {
		t.Fatal(err)
	}
	if err := mem.Commit("tok-codec", data, deadline); err != nil {
		t.Fatal(err)
	}
	got, found, err := scsstore.Fallback(newSt, mem).Find("tok-codec")
	if err != nil || !found || string(got) != string(data) {
		t.Fatalf("Find = %v, %v", found, err)
	}
	requireRecord(t, newFS, "tok-codec", data, deadline)
}

// TestFallbackNoExpiryNoCopy: data whose expiry cannot be told is served
// but not copied.
func TestFallbackNoExpiryNoCopy(t *testing.T) {
	mem := memstore.NewWithCleanupInterval(0)
	newSt, _, _ := newStore(t)
	if err := mem.Commit("tok-opaque", []byte("not gob"), time.Now().Add(time.Hour)); err != nil {
		t.Fatal(err)
	}
	got, found, err := scsstore.Fallback(newSt, mem).Find("tok-opaque")
	if err != nil || !found || string(got) != "not gob" {
		t.Fatalf("Find = %q, %v, %v", got, found, err)
	}
	requireGone(t, newSt, "tok-opaque")
}

// racingPrimary runs a hook before each Commit: a logout that lands
// between Fallback's read of the secondary and its copy into the primary.
type racingPrimary struct {
	scs.Store
	beforeCommit func(token string)
}

func (p *racingPrimary) Commit(token string, b []byte, expiry time.Time) error {
	if h := p.beforeCommit; h != nil {
		p.beforeCommit = nil
		h(token)
	}
	return p.Store.Commit(token, b, expiry)
}

// TestFallbackCopyCannotUndoLogout: a Delete that runs while Find copies
// the session does not leave the copy behind.
func TestFallbackCopyCannotUndoLogout(t *testing.T) {
	oldSt, _, _ := newStore(t)
	newSt, _, _ := newStore(t)
	if err := oldSt.Commit("tok-race", []byte("data"), time.Now().Add(time.Hour)); err != nil {
		t.Fatal(err)
	}
	p := &racingPrimary{Store: newSt}
	fb := scsstore.Fallback(p, oldSt)
	p.beforeCommit = func(token string) {
		if err := fb.Delete(token); err != nil {
			t.Error(err)
		}
	}
	if _, found, err := fb.Find("tok-race"); found || err != nil {
		t.Fatalf("Find during a logout = %v, %v; want not found", found, err)
	}
	requireGone(t, newSt, "tok-race")
	requireGone(t, oldSt, "tok-race")
	requireGone(t, fb, "tok-race")
}

func TestFallbackAll(t *testing.T) {
	oldSt, _, _ := newStore(t)
	newSt, _, _ := newStore(t)
	exp := time.Now().Add(time.Hour)
	for tok, v := range map[string]string{"a": "old-a", "b": "old-b"} {
		if err := oldSt.Commit(tok, []byte(v), exp); err != nil {
			t.Fatal(err)
		}
	}
	for tok, v := range map[string]string{"b": "new-b", "c": "new-c"} {
		if err := newSt.Commit(tok, []byte(v), exp); err != nil {
			t.Fatal(err)
		}
	}
	got, err := scsstore.Fallback(newSt, oldSt).(scs.IterableStore).All()
	if err != nil {
		t.Fatal(err)
	}
	want := map[string][]byte{"a": []byte("old-a"), "b": []byte("new-b"), "c": []byte("new-c")}
	if !maps.EqualFunc(got, want, func(x, y []byte) bool { return string(x) == string(y) }) {
		t.Fatalf("All = %q", got)
	}
	// memstore lists its sessions too; a store that cannot is an error.
	if _, err := scsstore.Fallback(newSt, struct{ scs.Store }{oldSt}).(scs.IterableStore).All(); err == nil {
		t.Fatal("All over a store that cannot list succeeded")
	}
}
