// Command filestore inspects and maintains a filestore session directory:
// counts and sizes, listing, one session's record, an expiry sweep, a
// consistency check with repair, export and import as JSON lines, moving to
// another shard layout, and a feed of changes.
//
// Every command goes through the filestore library and its locks, so it is
// safe to run while the application's processes use the store. Sessions are
// named by their key (the SHA-256 of the id, the record's file name); a raw
// id, which is a bearer secret, is shown only where a command says so.
//
// Exit status: 0 ok, 1 problems found or partial failure, 2 usage error.
package main

import (
	"fmt"
	"os"
)

func main() {
	os.Exit(run(os.Args[1:], os.Stdin, os.Stdout, os.Stderr))
}

// exitError carries an exit status out of a command. Its message, if any,
// has already been printed when code is 1; run prints it otherwise.
type exitError struct {
	code int
	err  error
}

func (e *exitError) Error() string { return e.err.Error() }
func (e *exitError) Unwrap() error { return e.err }

// problems is the error a command returns when it finished but found (or
// left) problems: exit status 1 after its own report.
func problems(format string, args ...any) error {
	return &exitError{code: 1, err: fmt.Errorf(format, args...)}
}
