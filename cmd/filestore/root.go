package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/spf13/cobra"
)

// env is what every command writes to and reads from, so that tests can run
// the tool in-process.
type env struct {
	stdin          io.Reader
	stdout, stderr io.Writer
	showIDs        bool // --show-ids: print raw session ids
	jsonOut        bool // --json
}

// run executes the command line args and returns the exit status.
func run(args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	e := &env{stdin: stdin, stdout: stdout, stderr: stderr}
	root := newRoot(e)
	root.SetArgs(args)
	root.SetIn(stdin)
	root.SetOut(stdout)
	root.SetErr(stderr)
	// SIGINT and SIGTERM end a command's context: a long command stops
	// where it is and says so, and watch ends with status 0.
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	err := root.ExecuteContext(ctx)
	if err == nil {
		return 0
	}
	var ee *exitError
	if errors.As(err, &ee) {
		if ee.code != 1 || ee.err.Error() != "" {
			fmt.Fprintln(stderr, "filestore: "+oneLine(ee.err.Error()))
		}
		return ee.code
	}
	if isUsage(err) {
		fmt.Fprintln(stderr, "filestore: "+oneLine(err.Error()))
		fmt.Fprintln(stderr, "Run 'filestore --help' for usage.")
		return 2
	}
	fmt.Fprintln(stderr, "filestore: "+oneLine(err.Error()))
	return 1
}

// usageError marks an error in the command line itself: exit status 2.
type usageError struct{ err error }

func (e usageError) Error() string { return e.err.Error() }

func usagef(format string, args ...any) error { return usageError{fmt.Errorf(format, args...)} }

// isUsage reports whether err is a command-line error: ours, or one of
// cobra's (unknown command or flag, wrong number of arguments).
func isUsage(err error) bool {
	var u usageError
	if errors.As(err, &u) {
		return true
	}
	msg := err.Error()
	for _, p := range []string{"unknown command", "unknown flag", "unknown shorthand flag", "accepts ", "requires at least", "invalid argument", "flag needs an argument", "required flag"} {
		if strings.Contains(msg, p) {
			return true
		}
	}
	return false
}

// oneLine folds an error onto one line, as the tool promises, without the
// library's own "filestore: " prefixes, since run adds the tool's.
func oneLine(s string) string {
	s = strings.ReplaceAll(strings.Join(strings.Fields(s), " "), ": filestore: ", ": ")
	for {
		t := strings.TrimPrefix(s, "filestore: ")
		if t == s {
			return s
		}
		s = t
	}
}

func newRoot(e *env) *cobra.Command {
	root := &cobra.Command{
		Use:   "filestore",
		Short: "Inspect and maintain a filestore session directory",
		Long: `filestore inspects and maintains a filestore session directory, safely
while the application's processes use it.

Sessions are named by their key: the SHA-256 of the session id, which is
also the record's file name. Session ids are bearer secrets; no command
prints one unless given --show-ids.

Exit status: 0 ok, 1 problems found or partial failure, 2 usage error.`,
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.PersistentFlags().BoolVar(&e.showIDs, "show-ids", false, "print raw session ids (bearer secrets: anyone who reads them can use the sessions)")
	root.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { return usageError{err} })
	for _, add := range commands {
		root.AddCommand(add(e))
	}
	return root
}

// commands are the subcommands; each file adds its own in an init.
var commands []func(*env) *cobra.Command
