package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/filestore-go/filestore"
	"github.com/filestore-go/filestore/internal/testkit"
)

// workerIDs is how many sessions the writing worker keeps rewriting.
const workerIDs = 20

// TestMaintenanceWhileWriting runs gc and verify --repair, round after
// round, while another process keeps saving and updating live sessions
// and acknowledges each write. Afterwards every session holds its last
// acknowledged write, the live sessions nobody touched are all there, the
// expired ones and the stale temp file are gone, and the quarantine holds
// the one corrupt record planted, nothing valid.
func TestMaintenanceWhileWriting(t *testing.T) {
	if dir, ok := testkit.Worker(t); ok {
		writeUntilStopped(dir)
		return
	}
	dir := filepath.Join(t.TempDir(), "store")
	ctx := context.Background()
	s, err := filestore.Open(dir, &filestore.Options{SweepInterval: -1})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	for i := range 50 {
		if err := s.Save(ctx, fmt.Sprintf("static-%d", i), fmt.Appendf(nil, "static %d", i), time.Now().Add(time.Hour)); err != nil {
			t.Fatal(err)
		}
	}
	for i := range 100 {
		if err := s.Save(ctx, fmt.Sprintf("expired-%d", i), []byte("old"), time.Now().Add(-time.Hour)); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.Save(ctx, "doomed", []byte("x"), time.Time{}); err != nil {
		t.Fatal(err)
	}
	paths := map[string]string{} // key: record path
	err = s.Scan(ctx, func(fi filestore.FileInfo) error {
		if fi.State == filestore.FileLive {
			paths[fi.Key] = filepath.Join(dir, filepath.FromSlash(fi.Path))
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	corrupt := filestore.Key("doomed")
	if err := os.WriteFile(paths[corrupt], []byte("garbage"), 0o600); err != nil {
		t.Fatal(err)
	}
	staticKey := filestore.Key("static-0")
	stale := filepath.Join(filepath.Dir(paths[staticKey]), ".tmp-"+staticKey+"-xyz")
	if err := os.WriteFile(stale, []byte("half"), 0o600); err != nil {
		t.Fatal(err)
	}
	old := time.Now().Add(-24 * time.Hour)
	if err := os.Chtimes(stale, old, old); err != nil {
		t.Fatal(err)
	}

	w := testkit.StartWorker(t, dir)
	if got := w.NextAck(); got != "ready" {
		t.Fatalf("worker: %q", got)
	}
	// Rounds go on until the worker has written plenty meanwhile, three
	// rounds at least.
	startAcks := len(w.Acks())
	round := 0
	for ; round < 3 || len(w.Acks())-startAcks < 200; round++ {
		code, stdout, stderr := runTool(t, "", "gc", dir)
		// The corrupt record makes gc exit 1 until verify --repair has
		// quarantined it; anything else it says is a failure.
		if code != 0 && !(code == 1 && round == 0 && strings.Contains(stderr, corrupt)) {
			t.Fatalf("gc round %d: status %d\n%s%s", round, code, stdout, stderr)
		}
		if code, stdout, stderr := runTool(t, "", "verify", "--repair", dir); code != 0 {
			t.Fatalf("verify --repair round %d: status %d\n%s%s", round, code, stdout, stderr)
		}
		if round > 1000 {
			t.Fatalf("the worker acknowledged %d writes in 1000 rounds", len(w.Acks())-startAcks)
		}
	}
	t.Logf("%d rounds, %d writes acknowledged meanwhile", round, len(w.Acks())-startAcks)
	if err := w.Wait(); err != nil {
		t.Fatal(err)
	}

	last := map[string]int{}
	for _, a := range w.Acks()[1:] {
		id, v, ok := strings.Cut(a, " ")
		n, err := strconv.Atoi(v)
		if !ok || err != nil {
			t.Fatalf("ack %q", a)
		}
		last[id] = n
	}
	if len(last) != workerIDs {
		t.Errorf("the worker wrote %d sessions, want %d", len(last), workerIDs)
	}
	for id, n := range last {
		rec, err := s.Load(ctx, id)
		if err != nil {
			t.Errorf("session %s: %v", filestore.Key(id), err)
			continue
		}
		if want := workerData(id, n); string(rec.Data) != want {
			t.Errorf("session %s holds %q, want its last acknowledged write %q", filestore.Key(id), rec.Data, want)
		}
	}
	for i := range 50 {
		if _, err := s.Load(ctx, fmt.Sprintf("static-%d", i)); err != nil {
			t.Errorf("static session %d: %v", i, err)
		}
	}
	err = s.Scan(ctx, func(fi filestore.FileInfo) error {
		switch fi.State {
		case filestore.FileLive, filestore.FileShard:
		default:
			t.Errorf("left after the rounds: %s (%s)", fi.Path, fi.State)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	q, err := os.ReadDir(filepath.Join(dir, filestore.QuarantineDir))
	if err != nil {
		t.Fatal(err)
	}
	if len(q) != 1 || !strings.HasPrefix(q[0].Name(), corrupt) {
		var names []string
		for _, e := range q {
			names = append(names, e.Name())
		}
		t.Errorf("quarantine holds %q, want the corrupt record alone", names)
	}
}

func workerData(id string, n int) string { return fmt.Sprintf("%s version %d", id, n) }

// writeUntilStopped is the worker: it saves and updates sessions w-0...
// in turn, acknowledging each write as "ID VERSION" once it returned,
// until its parent stops it.
func writeUntilStopped(dir string) {
	s, err := filestore.Open(dir, &filestore.Options{SweepInterval: -1})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	defer s.Close()
	var stop atomic.Bool
	go func() {
		testkit.WaitForStop()
		stop.Store(true)
	}()
	testkit.Ack("ready")
	ctx := context.Background()
	for n := 1; !stop.Load(); n++ {
		for i := range workerIDs {
			id := fmt.Sprintf("w-%d", i)
			expiry := time.Now().Add(time.Hour)
			if n%2 == 1 {
				err = s.Save(ctx, id, []byte(workerData(id, n)), expiry)
			} else {
				err = s.Update(ctx, id, func(cur *filestore.Record) (*filestore.Record, error) {
					if cur == nil {
						return nil, fmt.Errorf("%s: gone before its update", filestore.Key(id))
					}
					cur.Data = []byte(workerData(id, n))
					return cur, nil
				})
			}
			if err != nil {
				fmt.Fprintln(os.Stderr, err)
				os.Exit(1)
			}
			testkit.Ack("%s %d", id, n)
		}
	}
}
