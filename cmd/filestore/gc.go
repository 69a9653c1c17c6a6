package main

import (
	"errors"
	"fmt"
	"time"

	"github.com/filestore-go/filestore"
	"github.com/spf13/cobra"
)

func init() { commands = append(commands, newGC) }

// gcReport is the summary gc prints.
type gcReport struct {
	Removed int     `json:"removed"`
	Kept    int     `json:"kept"`
	Temps   int     `json:"temps"`
	Dirs    int     `json:"dirs"`
	Seconds float64 `json:"seconds"`
}

func newGC(e *env) *cobra.Command {
	c := &cobra.Command{
		Use:   "gc DIR",
		Short: "Run one expiry sweep now",
		Long: `gc runs one expiry sweep now, as the application's background sweeper
does: it removes expired records and the temp files of writers that died.
It is safe while the application runs: it takes each record's lock and
checks its expiry again under it, so a session refreshed meanwhile stays,
and it waits while another process sweeps. It never removes corrupt
records or files the store did not create (see verify).`,
		Args: cobra.ExactArgs(1),
	}
	c.Flags().BoolVar(&e.jsonOut, "json", false, "print the summary as JSON")
	c.RunE = func(c *cobra.Command, args []string) (err error) {
		s, err := openStore(args[0])
		if err != nil {
			return err
		}
		defer closeStore(s, &err)
		var bar *progress
		start := time.Now()
		st, err := s.Sweep(c.Context(), func(st filestore.SweepStats) {
			if bar == nil {
				bar = e.newProgress(int64(st.Shards), "sweeping")
			}
			bar.Set(int64(st.Dirs))
		})
		if bar != nil {
			bar.Finish()
		}
		r := gcReport{Removed: st.Removed, Kept: st.Kept, Temps: st.Temps, Dirs: st.Dirs, Seconds: time.Since(start).Seconds()}
		if e.jsonOut {
			if jerr := e.writeJSON(r); jerr != nil {
				return jerr
			}
		} else {
			fmt.Fprintf(e.stdout, "removed %d expired, kept %d, reclaimed %s, in %s, %s\n",
				r.Removed, r.Kept, plural(r.Temps, "temp file"), plural(r.Dirs, "directory", "directories"), time.Duration(r.Seconds*float64(time.Second)).Round(time.Millisecond))
		}
		switch {
		case err == nil:
			return nil
		case c.Context().Err() != nil:
			return problems("sweep interrupted: the summary above is what it did")
		}
		// Errors on single files (corrupt records, which the sweep never
		// removes, or I/O errors) do not stop a sweep: the summary above
		// is what it did. Each goes on its own line.
		errs := []error{err}
		var joined interface{ Unwrap() []error }
		if errors.As(err, &joined) {
			errs = joined.Unwrap()
		}
		for _, err := range errs {
			e.warnf("%s", oneLine(err.Error()))
		}
		return problems("the sweep skipped %s it could not handle; 'filestore verify %s' reports them", plural(len(errs), "file"), args[0])
	}
	return c
}
