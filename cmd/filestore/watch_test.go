package main

import (
	"bufio"
	"context"
	"encoding/json"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/filestore-go/filestore"
	"github.com/filestore-go/filestore/internal/testkit"
)

// TestWatch runs "filestore watch" as its own process, changes the store
// from this one, and reads the changes it prints, by key, as text and as
// JSON; SIGINT or SIGTERM ends it with status 0.
func TestWatch(t *testing.T) {
	t.Run("text", func(t *testing.T) { testWatch(t, false, syscall.SIGINT) })
	t.Run("json", func(t *testing.T) { testWatch(t, true, syscall.SIGTERM) })
}

// watchLine parses one line of watch's output into its event and key.
func watchLine(t *testing.T, jsonOut bool, l string) (event, key string) {
	if !jsonOut {
		f := strings.Fields(l)
		if len(f) > 1 && f[1] == "overflow" {
			return "overflow", ""
		}
		if len(f) != 3 {
			t.Fatalf("watch printed %q", l)
		}
		return f[1], f[2]
	}
	var ev watchEvent
	if err := json.Unmarshal([]byte(l), &ev); err != nil || ev.Time.IsZero() {
		t.Fatalf("watch printed %q: %v", l, err)
	}
	return ev.Event, ev.Key
}

func testWatch(t *testing.T, jsonOut bool, sig syscall.Signal) {
	dir := filepath.Join(t.TempDir(), "store")
	s, err := filestore.Open(dir, &filestore.Options{SweepInterval: -1})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	ctx := context.Background()
	if err := s.Save(ctx, "before", []byte("x"), time.Time{}); err != nil {
		t.Fatal(err)
	}

	// "filestore" is this test binary, installed in $PATH by TestMain.
	args := []string{"watch", dir}
	if jsonOut {
		args = append(args, "--json")
	}
	cmd := exec.Command("filestore", args...)
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = cmd.Process.Kill() }() // error deliberately ignored: it has usually exited
	lines := make(chan string, 100)
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			lines <- sc.Text()
		}
		close(lines)
	}()
	errLines := bufio.NewScanner(stderr)
	if !errLines.Scan() || !strings.Contains(errLines.Text(), "watching") {
		t.Fatalf("watch did not start: %q", errLines.Text())
	}
	var rest strings.Builder // the rest of its stderr, read to the end before Wait
	errDone := make(chan struct{})
	go func() {
		defer close(errDone)
		for errLines.Scan() {
			rest.WriteString(errLines.Text() + "\n")
		}
	}()

	const id = "watched-session-secret"
	if err := s.Save(ctx, id, []byte("one"), time.Time{}); err != nil {
		t.Fatal(err)
	}
	if err := s.Delete(ctx, id); err != nil {
		t.Fatal(err)
	}
	key := filestore.Key(id)
	var got []string
	timeout := time.After(testkit.WaitTimeout)
	for len(got) < 2 {
		select {
		case l, ok := <-lines:
			if !ok {
				t.Fatalf("watch ended early; printed %q", got)
			}
			if strings.Contains(l, id) {
				t.Errorf("watch printed the raw id: %q", l)
			}
			if event, k := watchLine(t, jsonOut, l); k == key {
				got = append(got, event)
			}
		case <-timeout:
			t.Fatalf("watch printed %q within %v, want the save and the delete", got, testkit.WaitTimeout)
		}
	}
	if got[0] != "saved" || got[1] != "deleted" {
		t.Errorf("events %q, want saved then deleted", got)
	}

	if err := cmd.Process.Signal(sig); err != nil {
		t.Fatal(err)
	}
	for range lines { // drain until watch closes its stdout
	}
	<-errDone
	if err := cmd.Wait(); err != nil {
		t.Errorf("watch after %v: %v, want exit status 0; stderr:\n%s", sig, err, rest.String())
	}
}
