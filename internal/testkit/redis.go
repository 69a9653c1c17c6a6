package testkit

import (
	"bufio"
	"bytes"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"
)

// RequireRedisEnv names the environment variable that turns StartRedis's
// skip, where redis-server is not installed, into a failure. CI sets it.
const RequireRedisEnv = "FILESTORE_REQUIRE_REDIS"

// Redis is a redis-server that a test started with StartRedis: its own
// process on a free loopback port, with its own temp directory and no
// persistence (no RDB snapshots, no append-only file), so that a restart
// starts it empty. Its methods are safe for concurrent use.
type Redis struct {
	t    testing.TB
	bin  string
	dir  string
	port int

	mu   sync.Mutex
	proc *os.Process   // the running server; nil when stopped
	done chan struct{} // closed when proc has exited and been reaped
}

// StartRedis starts a redis-server for the test t and stops it when the
// test ends. Where redis-server is not on PATH it skips the test, or fails
// it when RequireRedisEnv is set to 1. It blocks until the server answers
// PING, at most WaitTimeout.
func StartRedis(t testing.TB) *Redis {
	t.Helper()
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		if os.Getenv(RequireRedisEnv) == "1" {
			t.Fatalf("testkit: redis-server not found and %s=1: %v", RequireRedisEnv, err)
		}
		t.Skipf("testkit: redis-server not found (install the redis-server package; %s=1 makes this a failure)", RequireRedisEnv)
	}
	r := &Redis{t: t, bin: bin, dir: t.TempDir()}
	t.Cleanup(r.Kill)
	// Another process may take the free port between our probe and the
	// server's bind: try a few ports.
	for try := 0; ; try++ {
		r.port = freePort(t)
		err := r.start()
		if err == nil {
			return r
		}
		if try == 4 {
			t.Fatalf("testkit: start redis-server: %v", err)
		}
	}
}

// freePort returns a loopback TCP port that was free a moment ago.
func freePort(t testing.TB) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("testkit: find a free port: %v", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// Addr is the server's address, 127.0.0.1:PORT.
func (r *Redis) Addr() string { return net.JoinHostPort("127.0.0.1", strconv.Itoa(r.port)) }

// URL is the server's address as a redis:// URL for database db.
func (r *Redis) URL(db int) string { return fmt.Sprintf("redis://%s/%d", r.Addr(), db) }

// start runs the server on r.port and waits until it answers PING.
func (r *Redis) start() error {
	out := new(bytes.Buffer)
	cmd := exec.Command(r.bin,
		"--port", strconv.Itoa(r.port),
		"--bind", "127.0.0.1",
		"--dir", r.dir,
		"--save", "",
		"--appendonly", "no",
		"--daemonize", "no",
		"--logfile", "",
	)
	cmd.Stdout, cmd.Stderr = lockedBuffer{&r.mu, out}, lockedBuffer{&r.mu, out}
	cmd.WaitDelay = WaitTimeout
	if err := cmd.Start(); err != nil {
		return err
	}
	done := make(chan struct{})
	var waitErr error
	go func() { waitErr = cmd.Wait(); close(done) }()
	deadline := time.Now().Add(WaitTimeout)
	for {
		if err := ping(r.Addr()); err == nil {
			r.mu.Lock()
			r.proc, r.done = cmd.Process, done
			r.mu.Unlock()
			return nil
		}
		select {
		case <-done:
			r.mu.Lock()
			log := out.String()
			r.mu.Unlock()
			return fmt.Errorf("redis-server exited (%v): %s", waitErr, log)
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			_ = cmd.Process.Kill()
			<-done
			return fmt.Errorf("redis-server did not answer PING within %v", WaitTimeout)
		}
	}
}

// Kill stops the server at once with SIGKILL, as a crash would, and waits
// until it has exited. It does nothing if the server is not running.
func (r *Redis) Kill() {
	r.mu.Lock()
	proc, done := r.proc, r.done
	r.proc, r.done = nil, nil
	r.mu.Unlock()
	if proc == nil {
		return
	}
	_ = proc.Signal(syscall.SIGKILL)
	<-done
}

// Restart starts the server again, empty, on the same port, after Kill.
// It fails the test if the server does not come up.
func (r *Redis) Restart() {
	r.t.Helper()
	r.Kill()
	var err error
	for try := 0; try < 50; try++ {
		if err = r.start(); err == nil {
			return
		}
		time.Sleep(100 * time.Millisecond) // the port may linger a moment
	}
	r.t.Fatalf("testkit: restart redis-server: %v", err)
}

// ping sends PING in the RESP protocol and expects +PONG.
func ping(addr string) error {
	c, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		return err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(time.Second))
	if _, err := c.Write([]byte("*1\r\n$4\r\nPING\r\n")); err != nil {
		return err
	}
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		return err
	}
	if line != "+PONG\r\n" {
		return fmt.Errorf("PING answered %q", line)
	}
	return nil
}

// lockedBuffer is a buffer written by exec's copying goroutines.
type lockedBuffer struct {
	mu *sync.Mutex
	b  *bytes.Buffer
}

func (w lockedBuffer) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.b.Write(p)
}
