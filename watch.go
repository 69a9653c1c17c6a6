package filestore

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"path/filepath"
	"strings"

	"github.com/fsnotify/fsnotify"
)

// Key returns the name of id's record file: the lowercase hex SHA-256 of
// id. Events and log lines name sessions by their key, never by id, since
// an id is a bearer secret. It never blocks.
func Key(id string) string {
	_, h := hashID(id)
	return h
}

// EventKind says what happened to a record.
type EventKind int

const (
	// EventSaved: a record was created or replaced (Save, Update).
	EventSaved EventKind = iota + 1
	// EventDeleted: a record was removed (Delete, Update returning nil,
	// the sweeper).
	EventDeleted
	// EventOverflow: events were lost, because the consumer or the kernel
	// queue fell behind; Key is empty. Re-read what you need.
	EventOverflow
)

func (k EventKind) String() string {
	switch k {
	case EventSaved:
		return "saved"
	case EventDeleted:
		return "deleted"
	case EventOverflow:
		return "overflow"
	}
	return fmt.Sprintf("EventKind(%d)", int(k))
}

// Event is a change to one record, named by its Key.
type Event struct {
	Key  string
	Kind EventKind
}

// watchBuffer is how many events Watch holds for a slow consumer before it
// reports EventOverflow instead.
const watchBuffer = 1024

// Watch reports changes made by any process sharing the store, until ctx
// ends or the store is closed; then the channel is closed.
//
// Events are best effort. They are built on the operating system's file
// notifications (inotify on Linux) of the store's shard directories: a
// rename onto a record's name is EventSaved, an unlink EventDeleted; temp,
// lock and marker files are not reported. Only changes after Watch returns
// are reported, and the events of one key arrive in the order they
// happened, but later than the write that caused them returned: do not use
// them to decide whether a session is live (Load does that). They carry no
// payload, name records by Key, and work on local filesystems only. A
// consumer that falls behind, or a kernel queue that overflows, gets one
// EventOverflow for whatever was lost; a writer never waits for a
// consumer. So that no record lands in a shard directory that is not
// watched yet, Watch first creates every shard directory of a layout of at
// most 4,096 of them (such as the default "1x2"); in a larger layout a
// shard directory created after Watch returns is watched from when it is
// seen, its records are reported as saved, and an EventOverflow says that
// a record saved and deleted in it before then went unseen.
//
// Watch is safe for concurrent use; each call has its own notifications
// (one inotify descriptor, and one watch per shard directory, counted
// against the user's fs.inotify limits). It returns ErrClosed after Close,
// and the error of setting up the notifications otherwise.
func (s *Store) Watch(ctx context.Context) (<-chan Event, error) {
	if s.closed.Load() {
		return nil, opErr("watch", ErrClosed)
	}
	if err := ctx.Err(); err != nil {
		return nil, opErr("watch", err)
	}
	w, err := fsnotify.NewBufferedWatcher(watchBuffer)
	if err != nil {
		return nil, opErr("watch", err)
	}
	wt := &watcher{s: s, w: w, out: make(chan Event, watchBuffer), levels: map[string]int{}}
	s.makeShards()
	if err := wt.addTree(s.data, 0, false); err != nil {
		_ = w.Close() // error deliberately ignored: already failing
		return nil, opErr("watch", err)
	}
	s.watchMu.Lock()
	if s.closed.Load() {
		s.watchMu.Unlock()
		_ = w.Close() // error deliberately ignored: the store closed under us
		return nil, opErr("watch", ErrClosed)
	}
	s.watching.Add(1)
	s.watchMu.Unlock()
	go wt.run(ctx, s.life)
	return wt.out, nil
}

// watcher forwards one Watch's notifications.
type watcher struct {
	s      *Store
	w      *fsnotify.Watcher
	out    chan Event
	levels map[string]int // watched directory -> its level (0 is data/)
	lost   bool           // an event was dropped and no EventOverflow sent yet
}

// addTree watches dir, at level, and every shard directory below it. With
// report set, the records found in leaf directories are sent as saved: the
// directory appeared after Watch returned, and they may have been written
// before its watch was in place.
func (wt *watcher) addTree(dir string, level int, report bool) error {
	if err := wt.w.Add(dir); err != nil {
		if errors.Is(err, fs.ErrNotExist) && level > 0 {
			return nil // removed again (by an operator)
		}
		return err
	}
	wt.levels[dir] = level
	if level == wt.s.layout.levels && !report {
		return nil // a leaf's records are not reported: no need to list them
	}
	d, err := wt.s.fs.OpenDir(dir)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) && level > 0 {
			return nil
		}
		return err
	}
	defer d.Close()
	for {
		names, rerr := d.ReadNames(readDirBatch)
		for _, name := range names {
			switch {
			case level < wt.s.layout.levels && wt.s.layout.isShardName(name):
				fi, err := d.Lstat(name)
				if err != nil || !fi.IsDir() {
					continue
				}
				if err := wt.addTree(dir+string(filepath.Separator)+name, level+1, report); err != nil {
					return err
				}
			case level == wt.s.layout.levels && report && isRecordName(name):
				wt.send(Event{Key: name, Kind: EventSaved})
			}
		}
		if rerr == io.EOF {
			return nil
		}
		if rerr != nil {
			return rerr
		}
	}
}

// run forwards notifications until ctx or the store's life ends.
func (wt *watcher) run(ctx, life context.Context) {
	defer wt.s.watching.Done()
	defer close(wt.out)
	defer func() { _ = wt.w.Close() }() // error deliberately ignored: nothing is left to report to
	for {
		// While events are lost, the one owed is EventOverflow, sent as
		// soon as the consumer takes it.
		var owed chan<- Event
		if wt.lost {
			owed = wt.out
		}
		select {
		case owed <- Event{Kind: EventOverflow}:
			wt.lost = false
		case <-ctx.Done():
			return
		case <-life.Done():
			return
		case err, ok := <-wt.w.Errors:
			if !ok {
				return
			}
			if errors.Is(err, fsnotify.ErrEventOverflow) {
				wt.lost = true
			}
			// Other errors come with events that still arrive; there is
			// nobody to return them to.
		case ev, ok := <-wt.w.Events:
			if !ok {
				return
			}
			wt.handle(ev)
		}
	}
}

// handle maps one notification onto events.
func (wt *watcher) handle(ev fsnotify.Event) {
	dir, name := filepath.Dir(ev.Name), filepath.Base(ev.Name)
	level, ok := wt.levels[dir]
	if !ok {
		return
	}
	switch {
	case level < wt.s.layout.levels:
		// A shard directory appeared: watch it, and report what is
		// already in it.
		if ev.Has(fsnotify.Create) && wt.s.layout.isShardName(name) {
			_ = wt.addTree(ev.Name, level+1, true) // error deliberately ignored: best effort, see Watch
			// A record saved and deleted in it before its watch was in
			// place went unseen: say so.
			wt.lost = true
		}
		if ev.Has(fsnotify.Remove) || ev.Has(fsnotify.Rename) {
			delete(wt.levels, ev.Name)
		}
	case !isRecordName(name) || strings.HasPrefix(name, tempPrefix):
		// Temp files and names the store did not make.
	case ev.Has(fsnotify.Create):
		wt.send(Event{Key: name, Kind: EventSaved})
	case ev.Has(fsnotify.Remove), ev.Has(fsnotify.Rename):
		wt.send(Event{Key: name, Kind: EventDeleted})
	}
}

// maxMadeShards is the most shard directories Watch creates up front.
const maxMadeShards = 4096

// makeShards creates every shard directory of a layout of at most
// maxMadeShards of them, for Watch. They are what Saves would create, and
// the store never removes them; they are not synced, since a Save that
// finds one missing after a crash makes it again. Errors are ignored: a
// directory it could not make is watched when a Save makes it.
func (s *Store) makeShards() {
	l := s.layout
	if l.levels == 0 || l.leaves() > maxMadeShards {
		return
	}
	digits := l.levels * l.width
	for leaf := range l.leaves() {
		name := fmt.Sprintf("%0*x", digits, leaf) + strings.Repeat("0", hashHexLen-digits)
		path := s.data
		for i := range l.levels {
			path += string(filepath.Separator) + name[i*l.width:(i+1)*l.width]
			if err := s.fs.Mkdir(path, dirMode); err == nil && s.fixModes {
				_ = s.fs.Chmod(path, dirMode) // error deliberately ignored: as said
			}
		}
	}
}

// send queues e for the consumer, or notes it lost if the consumer is
// behind: the notifications must keep being drained, or the kernel's queue
// overflows for every watcher of this store's directories.
func (wt *watcher) send(e Event) {
	if wt.lost {
		return // an EventOverflow is owed first; order per key must hold
	}
	select {
	case wt.out <- e:
	default:
		wt.lost = true
	}
}
