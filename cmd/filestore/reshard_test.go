package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/filestore-go/filestore"
	"github.com/filestore-go/filestore/internal/testkit"
)

// reshardFixture saves n sessions in a new store in layout and returns
// them.
func reshardFixture(t *testing.T, dir, layout string, n int) map[string]filestore.Record {
	t.Helper()
	s, err := filestore.Open(dir, &filestore.Options{SweepInterval: -1, Layout: layout})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	want := map[string]filestore.Record{}
	for i := range n {
		rec := filestore.Record{ID: fmt.Sprintf("sess-%03d", i), Data: []byte(fmt.Sprintf("data %d", i))}
		if i%3 != 0 {
			rec.Expiry = time.Now().Add(time.Duration(i+1) * time.Hour).Round(0)
		}
		if err := s.Save(context.Background(), rec.ID, rec.Data, rec.Expiry); err != nil {
			t.Fatal(err)
		}
		want[rec.ID] = rec
	}
	return want
}

// checkSessions fails t unless the store in dir, in layout, holds exactly
// want: every session loads as saved, and no record file is there twice.
func checkSessions(t *testing.T, dir, layout string, want map[string]filestore.Record) {
	t.Helper()
	s, err := filestore.Open(dir, &filestore.Options{SweepInterval: -1, NoCreate: true})
	if err != nil {
		t.Fatalf("open after reshard: %v", err)
	}
	defer s.Close()
	if s.Layout() != layout {
		t.Errorf("layout %s, want %s", s.Layout(), layout)
	}
	for id, w := range want {
		rec, err := s.Load(context.Background(), id)
		if err != nil {
			t.Fatalf("session %s: %v", filestore.Key(id), err)
		}
		if !bytes.Equal(rec.Data, w.Data) || !rec.Expiry.Equal(w.Expiry) {
			t.Errorf("session %s changed", filestore.Key(id))
		}
	}
	seen := map[string]int{}
	err = s.Scan(context.Background(), func(fi filestore.FileInfo) error {
		switch fi.State {
		case filestore.FileShard:
		case filestore.FileLive:
			seen[fi.Key]++
		default:
			t.Errorf("%s is %s", fi.Path, fi.State)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(seen) != len(want) {
		t.Errorf("%d records, want %d", len(seen), len(want))
	}
	for key, n := range seen {
		if n != 1 {
			t.Errorf("record %s is there %d times", key, n)
		}
	}
}

// TestReshardKilledAnywhere kills `filestore reshard` with SIGKILL at 20
// points of its run, from its first step to its last: each time Open
// refuses the half-moved store naming the command to run, and running that
// command finishes the move with every session there once.
func TestReshardKilledAnywhere(t *testing.T) {
	if arg, ok := testkit.Worker(t); ok {
		var (
			k           int
			dir, layout string
		)
		if _, err := fmt.Sscan(arg, &k, &dir, &layout); err != nil {
			t.Fatal(err)
		}
		calls := 0
		reshardHook = func(p filestore.ReshardProgress) {
			if calls++; calls == k {
				testkit.Ack("%s", p.Step)
				time.Sleep(time.Hour) // until the parent's SIGKILL
			}
		}
		os.Exit(run([]string{"reshard", dir, "--layout", layout}, os.Stdin, io.Discard, os.Stderr))
	}

	const sessions = 40 // steps: start, 40 moves, cleanup, switch, done
	dir := filepath.Join(t.TempDir(), "store")
	want := reshardFixture(t, dir, "1x2", sessions)
	layouts := []string{"2x1", "flat", "1x3", "1x2"}
	points := []int{1, 2, 3, 4, 5, 8, 11, 14, 17, 20, 23, 26, 29, 32, 35, 38, 41, 42, 43, 44}
	steps := map[string]int{}
	for i, k := range points {
		layout := layouts[i%len(layouts)]
		p := testkit.Start(t, testkit.Command(t, fmt.Sprintf("%d %s %s", k, dir, layout)))
		if k <= sessions+4 {
			step := p.NextAck()
			steps[step]++
			if err := p.Kill(); err != nil {
				t.Fatal(err)
			}
		}
		if err := p.Wait(); k <= sessions+4 && err == nil {
			t.Fatalf("point %d: the reshard was not killed", k)
		} else if k > sessions+4 && err != nil {
			t.Fatalf("point %d: %v", k, err)
		}

		if k < sessions+4 {
			_, err := filestore.Open(dir, &filestore.Options{SweepInterval: -1})
			if !errors.Is(err, filestore.ErrResharding) {
				t.Fatalf("point %d: Open of a half-moved store: %v, want ErrResharding", k, err)
			}
			if !strings.Contains(err.Error(), "filestore reshard "+dir+" --layout "+layout) {
				t.Errorf("point %d: the error does not name the command to run: %v", k, err)
			}
		}
		var stderr bytes.Buffer
		if code := run([]string{"reshard", dir, "--layout", layout}, nil, io.Discard, &stderr); code != 0 {
			t.Fatalf("point %d: rerun exited %d: %s", k, code, stderr.String())
		}
		checkSessions(t, dir, layout, want)
	}
	for _, step := range []string{"start", "move", "cleanup", "switch", "done"} {
		if steps[step] == 0 {
			t.Errorf("never killed at step %q", step)
		}
	}
}

// TestReshardRefusedWhileOpen runs reshard while a worker process has the
// store open: it exits 1 saying so and changes nothing, and succeeds once
// the worker is gone.
func TestReshardRefusedWhileOpen(t *testing.T) {
	if dir, ok := testkit.Worker(t); ok {
		s, err := filestore.Open(dir, &filestore.Options{SweepInterval: -1})
		if err != nil {
			t.Fatal(err)
		}
		testkit.Ack("open")
		testkit.WaitForStop()
		_ = s.Close()
		return
	}
	dir := filepath.Join(t.TempDir(), "store")
	want := reshardFixture(t, dir, "1x2", 10)
	p := testkit.StartWorker(t, dir)
	p.NextAck()
	var stderr bytes.Buffer
	if code := run([]string{"reshard", dir, "--layout", "2x2"}, nil, io.Discard, &stderr); code != 1 {
		t.Fatalf("reshard of a store in use exited %d, want 1: %s", code, stderr.String())
	}
	if msg := stderr.String(); !strings.Contains(msg, "in use") || strings.Count(msg, "\n") != 1 {
		t.Errorf("want one line saying the store is in use, got %q", msg)
	}
	checkSessions(t, dir, "1x2", want)
	if err := p.Wait(); err != nil {
		t.Fatal(err)
	}
	stderr.Reset()
	if code := run([]string{"reshard", dir, "--layout", "2x2"}, nil, io.Discard, &stderr); code != 0 {
		t.Fatalf("reshard exited %d: %s", code, stderr.String())
	}
	checkSessions(t, dir, "2x2", want)
}
