package filestore

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

func TestKey(t *testing.T) {
	s := openTest(t, nil)
	require.NoError(t, s.Save(bg, "some-id", nil, time.Time{}))
	sum := sha256.Sum256([]byte("some-id"))
	require.Equal(t, hex.EncodeToString(sum[:]), Key("some-id"))
	require.Len(t, files(t, s), 1)
	require.True(t, strings.HasSuffix(files(t, s)[0], "/"+Key("some-id")), "Key is the record's file name")
}

// eventWait bounds how long a test waits for an event that should come.
// Events arrive within milliseconds; the bound only keeps a broken Watch
// from hanging the run.
const eventWait = 30 * time.Second

// waitEvent reads ch until it gets want, failing if ch closes or nothing
// matching comes within eventWait. Overflow events are failures: nothing
// in these tests should lose one.
func waitEvent(t *testing.T, ch <-chan Event, want Event) {
	t.Helper()
	deadline := time.After(eventWait)
	for {
		select {
		case ev, ok := <-ch:
			require.True(t, ok, "channel closed waiting for %v", want)
			require.NotEqual(t, EventOverflow, ev.Kind)
			if ev == want {
				return
			}
		case <-deadline:
			t.Fatalf("no %v event for %s", want.Kind, want.Key[:8])
		}
	}
}

// TestWatchOtherProcess: a worker process's Save, Delete, Update and sweep
// arrive as events with the record's key.
func TestWatchOtherProcess(t *testing.T) {
	ids := []string{"alpha", "beta", "gamma", "delta"}
	if dir, _, ok := worker(t); ok {
		s := workerStore(dir, nil)
		defer s.Close()
		for _, id := range ids {
			waitForFile(dir + "/go-" + id)
			if err := s.Save(bg, id, []byte("x"), time.Time{}); err != nil {
				fail("save: %v", err)
			}
			fmt.Println("ack saved")
			waitForFile(dir + "/del-" + id)
			var err error
			switch id {
			case "gamma":
				err = s.Update(bg, id, func(*Record) (*Record, error) { return nil, nil })
			case "delta":
				if err = s.Save(bg, id, []byte("x"), time.Now().Add(-time.Second)); err == nil {
					_, err = s.DeleteExpired(bg)
				}
			default:
				err = s.Delete(bg, id)
			}
			if err != nil {
				fail("delete: %v", err)
			}
			fmt.Println("ack deleted")
		}
		return
	}

	s := openTest(t, nil)
	ctx, cancel := context.WithCancel(bg)
	defer cancel()
	ch, err := s.Watch(ctx)
	require.NoError(t, err)
	cmd, out := startWorker(t, s.Dir(), "")
	// A failing parent must not leave the worker waiting for its files.
	t.Cleanup(func() { _ = cmd.Process.Kill() })
	go func() { _, _ = io.Copy(io.Discard, out) }()
	touch := func(name string) { requireWrite(t, s.Dir()+"/"+name) }
	for _, id := range ids {
		touch("go-" + id)
		waitEvent(t, ch, Event{Key: Key(id), Kind: EventSaved})
		touch("del-" + id)
		waitEvent(t, ch, Event{Key: Key(id), Kind: EventDeleted})
	}
	require.NoError(t, cmd.Wait())
}

func requireWrite(t *testing.T, path string) {
	t.Helper()
	require.NoError(t, os.WriteFile(path, nil, 0o600))
}

// TestWatchOverflow: a consumer that reads nothing while 3,000 records are
// saved is told that events were lost, and never misses one silently:
// every saved key either arrives or an EventOverflow does.
func TestWatchOverflow(t *testing.T) {
	s := openTest(t, &Options{SweepInterval: -1, NoSync: true})
	ch, err := s.Watch(bg)
	require.NoError(t, err)
	const n = 3 * watchBuffer
	want := map[string]bool{}
	for i := range n {
		id := fmt.Sprintf("s-%d", i)
		require.NoError(t, s.Save(bg, id, nil, time.Time{}))
		want[Key(id)] = true
	}
	overflow := false
	deadline := time.After(eventWait)
	for !overflow && len(want) > 0 {
		select {
		case ev := <-ch:
			if ev.Kind == EventOverflow {
				require.Empty(t, ev.Key)
				overflow = true
			}
			delete(want, ev.Key)
		case <-deadline:
			t.Fatalf("%d keys neither reported nor covered by an overflow", len(want))
		}
	}
	require.True(t, overflow, "3,000 unread events caused no overflow")
	// After the overflow events flow again.
	require.NoError(t, s.Save(bg, "after", nil, time.Time{}))
	deadline = time.After(eventWait)
	for {
		select {
		case ev := <-ch:
			if ev.Key == Key("after") {
				return
			}
		case <-deadline:
			t.Fatal("no event after the overflow")
		}
	}
}

// TestWatchEnds: the channel closes when ctx ends and when the store is
// closed; the test's hygiene check then finds no goroutine or descriptor
// left behind.
func TestWatchEnds(t *testing.T) {
	s := openTest(t, nil)
	ctx, cancel := context.WithCancel(bg)
	ch, err := s.Watch(ctx)
	require.NoError(t, err)
	ch2, err := s.Watch(bg)
	require.NoError(t, err)
	cancel()
	requireClosed(t, ch)
	require.NoError(t, s.Close())
	requireClosed(t, ch2)
	_, err = s.Watch(bg)
	require.ErrorIs(t, err, ErrClosed)
}

func requireClosed(t *testing.T, ch <-chan Event) {
	t.Helper()
	deadline := time.After(eventWait)
	for {
		select {
		case _, ok := <-ch:
			if !ok {
				return
			}
		case <-deadline:
			t.Fatal("Watch's channel was not closed")
		}
	}
}

// TestWatchShardDirectories: in the default layout Watch first makes every
// shard directory, so records saved and deleted at once, each in a shard
// that held none, are seen saved and deleted. In a layout too large for
// that, a shard directory made after Watch returned has its records
// reported, with an EventOverflow for what may have gone unseen there.
func TestWatchShardDirectories(t *testing.T) {
	t.Run("1x2", func(t *testing.T) {
		s := openTest(t, nil)
		ctx, cancel := context.WithCancel(bg)
		defer cancel()
		ch, err := s.Watch(ctx)
		require.NoError(t, err)
		shards, err := os.ReadDir(s.data)
		require.NoError(t, err)
		require.Len(t, shards, 256)
		var ids []string
		for i := range 40 {
			id := fmt.Sprintf("burst-%d", i)
			require.NoError(t, s.Save(bg, id, []byte("x"), time.Time{}))
			require.NoError(t, s.Delete(bg, id))
			ids = append(ids, id)
		}
		for _, id := range ids {
			waitEvent(t, ch, Event{Key: Key(id), Kind: EventSaved})
			waitEvent(t, ch, Event{Key: Key(id), Kind: EventDeleted})
		}
	})
	t.Run("2x2", func(t *testing.T) {
		s := openTest(t, &Options{SweepInterval: -1, Layout: "2x2"})
		ctx, cancel := context.WithCancel(bg)
		defer cancel()
		ch, err := s.Watch(ctx)
		require.NoError(t, err)
		require.NoError(t, s.Save(bg, "late", []byte("x"), time.Time{}))
		var saved, overflow bool
		deadline := time.After(eventWait)
		for !saved || !overflow {
			select {
			case ev := <-ch:
				saved = saved || ev == Event{Key: Key("late"), Kind: EventSaved}
				overflow = overflow || ev.Kind == EventOverflow
			case <-deadline:
				t.Fatalf("saved %v, overflow %v: want both", saved, overflow)
			}
		}
	})
}
