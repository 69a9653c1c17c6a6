// Package testkit holds the helpers that the tests of every filestore
// module share: running the test binary again as a worker process, for
// tests that need several processes on one store, and an HTTP client that
// behaves like one browser, for the adapters' and the demo's end-to-end
// tests. It uses the standard library only, so that it adds nothing to the
// core's dependencies, and it is internal: only modules whose path starts
// with github.com/filestore-go/filestore can import it.
//
// # Workers
//
// A cross-process test is its own worker, as cmd/go's lockedfile tests are:
//
//	func TestShared(t *testing.T) {
//		if arg, ok := testkit.Worker(t); ok {
//			// This process is the worker: arg is what the parent passed.
//			testkit.Ack("ready %s", addr)
//			testkit.WaitForStop()
//			return
//		}
//		w := testkit.StartWorker(t, dir)
//		addr := w.NextAck()
//		...
//		if err := w.Wait(); err != nil {
//			t.Fatal(err)
//		}
//	}
//
// A worker reports to its parent through ack lines on its stdout; every
// other line it prints, and its stderr, are kept for the error Wait
// returns. Every wait (NextAck, Wait) is bounded by WaitTimeout and every
// request by ClientTimeout, so a hung worker or server fails the test
// instead of hanging it, and the worker is killed and reaped when the test
// ends at the latest.
//
// # Concurrency
//
// A Proc's methods are safe for concurrent use; a Client's methods are
// too, but they report failures with t.Fatalf, so they must be called from
// the goroutine running the test, as t.Fatal must.
package testkit
