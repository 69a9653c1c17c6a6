package main

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/filestore-go/filestore"
	"github.com/rogpeppe/go-internal/testscript"
)

// TestMain makes the test binary the filestore command too: scripts run
// "filestore" as a separate process, through main's own code path.
func TestMain(m *testing.M) {
	testscript.Main(m, map[string]func(){
		"filestore": func() { os.Exit(run(os.Args[1:], os.Stdin, os.Stdout, os.Stderr)) },
	})
}

func TestScripts(t *testing.T) {
	testscript.Run(t, testscript.Params{
		Dir:                 "testdata/script",
		RequireExplicitExec: true,
		Cmds: map[string]func(ts *testscript.TestScript, neg bool, args []string){
			"status":    cmdStatus,
			"mkstore":   cmdMkstore,
			"save":      cmdSave,
			"populate":  cmdPopulate,
			"keyof":     cmdKeyof,
			"plant":     cmdPlant,
			"loads":     cmdLoads,
			"mode":      cmdMode,
			"cmpsorted": cmdCmpsorted,
		},
	})
}

// status CODE PROG ARGS... runs PROG and checks its exit status is CODE;
// stdout and stderr are kept for the commands that follow, as exec does.
func cmdStatus(ts *testscript.TestScript, neg bool, args []string) {
	if neg || len(args) < 2 {
		ts.Fatalf("usage: status CODE PROG [ARGS...]")
	}
	want, err := strconv.Atoi(args[0])
	ts.Check(err)
	err = ts.Exec(args[1], args[2:]...)
	got := 0
	var xe *exec.ExitError
	switch {
	case errors.As(err, &xe):
		got = xe.ExitCode()
	case err != nil:
		ts.Fatalf("%s: %v", args[1], err)
	}
	if got != want {
		ts.Fatalf("%s exited with status %d, want %d", args[1], got, want)
	}
}

// openFor opens the store in dir (a script path) for a helper command.
func openFor(ts *testscript.TestScript, dir string, opts *filestore.Options) *filestore.Store {
	if opts == nil {
		opts = &filestore.Options{}
	}
	opts.SweepInterval = -1
	s, err := filestore.Open(ts.MkAbs(dir), opts)
	ts.Check(err)
	return s
}

// mkstore DIR [LAYOUT] creates a store through the library.
func cmdMkstore(ts *testscript.TestScript, neg bool, args []string) {
	if neg || len(args) < 1 || len(args) > 2 {
		ts.Fatalf("usage: mkstore DIR [LAYOUT]")
	}
	opts := &filestore.Options{}
	if len(args) == 2 {
		opts.Layout = args[1]
	}
	ts.Check(openFor(ts, args[0], opts).Close())
}

// payload returns the data a script names: "rep:N:TEXT" is TEXT N times,
// "hex:HEX" the bytes HEX spells, "@FILE" the contents of FILE, anything
// else itself.
func payload(ts *testscript.TestScript, spec string) []byte {
	if h, ok := strings.CutPrefix(spec, "hex:"); ok {
		b, err := hex.DecodeString(h)
		ts.Check(err)
		return b
	}
	if rest, ok := strings.CutPrefix(spec, "rep:"); ok {
		n, text, _ := strings.Cut(rest, ":")
		count, err := strconv.Atoi(n)
		ts.Check(err)
		return []byte(strings.Repeat(text, count))
	}
	if name, ok := strings.CutPrefix(spec, "@"); ok {
		b, err := os.ReadFile(ts.MkAbs(name))
		ts.Check(err)
		return b
	}
	return []byte(spec)
}

// expiryIn turns "never" or a duration from now ("1h", "-1h") into an
// expiry.
func expiryIn(ts *testscript.TestScript, s string) time.Time {
	if s == "never" {
		return time.Time{}
	}
	d, err := time.ParseDuration(s)
	ts.Check(err)
	return time.Now().Add(d)
}

// save DIR ID DATA [TTL|never] [compress] saves one session through the
// library; DATA as payload reads it.
func cmdSave(ts *testscript.TestScript, neg bool, args []string) {
	if neg || len(args) < 3 || len(args) > 5 {
		ts.Fatalf("usage: save DIR ID DATA [TTL|never] [compress]")
	}
	opts := &filestore.Options{}
	if len(args) == 5 {
		if args[4] != "compress" {
			ts.Fatalf("save: unknown option %q", args[4])
		}
		opts.Compress = true
	}
	expiry := time.Time{}
	if len(args) >= 4 {
		expiry = expiryIn(ts, args[3])
	}
	s := openFor(ts, args[0], opts)
	defer s.Close()
	ts.Check(s.Save(context.Background(), args[1], payload(ts, args[2]), expiry))
}

// populate DIR LIVE EXPIRED saves LIVE sessions live-0... that expire in
// an hour, and EXPIRED sessions expired-0... that expired an hour ago.
func cmdPopulate(ts *testscript.TestScript, neg bool, args []string) {
	if neg || len(args) != 3 {
		ts.Fatalf("usage: populate DIR LIVE EXPIRED")
	}
	live, err := strconv.Atoi(args[1])
	ts.Check(err)
	expired, err := strconv.Atoi(args[2])
	ts.Check(err)
	s := openFor(ts, args[0], nil)
	defer s.Close()
	ctx := context.Background()
	for i := range live {
		ts.Check(s.Save(ctx, fmt.Sprintf("live-%d", i), fmt.Appendf(nil, "payload of live-%d", i), time.Now().Add(time.Hour)))
	}
	for i := range expired {
		ts.Check(s.Save(ctx, fmt.Sprintf("expired-%d", i), fmt.Appendf(nil, "payload of expired-%d", i), time.Now().Add(-time.Hour)))
	}
}

// keyof VAR ID sets $VAR to the key of session ID.
func cmdKeyof(ts *testscript.TestScript, neg bool, args []string) {
	if neg || len(args) != 2 {
		ts.Fatalf("usage: keyof VAR ID")
	}
	ts.Setenv(args[0], filestore.Key(args[1]))
}

// scanFor returns what Scan reports of every file of the store in dir.
func scanFor(ts *testscript.TestScript, dir string) []filestore.FileInfo {
	s := openFor(ts, dir, nil)
	defer s.Close()
	var all []filestore.FileInfo
	ts.Check(s.Scan(context.Background(), func(fi filestore.FileInfo) error {
		all = append(all, fi)
		return nil
	}))
	return all
}

// recordOf returns the Scan entry of session id's record.
func recordOf(ts *testscript.TestScript, all []filestore.FileInfo, id string) filestore.FileInfo {
	key := filestore.Key(id)
	for _, fi := range all {
		if fi.Key == key && fi.State != filestore.FileTemp {
			return fi
		}
	}
	ts.Fatalf("no record for the session in the store")
	return filestore.FileInfo{}
}

// plant DIR KIND [ID|NAME] damages a store as operators find them:
//
//	corrupt ID    overwrite ID's record file with garbage
//	misplaced ID  move ID's record file into another shard directory
//	badmode ID    make ID's record file readable by everyone
//	temp ID       a temp file for ID's record, a day old (stale)
//	freshtemp ID  a temp file for ID's record, written just now
//	foreign NAME  a file NAME (relative to the store) it did not create
//
// Record files are found through Scan, the way an operator finds them
// through "filestore ls --json".
func cmdPlant(ts *testscript.TestScript, neg bool, args []string) {
	if neg || len(args) != 3 {
		ts.Fatalf("usage: plant DIR KIND ID|NAME")
	}
	root := ts.MkAbs(args[0])
	kind, arg := args[1], args[2]
	if kind == "foreign" {
		p := filepath.Join(root, filepath.FromSlash(arg))
		ts.Check(os.MkdirAll(filepath.Dir(p), 0o700))
		ts.Check(os.WriteFile(p, []byte("not a record\n"), 0o600))
		return
	}
	all := scanFor(ts, args[0])
	rec := recordOf(ts, all, arg)
	p := filepath.Join(root, filepath.FromSlash(rec.Path))
	switch kind {
	case "corrupt":
		ts.Check(os.WriteFile(p, []byte("garbage, not a record"), 0o600))
	case "badmode":
		ts.Check(os.Chmod(p, 0o644))
	case "misplaced":
		own := filepath.ToSlash(filepath.Dir(rec.Path))
		for _, fi := range all {
			if fi.State == filestore.FileShard && fi.Path != own && !strings.HasPrefix(own, fi.Path+"/") {
				ts.Check(os.Rename(p, filepath.Join(root, filepath.FromSlash(fi.Path), rec.Key)))
				return
			}
		}
		ts.Fatalf("no other shard directory to move the record to")
	case "temp", "freshtemp":
		tmp := filepath.Join(filepath.Dir(p), ".tmp-"+rec.Key+"-xyz")
		ts.Check(os.WriteFile(tmp, []byte("half a record"), 0o600))
		if kind == "temp" {
			old := time.Now().Add(-24 * time.Hour)
			ts.Check(os.Chtimes(tmp, old, old))
		}
	default:
		ts.Fatalf("plant: unknown kind %q", kind)
	}
}

// loads DIR ID [DATA] checks that session ID loads, with DATA (as payload
// reads it) if given; "! loads DIR ID" that it does not.
func cmdLoads(ts *testscript.TestScript, neg bool, args []string) {
	if len(args) < 2 || len(args) > 3 {
		ts.Fatalf("usage: [!] loads DIR ID [DATA]")
	}
	s := openFor(ts, args[0], nil)
	defer s.Close()
	rec, err := s.Load(context.Background(), args[1])
	switch {
	case neg && errors.Is(err, filestore.ErrNotFound):
		return
	case neg && err == nil:
		ts.Fatalf("the session loads")
	case err != nil:
		ts.Fatalf("load: %v", err)
	case len(args) == 3 && string(rec.Data) != string(payload(ts, args[2])):
		ts.Fatalf("loaded %q, want %q", rec.Data, payload(ts, args[2]))
	}
}

// mode FILE PERM checks FILE's permission bits, in octal.
func cmdMode(ts *testscript.TestScript, neg bool, args []string) {
	if neg || len(args) != 2 {
		ts.Fatalf("usage: mode FILE PERM")
	}
	want, err := strconv.ParseUint(args[1], 8, 32)
	ts.Check(err)
	fi, err := os.Lstat(ts.MkAbs(args[0]))
	ts.Check(err)
	if got := fi.Mode().Perm(); got != os.FileMode(want) {
		ts.Fatalf("%s has mode %#o, want %#o", args[0], got, want)
	}
}

// cmpsorted A B checks that files A and B hold the same lines, in any
// order.
func cmdCmpsorted(ts *testscript.TestScript, neg bool, args []string) {
	if neg || len(args) != 2 {
		ts.Fatalf("usage: cmpsorted A B")
	}
	lines := func(name string) []string {
		b, err := os.ReadFile(ts.MkAbs(name))
		ts.Check(err)
		l := strings.Split(strings.TrimSuffix(string(b), "\n"), "\n")
		slices.Sort(l)
		return l
	}
	a, b := lines(args[0]), lines(args[1])
	if !slices.Equal(a, b) {
		ts.Fatalf("%s and %s differ:\n%s\n---\n%s", args[0], args[1], strings.Join(a, "\n"), strings.Join(b, "\n"))
	}
}
