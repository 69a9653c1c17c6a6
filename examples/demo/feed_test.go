package main

import (
	"testing"

	"github.com/filestore-go/filestore"
)

// A page that stops reading is dropped, and the others still get every
// change; the history keeps the latest feedHistory changes.
func TestFeedDropsSlowStreams(t *testing.T) {
	f := &feed{worker: 1, subs: map[chan change]struct{}{}}
	_, slow, unsubscribeSlow := f.subscribe()
	defer unsubscribeSlow()
	_, fast, unsubscribeFast := f.subscribe()
	defer unsubscribeFast()

	const n = subscriberBuffer + 5
	var got int
	for i := range n {
		f.publish(change{Kind: "saved", Key: string(rune('a' + i%26))})
		// The fast page keeps up: it reads each change as it comes.
		if _, ok := <-fast; ok {
			got++
		}
	}
	if got != n {
		t.Errorf("the page that kept up got %d of %d changes", got, n)
	}
	var buffered int
	for range slow {
		buffered++
	}
	if buffered != subscriberBuffer {
		t.Errorf("the slow page's stream held %d changes before it closed, want %d", buffered, subscriberBuffer)
	}

	recent, _, unsubscribe := f.subscribe()
	unsubscribe()
	if len(recent) != feedHistory {
		t.Fatalf("history holds %d changes, want %d", len(recent), feedHistory)
	}
	if want := string(rune('a' + (n-1)%26)); recent[len(recent)-1].Key != want {
		t.Errorf("last change in the history is %q, want the newest, %q", recent[len(recent)-1].Key, want)
	}
}

// When the watch ends (the worker shuts down), every stream is closed and
// a later subscriber gets a closed stream at once.
func TestFeedEndsStreams(t *testing.T) {
	f := &feed{worker: 1, subs: map[chan change]struct{}{}}
	_, ch, unsubscribe := f.subscribe()
	defer unsubscribe()
	events := make(chan filestore.Event)
	close(events)
	f.run(events)
	if _, ok := <-ch; ok {
		t.Fatal("a stream got a change after the watch ended")
	}
	_, late, unsubscribeLate := f.subscribe()
	defer unsubscribeLate()
	if _, ok := <-late; ok {
		t.Fatal("a stream opened after the watch ended got a change")
	}
}
