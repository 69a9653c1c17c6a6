package main

import (
	"context"
	"fmt"
	"slices"
	"strings"

	"github.com/filestore-go/filestore"
	"github.com/spf13/cobra"
)

func init() { commands = append(commands, newVerify) }

// finding is one file with problems, as verify reports it.
type finding struct {
	Path     string   `json:"path"` // holds the key for a record or temp file, never an id
	Key      string   `json:"key,omitempty"`
	State    string   `json:"state"`
	Problems []string `json:"problems"`
	Detail   string   `json:"detail,omitempty"`

	fi filestore.FileInfo
}

// repairResult is what Repair did to one finding.
type repairResult struct {
	Path   string `json:"path"`
	Action string `json:"action,omitempty"`
	Error  string `json:"error,omitempty"`
}

// verifyReport is verify's --json output.
type verifyReport struct {
	Checked  int            `json:"checked"`
	Problems []finding      `json:"problems"`
	Repairs  []repairResult `json:"repairs,omitempty"`
	// Remaining is what a scan after the repairs still found; only with
	// --repair.
	Remaining *[]finding `json:"remaining,omitempty"`
}

func newVerify(e *env) *cobra.Command {
	var repair bool
	c := &cobra.Command{
		Use:   "verify DIR",
		Short: "Check every file of a store, and optionally repair what it finds",
		Long: `verify reads every file of the store (a full read, no locks taken) and
reports corrupt records, records in the wrong shard directory, files the
store did not create (foreign), files and directories with permission bits
other than the store's own, and stale temp files of writers that died.

With --repair it fixes each problem through the store, safely while the
application runs: a corrupt or misplaced record is moved into the store's
quarantine directory (never deleted), modes are set to the store's own and
stale temp files are removed. Foreign files are reported and never touched.
It then checks the store again and reports what remains.

Exit status 1 while problems remain.`,
		Args: cobra.ExactArgs(1),
	}
	c.Flags().BoolVar(&e.jsonOut, "json", false, "print JSON")
	c.Flags().BoolVar(&repair, "repair", false, "repair what can be repaired (quarantine, fix modes, remove stale temp files)")
	c.RunE = func(c *cobra.Command, args []string) (err error) {
		ctx := c.Context()
		s, err := openStore(args[0])
		if err != nil {
			return err
		}
		defer closeStore(s, &err)
		var r verifyReport
		r.Checked, r.Problems, err = e.check(ctx, s, "checking")
		if err != nil {
			return err
		}
		left := r.Problems
		if repair && len(r.Problems) > 0 {
			bar := e.newProgress(int64(len(r.Problems)), "repairing")
			for _, f := range r.Problems {
				res := repairResult{Path: f.Path}
				action, err := s.Repair(ctx, f.fi)
				if err != nil {
					if ctx.Err() != nil {
						return ctx.Err()
					}
					res.Error = oneLine(err.Error())
				}
				res.Action = action
				r.Repairs = append(r.Repairs, res)
				bar.Add(1)
			}
			bar.Finish()
			_, left, err = e.check(ctx, s, "checking again")
			if err != nil {
				return err
			}
		}
		if repair {
			if left == nil {
				left = []finding{}
			}
			r.Remaining = &left
		}
		if e.jsonOut {
			if r.Problems == nil {
				r.Problems = []finding{}
			}
			if err := e.writeJSON(r); err != nil {
				return err
			}
		} else if err := e.printVerify(&r, repair); err != nil {
			return err
		}
		switch {
		case len(left) > 0 && repair:
			if len(left) == 1 {
				return problems("1 file with problems remains after repair")
			}
			return problems("%d files with problems remain after repair", len(left))
		case len(left) > 0:
			return problems("%s with problems", plural(len(left), "file"))
		}
		return nil
	}
	return c
}

// check scans s and returns how many files it saw and those with
// problems, sorted by path.
func (e *env) check(ctx context.Context, s *filestore.Store, what string) (int, []finding, error) {
	bar := e.newProgress(-1, what)
	defer bar.Finish()
	n := 0
	var found []finding
	err := s.Scan(ctx, func(fi filestore.FileInfo) error {
		n++
		bar.Add(1)
		if f, ok := problemsOf(fi); ok {
			found = append(found, f)
		}
		return nil
	})
	slices.SortFunc(found, func(a, b finding) int { return strings.Compare(a.Path, b.Path) })
	return n, found, err
}

// problemsOf says what is wrong with fi, if anything.
func problemsOf(fi filestore.FileInfo) (finding, bool) {
	f := finding{Path: fi.Path, Key: fi.Key, State: fi.State.String(), fi: fi}
	var detail []string
	switch fi.State {
	case filestore.FileCorrupt:
		f.Problems = append(f.Problems, "corrupt")
		if fi.Err != nil {
			detail = append(detail, reason(fi))
		}
	case filestore.FileMisplaced:
		f.Problems = append(f.Problems, "misplaced")
		detail = append(detail, "a valid record in another shard's directory: reads cannot find it")
	case filestore.FileForeign:
		f.Problems = append(f.Problems, "foreign")
		detail = append(detail, "not created by the store: left alone")
	case filestore.FileTemp:
		if fi.Stale {
			f.Problems = append(f.Problems, "stale-temp")
			detail = append(detail, "temp file of a writer that died")
		}
	}
	if fi.BadMode {
		f.Problems = append(f.Problems, "bad-mode")
		detail = append(detail, fmt.Sprintf("mode %v", fi.Mode))
	}
	f.Detail = strings.Join(detail, "; ")
	return f, len(f.Problems) > 0
}

func (e *env) printVerify(r *verifyReport, repair bool) error {
	fmt.Fprintf(e.stdout, "checked %s: %d with problems\n", plural(r.Checked, "file"), len(r.Problems))
	if err := e.printFindings(r.Problems); err != nil {
		return err
	}
	if !repair || len(r.Problems) == 0 {
		return nil
	}
	fmt.Fprintln(e.stdout, "repairs:")
	w := e.table()
	for _, res := range r.Repairs {
		if res.Error != "" {
			fmt.Fprintf(w, "  %s\tfailed: %s\n", res.Path, res.Error)
		} else {
			fmt.Fprintf(w, "  %s\t%s\n", res.Path, res.Action)
		}
	}
	if err := w.Flush(); err != nil {
		return err
	}
	left := *r.Remaining
	if len(left) == 0 {
		fmt.Fprintln(e.stdout, "checked again: no problems remain")
		return nil
	}
	verb := "remain"
	if len(left) == 1 {
		verb = "remains"
	}
	fmt.Fprintf(e.stdout, "checked again: %d with problems %s\n", len(left), verb)
	return e.printFindings(left)
}

func (e *env) printFindings(fs []finding) error {
	if len(fs) == 0 {
		return nil
	}
	w := e.table()
	fmt.Fprintln(w, "PATH\tPROBLEM\tDETAIL")
	for _, f := range fs {
		fmt.Fprintf(w, "%s\t%s\t%s\n", f.Path, strings.Join(f.Problems, ","), f.Detail)
	}
	return w.Flush()
}

// reason is why fi is corrupt, without the path its line already shows.
func reason(fi filestore.FileInfo) string {
	return oneLine(strings.TrimPrefix(fi.Err.Error(), fi.Path+": "))
}
