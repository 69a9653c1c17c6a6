package filestore

import (
	"bufio"
	"errors"
	"fmt"
	"io/fs"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// Process crashes (issue 5, figure 2). A worker process is SIGKILLed at
// random moments while it saves, updates and deletes, and deterministically
// at every hook point of every write protocol. After each death the parent
// checks that no record is torn, that no acknowledged write is missing,
// that no lock is still held, and, at the end, that one sweep leaves no
// orphaned temp file.

// crashIDs are the ids the random-kill worker writes, besides its counter.
var crashIDs = func() []string {
	ids := make([]string, 8)
	for i := range ids {
		ids[i] = fmt.Sprintf("crash-%d", i)
	}
	return ids
}()

const crashCounter = "crash-counter"

// crashWorker saves, updates and deletes until it is killed. Before each
// operation it prints "try <id> <value>" (value "-" for a delete) and after
// it "ack": at most one operation is ever in flight, the last tried and not
// acknowledged.
func crashWorker(dir string) {
	s := workerStore(dir, nil)
	n := 0
	switch r, err := s.Load(bg, crashCounter); {
	case err == nil:
		n, _ = strconv.Atoi(string(r.Data))
	case !errors.Is(err, ErrNotFound):
		fail("load: %v", err)
	}
	fmt.Println("ack ready")
	payload := make([]byte, 2048)
	for i := 0; ; i++ {
		id := crashIDs[rand.IntN(len(crashIDs))]
		val := fmt.Sprintf("%d.%d", os.Getpid(), i)
		var err error
		switch op := rand.IntN(5); op {
		case 0: // Save
			fmt.Printf("try %s %s\n", id, val)
			err = s.Save(bg, id, append([]byte(val+" "), payload...), time.Time{})
		case 1: // Delete
			fmt.Printf("try %s -\n", id)
			err = s.Delete(bg, id)
		case 2: // Update that replaces
			fmt.Printf("try %s %s\n", id, val)
			err = s.Update(bg, id, func(*Record) (*Record, error) {
				return &Record{Data: []byte(val + " ")}, nil
			})
		case 3: // Update that deletes
			fmt.Printf("try %s -\n", id)
			err = s.Update(bg, id, func(*Record) (*Record, error) { return nil, nil })
		case 4: // Update that increments: read, modify, write
			fmt.Printf("try %s %d\n", crashCounter, n+1)
			err = s.Update(bg, crashCounter, func(cur *Record) (*Record, error) {
				if got := recordValue(cur); got != strconv.Itoa(n) && !(n == 0 && got == "-") {
					return nil, fmt.Errorf("counter at %s, want %d", got, n)
				}
				return &Record{Data: []byte(strconv.Itoa(n + 1))}, nil
			})
			if err == nil {
				n++
			}
		}
		if err != nil {
			fail("op %d: %v", i, err)
		}
		fmt.Println("ack")
	}
}

// recordValue is what the crash tests compare: the first word of the
// record's data, or "-" for no record.
func recordValue(r *Record) string {
	if r == nil {
		return "-"
	}
	v, _, _ := strings.Cut(string(r.Data), " ")
	return v
}

// loadValue loads id and returns recordValue of it; any error other than
// ErrNotFound (a torn or corrupt record) fails t.
func loadValue(t *testing.T, s *Store, id string) string {
	t.Helper()
	r, err := s.Load(bg, id)
	if errors.Is(err, ErrNotFound) {
		return "-"
	}
	require.NoError(t, err)
	return recordValue(&r)
}

// requireLocksFree fails t if any stripe lock or the sweep lock is held.
func requireLocksFree(t *testing.T, s *Store, msg string) {
	t.Helper()
	paths := []string{s.locks.sweepPath()}
	for i := range s.locks.stripes {
		paths = append(paths, s.locks.stripePath(i))
	}
	for _, p := range paths {
		release, err := s.fs.Lock(bg, p, true)
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		require.NoError(t, err, "%s: %s still locked", msg, filepath.Base(p))
		require.NoError(t, release())
	}
}

// sweepOrphans runs one sweep with the clock past the temp files' grace
// period and requires that it leaves no temp file anywhere in the store.
func sweepOrphans(t *testing.T, s *Store) {
	t.Helper()
	now := s.now
	s.now = func() time.Time { return time.Now().Add(2 * staleTempAge) }
	defer func() { s.now = now }()
	_, err := s.DeleteExpired(bg)
	require.NoError(t, err)
	requireNoTempFiles(t, s.Dir())
}

// TestCrashRandomKill runs 1,000 trials (100 with -short) in two lanes,
// each lane a store of its own: start a worker, let it run for a random
// 0-30 ms, SIGKILL it, and check what it left.
func TestCrashRandomKill(t *testing.T) {
	trials := 500 // per lane
	if testing.Short() {
		trials = 50
	}
	for lane := range 2 {
		t.Run(fmt.Sprintf("lane%d", lane), func(t *testing.T) {
			if dir, _, ok := worker(t); ok {
				crashWorker(dir)
				return
			}
			t.Parallel()
			randomKillLane(t, trials)
		})
	}
}

func randomKillLane(t *testing.T, trials int) {
	s := openTest(t, nil)
	dir := s.Dir()
	state := map[string]string{crashCounter: "-"} // what each id must hold
	for _, id := range crashIDs {
		state[id] = "-"
	}
	var acked, orphans, inFlight int
	for trial := range trials {
		cmd, out := startWorker(t, dir, "")
		lines := make(chan string)
		go func() {
			sc := bufio.NewScanner(out)
			for sc.Scan() {
				lines <- sc.Text()
			}
			close(lines)
		}()
		require.Equal(t, "ack ready", <-lines, "trial %d", trial)
		time.Sleep(time.Duration(rand.IntN(30000)) * time.Microsecond)
		require.NoError(t, cmd.Process.Signal(syscall.SIGKILL))
		var pendID, pendVal string
		for l := range lines {
			if v, ok := strings.CutPrefix(l, "try "); ok {
				pendID, pendVal, _ = strings.Cut(v, " ")
				continue
			}
			if l == "ack" && pendID != "" {
				state[pendID] = pendVal
				pendID = ""
				acked++
			}
		}
		var exit *exec.ExitError
		require.ErrorAs(t, cmd.Wait(), &exit, "trial %d: the worker must die by the signal", trial)
		require.Equal(t, syscall.SIGKILL, exit.Sys().(syscall.WaitStatus).Signal(), "trial %d", trial)

		// Every record is the acknowledged value, or the value of the one
		// operation in flight; never torn, never anything else.
		for id, want := range state {
			got := loadValue(t, s, id)
			if got != want {
				require.True(t, id == pendID && got == pendVal,
					"trial %d: %s holds %q; acknowledged %q, in flight %q", trial, id, got, want, pendVal)
				state[id] = got
				inFlight++
			}
		}
		require.NoError(t, s.ForEach(bg, func(Record) error { return nil }), "trial %d", trial)
		requireLocksFree(t, s, fmt.Sprintf("trial %d", trial))
	}
	require.Positive(t, acked, "the worker never got an operation through")
	orphans = len(tempFiles(t, dir))
	sweepOrphans(t, s)
	for id, want := range state {
		require.Equal(t, want, loadValue(t, s, id), "the sweep changed %s", id)
	}
	t.Logf("%d kills: %d operations acknowledged, 0 lost, %d in-flight operations landed, %d orphaned temp files swept",
		trials, acked, inFlight, orphans)
}

// hookPoints lists every hook point of the write protocols.
var hookPoints = []string{hookTempCreated, hookWritten, hookSynced, hookClosed, hookRenamed, hookDirSynced, hookUnlinked}

// crashScenario is one operation killed at each of its hook calls in turn.
type crashScenario struct {
	setup func(s *Store) error // the acknowledged state before the operation
	op    func(s *Store) error
	id    string
	old   string // the record's value before op ("-" for none)
	new   string // and after it
	// state, if set, replaces loadValue: an expired record loads as "-"
	// whether or not its file is there.
	state func(s *Store) string
	short bool // run with -short too
}

// fileState is "old" while the record file for c-id exists, else "-".
func fileState(s *Store) string {
	r, _ := s.refOf("c-id")
	if _, err := os.Lstat(r.path()); err == nil {
		return "old"
	}
	return "-"
}

var crashScenarios = map[string]crashScenario{
	"save new shard": {
		op: func(s *Store) error { return s.Save(bg, "c-id", []byte("new"), time.Time{}) },
		id: "c-id", old: "-", new: "new", short: true,
	},
	"save over": {
		setup: func(s *Store) error { return s.Save(bg, "c-id", []byte("old"), time.Time{}) },
		op:    func(s *Store) error { return s.Save(bg, "c-id", []byte("new"), time.Time{}) },
		id:    "c-id", old: "old", new: "new",
	},
	"save compressed": {
		setup: func(s *Store) error { return s.Save(bg, "c-id", []byte("old"), time.Time{}) },
		op: func(s *Store) error {
			s.opts.Compress = true
			return s.Save(bg, "c-id", []byte("new "+strings.Repeat("z", 4096)), time.Time{})
		},
		id: "c-id", old: "old", new: "new",
	},
	"update": {
		setup: func(s *Store) error { return s.Save(bg, "c-id", []byte("old"), time.Time{}) },
		op: func(s *Store) error {
			return s.Update(bg, "c-id", func(cur *Record) (*Record, error) {
				return &Record{Data: []byte("new")}, nil
			})
		},
		id: "c-id", old: "old", new: "new",
	},
	"update delete": {
		setup: func(s *Store) error { return s.Save(bg, "c-id", []byte("old"), time.Time{}) },
		op: func(s *Store) error {
			return s.Update(bg, "c-id", func(cur *Record) (*Record, error) { return nil, nil })
		},
		id: "c-id", old: "old", new: "-",
	},
	"delete": {
		setup: func(s *Store) error { return s.Save(bg, "c-id", []byte("old"), time.Time{}) },
		op:    func(s *Store) error { return s.Delete(bg, "c-id") },
		id:    "c-id", old: "old", new: "-", short: true,
	},
	"sweep": {
		setup: func(s *Store) error { return s.Save(bg, "c-id", []byte("old"), time.Now().Add(-time.Hour)) },
		op:    func(s *Store) error { _, err := s.DeleteExpired(bg); return err },
		id:    "c-id", old: "old", new: "-", state: fileState,
	},
}

// TestCrashAtEveryStep kills a worker at the 1st, 2nd, ... hook call of
// each operation (Save, Update, Delete and the sweeper's delete) until the
// operation completes. A process crash loses no
// page cache, so the oracle is exact: before the rename (or unlink) the
// record is the old one, from it on the new one.
func TestCrashAtEveryStep(t *testing.T) {
	if dir, arg, ok := worker(t); ok {
		name, kStr, _ := strings.Cut(arg, "|")
		k, _ := strconv.Atoi(kStr)
		s := workerStore(dir, nil)
		hits := 0
		s.hook = func(point string) {
			if hits++; hits == k {
				fmt.Printf("ack killed %s\n", point)
				_ = syscall.Kill(os.Getpid(), syscall.SIGKILL)
				select {} // the signal is on its way
			}
		}
		if err := crashScenarios[name].op(s); err != nil {
			fail("op: %v", err)
		}
		fmt.Println("ack done")
		return
	}

	killed := map[string]int{}
	runs := 0
	for name, sc := range crashScenarios {
		if testing.Short() && !sc.short {
			continue // the short ones still reach every hook point
		}
		value := func(s *Store) string { return loadValue(t, s, sc.id) }
		if sc.state != nil {
			value = sc.state
		}
		for k := 1; ; k++ {
			s := openTest(t, nil)
			if sc.setup != nil {
				require.NoError(t, sc.setup(s))
			}
			cmd, out := startWorker(t, s.Dir(), name+"|"+strconv.Itoa(k))
			a := acks(out)
			err := cmd.Wait()
			runs++
			require.Len(t, a, 1, "%s, hook call %d", name, k)
			got := value(s)
			if a[0] == "done" {
				require.NoError(t, err)
				require.Equal(t, sc.new, got, "%s: acknowledged", name)
				require.Greater(t, k, 1, "%s passed no hook", name)
				requireNoTempFiles(t, s.Dir())
				s.Close()
				break
			}
			point, ok := strings.CutPrefix(a[0], "killed ")
			require.True(t, ok, a[0])
			var exit *exec.ExitError
			require.ErrorAs(t, err, &exit)
			require.Equal(t, syscall.SIGKILL, exit.Sys().(syscall.WaitStatus).Signal())
			killed[point]++

			want := sc.old
			if point == hookRenamed || point == hookUnlinked || point == hookDirSynced {
				want = sc.new
			}
			require.Equal(t, want, got, "%s, killed at %s (hook call %d)", name, point, k)
			require.NoError(t, s.ForEach(bg, func(Record) error { return nil }))
			requireLocksFree(t, s, fmt.Sprintf("%s at %s", name, point))
			sweepOrphans(t, s)
			if sc.state == nil {
				require.Equal(t, want, value(s), "the sweep changed the record")
			}
			// The store still works.
			require.NoError(t, s.Save(bg, sc.id, []byte("after"), time.Time{}))
			require.Equal(t, "after", loadValue(t, s, sc.id))
			s.Close()
		}
	}
	for _, p := range hookPoints {
		require.Positive(t, killed[p], "no kill at %s", p)
	}
	t.Logf("%d runs; kills per hook point: %v", runs, killed)
}

// killFS is the real filesystem, but it SIGKILLs the process right after
// its k-th mutating call. Open has no hook points; this covers the crash
// points of creating a store.
type killFS struct {
	osFS
	k, calls *int
}

func (f killFS) after(call string) {
	if *f.calls++; *f.calls == *f.k {
		fmt.Printf("ack killed %s\n", call)
		_ = syscall.Kill(os.Getpid(), syscall.SIGKILL)
		select {}
	}
}

func (f killFS) OpenFile(name string, flag int, perm fs.FileMode) (file, error) {
	fl, err := f.osFS.OpenFile(name, flag, perm)
	if flag&os.O_CREATE != 0 {
		f.after("create " + filepath.Base(name))
	}
	return fl, err
}

func (f killFS) Link(oldname, newname string) error {
	err := f.osFS.Link(oldname, newname)
	f.after("link")
	return err
}

func (f killFS) Remove(name string) error {
	err := f.osFS.Remove(name)
	f.after("remove")
	return err
}

func (f killFS) Mkdir(name string, perm fs.FileMode) error {
	err := f.osFS.Mkdir(name, perm)
	f.after("mkdir " + filepath.Base(name))
	return err
}

// TestCrashCreatingStore kills a process creating a store after each of
// its filesystem changes in turn: every state it leaves opens as a working
// store, and one sweep leaves no temp file.
func TestCrashCreatingStore(t *testing.T) {
	if dir, arg, ok := worker(t); ok {
		k, _ := strconv.Atoi(arg)
		calls := 0
		s, err := open(dir, &Options{SweepInterval: -1}, killFS{k: &k, calls: &calls})
		if err != nil {
			fail("open: %v", err)
		}
		_ = s.Close()
		fmt.Println("ack done")
		return
	}
	var points []string
	for k := 1; ; k++ {
		dir := filepath.Join(t.TempDir(), "store")
		cmd, out := startWorker(t, dir, strconv.Itoa(k))
		a := acks(out)
		err := cmd.Wait()
		require.Len(t, a, 1)
		if a[0] == "done" {
			require.NoError(t, err)
			require.Greater(t, k, 3)
			break
		}
		points = append(points, strings.TrimPrefix(a[0], "killed "))
		s, err := Open(dir, &Options{SweepInterval: -1})
		require.NoError(t, err, "after a kill at %s", points[len(points)-1])
		require.NoError(t, s.Save(bg, "id", []byte("x"), time.Time{}))
		require.Equal(t, "x", loadValue(t, s, "id"))
		// A sweep spares a temp file young enough to be a live creator's,
		// and one past the grace period removes it.
		if n := len(tempFiles(t, dir)); n > 0 {
			_, err := s.DeleteExpired(bg)
			require.NoError(t, err)
			require.Len(t, tempFiles(t, dir), n)
		}
		sweepOrphans(t, s)
		require.NoError(t, s.Close())
	}
	t.Logf("killed after: %s", strings.Join(points, ", "))
}
