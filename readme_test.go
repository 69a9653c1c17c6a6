package filestore_test

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestReadmeQuickStart builds the README's quick start program the way the
// README tells a user to before the first release: in a fresh module that
// requires this one through a replace of a clone. The program must compile
// and pass go vet as printed.
func TestReadmeQuickStart(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the go command")
	}
	goBin, err := exec.LookPath("go")
	if err != nil {
		t.Skip("no go command on PATH")
	}
	root, err := filepath.Abs(".")
	if err != nil {
		t.Fatal(err)
	}
	readme, err := os.ReadFile(filepath.Join(root, "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	prog := firstBlock(t, string(readme), "## Quick start", "```go\n")

	app := t.TempDir()
	write := func(name, content string) {
		if err := os.WriteFile(filepath.Join(app, name), []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	write("main.go", prog)
	// The dependencies' checksums, so that nothing is looked up: the module
	// cache has what this test binary was built from.
	sums, err := os.ReadFile(filepath.Join(root, "go.sum"))
	if err != nil {
		t.Fatal(err)
	}
	write("go.sum", string(sums))
	run := func(args ...string) {
		t.Helper()
		cmd := exec.Command(goBin, args...)
		cmd.Dir = app
		cmd.Env = append(os.Environ(), "GOWORK=off", "GOFLAGS=-mod=mod", "GOPROXY=off")
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("go %s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
	run("mod", "init", "example.com/quickstart")
	run("mod", "edit", "-require=github.com/filestore-go/filestore@v0.0.0",
		"-replace=github.com/filestore-go/filestore="+root)
	run("mod", "tidy")
	run("vet", ".")
	run("build", "-o", os.DevNull, ".")
}

// firstBlock returns the body of the first fenced block opened by fence
// after the line heading in md.
func firstBlock(t *testing.T, md, heading, fence string) string {
	t.Helper()
	_, rest, ok := strings.Cut(md, "\n"+heading+"\n")
	if !ok {
		t.Fatalf("README has no %q section", heading)
	}
	_, rest, ok = strings.Cut(rest, fence)
	if !ok {
		t.Fatalf("no %q block under %q", fence, heading)
	}
	body, _, ok := strings.Cut(rest, "\n```")
	if !ok {
		t.Fatalf("unterminated block under %q", heading)
	}
	return body + "\n"
}
