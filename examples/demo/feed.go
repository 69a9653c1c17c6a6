package main

import (
	"context"
	"log/slog"
	"sync"
	"time"

	"github.com/filestore-go/filestore"
)

// feedHistory is how many recent changes a feed keeps, so that a page
// that connects (after a login's redirect, or again after its worker died)
// sees what just happened instead of an empty list.
const feedHistory = 20

// subscriberBuffer is how many changes a page's stream may fall behind
// before the feed drops it; its browser then reconnects and starts again
// from the history.
const subscriberBuffer = 64

// shortKeyLen is how much of a record's key the page shows: enough to tell
// sessions apart at a glance. Keys are hashes, never the session ids
// themselves, which are bearer secrets.
const shortKeyLen = 8

// change is one Store event as the page gets it.
type change struct {
	Time   string `json:"time"`   // when this worker saw it, hh:mm:ss
	Worker int    `json:"worker"` // the worker that reported it
	Kind   string `json:"kind"`   // saved, deleted or overflow
	Key    string `json:"key"`    // the first shortKeyLen hex digits of the record's key; empty for overflow
}

// shortKey returns the part of filestore.Key(id) that the page shows.
func shortKey(id string) string {
	return filestore.Key(id)[:shortKeyLen]
}

// feed fans one Store.Watch out to every page streaming /events from this
// worker. Each worker watches the store itself, and every worker sees the
// changes of every process, so a page needs one stream from whichever
// worker its connection reached.
//
// A feed is safe for concurrent use. Its producer never waits for a page:
// a page that falls behind is dropped.
type feed struct {
	worker int
	err    error // why this worker has no Watch, or nil; set before use

	mu     sync.Mutex
	recent []change                 // oldest first, at most feedHistory
	subs   map[chan change]struct{} // open streams
	ended  bool                     // the Watch ended; subs is empty
}

// startFeed starts watching fs for worker and returns the feed; the watch
// ends with ctx or when fs is closed. When the store cannot be watched
// (inotify limits, an unsupported filesystem) the feed is empty and says
// why, and the worker serves on without it.
func startFeed(ctx context.Context, fs *filestore.Store, worker int, log *slog.Logger) *feed {
	f := &feed{worker: worker, subs: map[chan change]struct{}{}}
	events, err := fs.Watch(ctx)
	if err != nil {
		// Streams stay open and merely stay quiet: closing them would
		// have every page reconnect in a loop.
		log.Warn("no change feed", "error", err)
		f.err = err
		return f
	}
	go f.run(events)
	return f
}

// run forwards events until the Watch ends, then closes every stream.
func (f *feed) run(events <-chan filestore.Event) {
	for ev := range events {
		c := change{Time: time.Now().Format(time.TimeOnly), Worker: f.worker, Kind: ev.Kind.String()}
		if len(ev.Key) >= shortKeyLen {
			c.Key = ev.Key[:shortKeyLen]
		}
		f.publish(c)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.ended = true
	for ch := range f.subs {
		delete(f.subs, ch)
		close(ch)
	}
}

func (f *feed) publish(c change) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.recent) == feedHistory {
		f.recent = append(f.recent[:0], f.recent[1:]...)
	}
	f.recent = append(f.recent, c)
	for ch := range f.subs {
		select {
		case ch <- c:
		default:
			// Dropping the stream, rather than skipping an event, keeps
			// what a page shows complete: it reconnects and starts again
			// from the history.
			delete(f.subs, ch)
			close(ch)
		}
	}
}

// subscribe returns the recent changes, oldest first, and a channel of the
// ones that follow, which is closed when the feed drops or ends the
// stream. unsubscribe must be called once the caller stops reading. It
// does not block.
func (f *feed) subscribe() (recent []change, ch <-chan change, unsubscribe func()) {
	f.mu.Lock()
	defer f.mu.Unlock()
	c := make(chan change, subscriberBuffer)
	recent = append([]change(nil), f.recent...)
	if f.ended {
		close(c)
		return recent, c, func() {}
	}
	f.subs[c] = struct{}{}
	return recent, c, func() {
		f.mu.Lock()
		defer f.mu.Unlock()
		if _, ok := f.subs[c]; ok {
			delete(f.subs, c)
			close(c)
		}
	}
}
