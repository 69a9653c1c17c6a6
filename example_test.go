package filestore_test

import (
	"context"
	"errors"
	"fmt"
	"log"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"github.com/filestore-go/filestore"
)

// exampleDir returns a fresh directory for an example's store, and a func
// that removes it.
func exampleDir() (string, func()) {
	dir, err := os.MkdirTemp("", "filestore-example-")
	if err != nil {
		log.Fatal(err)
	}
	return filepath.Join(dir, "sessions"), func() { os.RemoveAll(dir) }
}

func Example() {
	ctx := context.Background()
	dir, cleanup := exampleDir()
	defer cleanup()
	s, err := filestore.Open(dir, nil)
	if err != nil {
		log.Fatal(err)
	}
	defer s.Close()

	if err := s.Save(ctx, "session-id", []byte(`{"user":42}`), time.Now().Add(time.Hour)); err != nil {
		log.Fatal(err)
	}
	rec, err := s.Load(ctx, "session-id")
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(string(rec.Data))

	if err := s.Delete(ctx, "session-id"); err != nil {
		log.Fatal(err)
	}
	_, err = s.Load(ctx, "session-id")
	fmt.Println(errors.Is(err, filestore.ErrNotFound))
	// Output:
	// {"user":42}
	// true
}

// Update is a read-modify-write under the record's lock: increments from
// any number of goroutines and processes are never lost. fn changes the
// record it is given and returns it, which keeps its expiry; a record made
// anew needs an Expiry of its own, or it never expires.
func ExampleStore_Update() {
	ctx := context.Background()
	dir, cleanup := exampleDir()
	defer cleanup()
	s, err := filestore.Open(dir, nil)
	if err != nil {
		log.Fatal(err)
	}
	defer s.Close()

	expiry := time.Now().Add(time.Hour).Truncate(time.Second)
	visit := func(cur *filestore.Record) (*filestore.Record, error) {
		if cur == nil { // no live record yet: start one, with its expiry
			return &filestore.Record{Data: []byte("1"), Expiry: expiry}, nil
		}
		n, _ := strconv.Atoi(string(cur.Data))
		cur.Data = []byte(strconv.Itoa(n + 1)) // cur keeps its Expiry
		return cur, nil
	}
	for range 3 {
		if err := s.Update(ctx, "visits", visit); err != nil {
			log.Fatal(err)
		}
	}
	rec, _ := s.Load(ctx, "visits")
	fmt.Println(string(rec.Data), rec.Expiry.Equal(expiry))
	// Output: 3 true
}

func ExampleStore_DeleteExpired() {
	ctx := context.Background()
	// A negative SweepInterval starts no background sweeper: sweep by hand,
	// say from a cron job or an admin command.
	dir, cleanup := exampleDir()
	defer cleanup()
	s, err := filestore.Open(dir, &filestore.Options{SweepInterval: -1})
	if err != nil {
		log.Fatal(err)
	}
	defer s.Close()

	_ = s.Save(ctx, "gone", []byte("x"), time.Now().Add(-time.Minute))
	_ = s.Save(ctx, "kept", []byte("y"), time.Now().Add(time.Hour))
	n, err := s.DeleteExpired(ctx)
	fmt.Println(n, err)
	// Output: 1 <nil>
}

func ExampleStore_ForEach() {
	ctx := context.Background()
	dir, cleanup := exampleDir()
	defer cleanup()
	s, err := filestore.Open(dir, nil)
	if err != nil {
		log.Fatal(err)
	}
	defer s.Close()

	for _, id := range []string{"alice", "bob"} {
		_ = s.Save(ctx, id, []byte("data"), time.Time{})
	}
	count := 0
	err = s.ForEach(ctx, func(r filestore.Record) error {
		count++
		return nil
	})
	fmt.Println(count, err)
	// Output: 2 <nil>
}

// The shard layout is fixed when a store is created; later Opens read it
// from the store's root.
func ExampleOpen_layout() {
	dir, cleanup := exampleDir()
	defer cleanup()
	s, err := filestore.Open(dir, &filestore.Options{Layout: "2x2", Compress: true})
	if err != nil {
		log.Fatal(err)
	}
	s.Close()

	s, err = filestore.Open(dir, nil)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(s.Layout())
	s.Close()

	_, err = filestore.Open(dir, &filestore.Options{Layout: "1x2"})
	fmt.Println(errors.Is(err, filestore.ErrLayout))
	// Output:
	// 2x2
	// true
}

// Watch tells an application when any process saved or deleted a session,
// for example to close the websockets of a session another worker logged
// out. Events name sessions by Key, never by id.
func ExampleStore_Watch() {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel() // ends the Watch and closes its channel
	dir, cleanup := exampleDir()
	defer cleanup()
	s, err := filestore.Open(dir, nil)
	if err != nil {
		log.Fatal(err)
	}
	defer s.Close()

	events, err := s.Watch(ctx)
	if err != nil {
		log.Fatal(err)
	}
	_ = s.Save(ctx, "session-id", []byte("x"), time.Now().Add(time.Hour))
	_ = s.Delete(ctx, "session-id")
	for _, want := range []filestore.EventKind{filestore.EventSaved, filestore.EventDeleted} {
		ev := <-events
		fmt.Println(ev.Kind == want, ev.Key == filestore.Key("session-id"))
	}
	// Output:
	// true true
	// true true
}
