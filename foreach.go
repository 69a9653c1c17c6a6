package filestore

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"sync"
)

// ForEach calls fn once for every live record in the store, in no
// particular order, until fn returns an error, which ForEach then returns.
// Records saved or deleted during the walk may or may not be visited.
//
// fn is called from the goroutine that called ForEach, one record at a
// time, while other goroutines read the next records ahead of it, each its
// own shard directories: GOMAXPROCS of them, at least two and at most
// eight, or one in the flat layout, which has one directory. They hold
// no lock, so fn may call any Store method, including Delete of the record
// it was given. Memory stays bounded whatever the size of the store: at
// most 17 batches of read-ahead records, each of at most 64 records and,
// but for the record that fills it, 64 KiB of data.
//
// Records that cannot be read are skipped; after visiting every other
// record ForEach returns an error wrapping ErrCorrupt that names them by
// hashed path. ForEach stops early with ctx's error when ctx ends, and
// returns only once its readers have stopped.
func (s *Store) ForEach(ctx context.Context, fn func(Record) error) error {
	if s.closed.Load() {
		return opErr("foreach", ErrClosed)
	}
	ctx, stop := context.WithCancel(ctx)
	defer stop()
	readers := s.readers()
	leaves := make(chan string)
	batches := make(chan readBatch, readers)
	// Each goroutine sends at most one error, its first, and cancels ctx
	// after it: so the first error here is the cause, and any later one a
	// goroutine's reaction to the cancellation.
	errs := make(chan error, readers+1)
	fail := func(err error) {
		errs <- err
		stop()
	}
	var wg sync.WaitGroup
	wg.Go(func() {
		defer close(leaves)
		err := s.walkLeaves(ctx, s.data, 0, func(path string) error {
			select {
			case leaves <- path:
				return nil
			case <-ctx.Done():
				return ctx.Err()
			}
		})
		if err != nil {
			fail(err)
		}
	})
	for range readers {
		wg.Go(func() {
			for path := range leaves {
				if err := s.readLeaf(ctx, path, batches); err != nil {
					fail(err)
					return
				}
			}
		})
	}
	go func() {
		wg.Wait()
		close(batches)
		close(errs)
	}()

	var bad []error
	var fnErr error
	for b := range batches {
		if fnErr != nil {
			continue // drain, so that the readers can stop
		}
		bad = append(bad, b.bad[:min(len(b.bad), maxReportedErrors-len(bad))]...)
		for _, r := range b.recs {
			if err := fn(r); err != nil {
				fnErr = err
				stop()
				break
			}
		}
	}
	if fnErr != nil {
		return fnErr // fn's own error, as it returned it
	}
	if err := <-errs; err != nil {
		return opErr("foreach", err)
	}
	if len(bad) > 0 {
		return opErr("foreach", fmt.Errorf("skipped unreadable records: %w", errors.Join(bad...)))
	}
	return nil
}

const (
	// maxReaders bounds the goroutines ForEach reads records with.
	maxReaders = 8
	// readBatchRecords and readBatchBytes bound a readBatch.
	readBatchRecords = 64
	readBatchBytes   = 64 << 10
)

// readers is how many goroutines ForEach reads records with.
func (s *Store) readers() int {
	if s.layout.levels == 0 {
		return 1 // one shard directory: nothing to share out
	}
	return min(max(runtime.GOMAXPROCS(0), 2), maxReaders)
}

// readBatch is records one of ForEach's readers read, and the errors of
// those it could not read, on their way to fn.
type readBatch struct {
	recs []Record
	bad  []error
}

// readLeaf reads the live records in the leaf shard directory path and
// sends them to out in batches. It returns a walk error or ctx's.
func (s *Store) readLeaf(ctx context.Context, path string, out chan<- readBatch) error {
	var b readBatch
	var size int
	send := func(dir) error {
		if len(b.recs) == 0 && len(b.bad) == 0 {
			return nil
		}
		select {
		case out <- b:
			b, size = readBatch{}, 0
			return nil
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	return s.walkLeaf(ctx, path, s.layout.levels, eachName(func(d dir, name string) error {
		if !isRecordName(name) {
			return nil
		}
		rd, err := s.readIn(d, name)
		switch {
		case errors.Is(err, ErrNotFound):
			return nil // deleted since the directory was read
		case err != nil:
			if len(b.bad) < maxReportedErrors {
				b.bad = append(b.bad, err)
			}
			return nil
		case expired(rd.expiry, s.now()):
			return nil
		}
		b.recs = append(b.recs, Record{ID: rd.id, Data: rd.data, Expiry: expiryTime(rd.expiry)})
		size += len(rd.data)
		if len(b.recs) == readBatchRecords || size >= readBatchBytes {
			return send(d)
		}
		return nil
	}), send)
}

// fnError carries the error of a caller's function out of a walk, so that
// it is returned unwrapped while the walk's own errors are wrapped.
type fnError struct{ err error }

func (e fnError) Error() string { return e.err.Error() }
