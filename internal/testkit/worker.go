package testkit

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"
)

// The environment of a worker names the test it is a worker for, so that
// no other test of the binary mistakes itself for one, and carries the
// parent's argument.
const (
	workerEnv = "FILESTORE_TESTKIT_WORKER"
	argEnv    = "FILESTORE_TESTKIT_ARG"
)

// ackPrefix starts each line a worker reports through Ack.
const ackPrefix = "ack "

// WaitTimeout bounds each wait on a worker: NextAck for its next ack line,
// Wait for its exit. It only guards against a hung worker, which a healthy
// test never meets, so it says nothing about how fast anything is.
const WaitTimeout = time.Minute

// Worker reports whether this process is a worker that StartWorker (or
// Command) started for the test t, and if so the argument it was given.
// A test calls it first and, when ok, does the worker's part and returns.
// It does not block.
func Worker(t testing.TB) (arg string, ok bool) {
	if os.Getenv(workerEnv) != t.Name() {
		return "", false
	}
	return os.Getenv(argEnv), true
}

// Command returns, not started, the command that runs the test binary as
// a worker for t with arg: os.Args[0] with -test.run matching t alone
// (subtests included) and the environment Worker reads. A caller may
// change it before passing it to Start: run a copy of the binary
// (cmd.Path), as another user (cmd.SysProcAttr), with more environment.
// It does not block.
func Command(t testing.TB, arg string) *exec.Cmd {
	cmd := exec.Command(os.Args[0], "-test.run="+runPattern(t.Name()), "-test.count=1")
	// Later entries win, so a worker that starts workers passes on its
	// own test's name and argument, not its parent's.
	cmd.Env = append(os.Environ(), workerEnv+"="+t.Name(), argEnv+"="+arg)
	return cmd
}

// runPattern returns the -test.run pattern that selects the test (or
// subtest) called name and nothing else: go test matches each
// slash-separated element of the pattern against one level of names.
func runPattern(name string) string {
	parts := strings.Split(name, "/")
	for i, p := range parts {
		parts[i] = "^" + regexp.QuoteMeta(p) + "$"
	}
	return strings.Join(parts, "/")
}

// StartWorker starts Command(t, arg) with Start.
func StartWorker(t testing.TB, arg string) *Proc {
	t.Helper()
	return Start(t, Command(t, arg))
}

// Proc is a running worker process.
type Proc struct {
	t     testing.TB
	cmd   *exec.Cmd
	stdin io.WriteCloser
	eof   chan struct{} // closed when the worker's stdout ends
	more  chan struct{} // holds a token when an ack line arrived

	mu     sync.Mutex
	acks   []string     // every ack line so far, without the prefix
	next   int          // acks[next] is what NextAck returns next
	output bytes.Buffer // the worker's stderr and other stdout lines
	waited bool         // the test called Wait itself

	waitOnce sync.Once
	waitErr  error
}

// Start starts cmd, a command from Command, as a worker of the test t with
// its stdin and stdout connected to the returned Proc; its stderr is kept
// for the error Wait returns unless cmd.Stderr is already set. The test
// fails at once if cmd cannot start. When the test ends, Wait runs if the
// test did not call it, and a failed exit fails the test.
func Start(t testing.TB, cmd *exec.Cmd) *Proc {
	t.Helper()
	p := &Proc{t: t, cmd: cmd, eof: make(chan struct{}), more: make(chan struct{}, 1)}
	if cmd.Stderr == nil {
		cmd.Stderr = lockedWriter{p}
	}
	if cmd.WaitDelay == 0 {
		// Bounds cmd.Wait's wait for the copying of stderr, should a
		// process the worker started keep the pipe open.
		cmd.WaitDelay = WaitTimeout
	}
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatalf("testkit: worker stdin: %v", err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatalf("testkit: worker stdout: %v", err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatalf("testkit: start worker: %v", err)
	}
	p.stdin = stdin
	go p.read(stdout)
	t.Cleanup(func() {
		err := p.wait()
		p.mu.Lock()
		waited := p.waited
		p.mu.Unlock()
		if err != nil && !waited {
			t.Errorf("%v", err)
		}
	})
	return p
}

// lockedWriter appends to a Proc's output; exec copies a non-file Stderr
// from its own goroutine.
type lockedWriter struct{ p *Proc }

func (w lockedWriter) Write(b []byte) (int, error) {
	w.p.mu.Lock()
	defer w.p.mu.Unlock()
	return w.p.output.Write(b)
}

// read sorts the worker's stdout into ack lines and other output until it
// ends. It reads to the end whatever the test does, so that a worker never
// blocks on a full pipe, and it takes lines of any length.
func (p *Proc) read(stdout io.Reader) {
	defer close(p.eof)
	r := bufio.NewReader(stdout)
	for {
		line, err := r.ReadString('\n')
		if line != "" {
			p.mu.Lock()
			if ack, ok := strings.CutPrefix(strings.TrimSuffix(line, "\n"), ackPrefix); ok {
				p.acks = append(p.acks, ack)
				select {
				case p.more <- struct{}{}:
				default: // a token is already there
				}
			} else {
				p.output.WriteString(line)
			}
			p.mu.Unlock()
		}
		if err != nil {
			return // io.EOF, or the pipe closed by Wait after a kill
		}
	}
}

// takeAck returns the next ack line NextAck has not returned, if there is
// one yet.
func (p *Proc) takeAck() (string, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.next == len(p.acks) {
		return "", false
	}
	p.next++
	return p.acks[p.next-1], true
}

// NextAck returns the worker's next ack line not yet returned by NextAck,
// waiting for it. It fails the test given to Start (with t.Fatalf, so call
// it from that test's goroutine) if the worker's output ends first, or
// after WaitTimeout.
func (p *Proc) NextAck() string {
	t := p.t
	t.Helper()
	timer := time.NewTimer(WaitTimeout)
	defer timer.Stop()
	for {
		if ack, ok := p.takeAck(); ok {
			return ack
		}
		select {
		case <-p.more:
		case <-p.eof:
			// read appends every ack before closing eof: look once more.
			if ack, ok := p.takeAck(); ok {
				return ack
			}
			t.Fatalf("testkit: the worker's output ended before its next ack line:\n%s", p.Output())
		case <-timer.C:
			t.Fatalf("testkit: no ack line from the worker within %v:\n%s", WaitTimeout, p.Output())
		}
	}
}

// Acks returns every ack line the worker has printed so far, in order,
// whether or not NextAck returned it. After Wait that is all of them.
func (p *Proc) Acks() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]string(nil), p.acks...)
}

// Output returns what the worker has printed so far other than ack lines:
// its stderr (unless Start was given a cmd with Stderr set) and the other
// lines of its stdout, such as the testing package's own report.
func (p *Proc) Output() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.output.String()
}

// Kill sends the worker SIGKILL, as a crash would end it; Wait then
// returns an error saying it was killed. It does not wait.
func (p *Proc) Kill() error { return p.cmd.Process.Kill() }

// Wait closes the worker's stdin, which ends a WaitForStop in the worker,
// and waits for the worker to exit. It returns nil if the worker exited
// with status 0, and otherwise an error holding its Output. A worker still
// running after WaitTimeout is killed and Wait reports that. Wait may be
// called more than once and from several goroutines; every call returns
// the first one's result.
func (p *Proc) Wait() error {
	p.mu.Lock()
	p.waited = true
	p.mu.Unlock()
	return p.wait()
}

func (p *Proc) wait() error {
	p.waitOnce.Do(func() {
		_ = p.stdin.Close() // error deliberately ignored: the worker may be gone
		var killed error
		timer := time.NewTimer(WaitTimeout)
		defer timer.Stop()
		select {
		case <-p.eof:
		case <-timer.C:
			killed = fmt.Errorf("did not exit within %v, killed", WaitTimeout)
			_ = p.cmd.Process.Kill() // error deliberately ignored: it may have just exited
		}
		// cmd.Wait closes stdout; read stops at that if a process the
		// worker started still holds the pipe open.
		err := p.cmd.Wait()
		<-p.eof
		if err = errors.Join(killed, err); err != nil {
			p.waitErr = fmt.Errorf("testkit: worker %s: %w\n%s", p.cmd.Args[1], err, p.Output())
		}
	})
	return p.waitErr
}

// Ack prints one ack line for the parent's NextAck and Acks: the
// formatted text, with any newline in it replaced by a space. It is for
// the worker side, and safe to call from several goroutines: each line is
// one write, so lines never interleave.
func Ack(format string, args ...any) {
	msg := strings.ReplaceAll(fmt.Sprintf(format, args...), "\n", " ")
	_, _ = os.Stdout.WriteString(ackPrefix + msg + "\n") // error deliberately ignored: the parent reads to the end
}

// WaitForStop blocks until the parent's Wait closes the worker's stdin (or
// the parent exits). A worker that serves the parent until told to stop
// calls it last.
func WaitForStop() {
	_, _ = io.Copy(io.Discard, os.Stdin) // error deliberately ignored: any end of stdin means stop
}
