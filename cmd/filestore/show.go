package main

import (
	"encoding/hex"
	"fmt"
	"time"

	"github.com/filestore-go/filestore"
	"github.com/spf13/cobra"
)

func init() { commands = append(commands, newShow, newRm) }

// showReport is one record as show prints it.
type showReport struct {
	Key        string     `json:"key"`
	Path       string     `json:"path"`
	State      string     `json:"state"`
	FileSize   int64      `json:"file_size"`
	Mode       string     `json:"mode"`
	BadMode    bool       `json:"bad_mode"`
	Expiry     *time.Time `json:"expiry"`
	Compressed bool       `json:"compressed"`
	Size       int        `json:"size"`
	Error      string     `json:"error,omitempty"` // why the record is corrupt
	ID         string     `json:"id,omitempty"`    // only with --show-ids
	// The payload: Text when it is printable, Data (base64 in JSON)
	// otherwise; neither for a record that cannot be read.
	Text *string `json:"text,omitempty"`
	Data []byte  `json:"data,omitempty"`
}

const argHelp = `The session is named by its key (64 lowercase hex digits, the SHA-256 of
its id, as ls prints it) or by its id; an argument of 64 lowercase hex digits
is tried as a key first, then as an id. The id is never printed back.`

func newShow(e *env) *cobra.Command {
	c := &cobra.Command{
		Use:   "show DIR KEY|ID",
		Short: "Print one session's record: its header and payload",
		Long: `show prints one record's header (key, path, state, sizes, mode, expiry,
compression) and its payload: as text when it is printable, as a hex dump
otherwise. A corrupt record is reported with why, and exit status 1.

` + argHelp,
		Args: cobra.ExactArgs(2),
	}
	c.Flags().BoolVar(&e.jsonOut, "json", false, "print JSON (the payload as text, or as base64 in data)")
	c.RunE = func(c *cobra.Command, args []string) (err error) {
		s, err := openStore(args[0])
		if err != nil {
			return err
		}
		defer closeStore(s, &err)
		key, fi, rec, err := resolve(c.Context(), s, args[1])
		if err != nil {
			return err
		}
		if e.showIDs {
			e.warnf(idWarning)
		}
		r := showReport{
			Key: key, Path: fi.Path, State: fi.State.String(), FileSize: fi.Size,
			Mode: fi.Mode.String(), BadMode: fi.BadMode, Compressed: fi.Compressed, Size: fi.DataSize,
		}
		if !fi.Expiry.IsZero() {
			t := fi.Expiry
			r.Expiry = &t
		}
		if fi.Err != nil {
			r.Error = reason(fi)
		}
		valid := fi.State == filestore.FileLive || fi.State == filestore.FileExpired
		if valid {
			if e.showIDs {
				r.ID = rec.ID
			}
			if printable(rec.Data) {
				text := string(rec.Data)
				r.Text = &text
			} else {
				r.Data = rec.Data
			}
		}
		if e.jsonOut {
			err = e.writeJSON(r)
		} else {
			err = e.printShow(&r, rec.Data, valid)
		}
		if err != nil {
			return err
		}
		if !valid {
			return problems("%s is %s: %s", key, r.State, oneLine(r.Error))
		}
		return nil
	}
	return c
}

func (e *env) printShow(r *showReport, data []byte, valid bool) error {
	w := e.table()
	fmt.Fprintf(w, "key\t%s\n", r.Key)
	if r.ID != "" {
		fmt.Fprintf(w, "id\t%s\n", quoteID(r.ID))
	}
	fmt.Fprintf(w, "path\t%s\n", r.Path)
	fmt.Fprintf(w, "state\t%s\n", r.State)
	if r.Error != "" {
		fmt.Fprintf(w, "error\t%s\n", oneLine(r.Error))
	}
	mode := r.Mode
	if r.BadMode {
		mode += " (not the store's own)"
	}
	fmt.Fprintf(w, "mode\t%s\n", mode)
	fmt.Fprintf(w, "file size\t%d\n", r.FileSize)
	if valid {
		fmt.Fprintf(w, "expiry\t%s\n", expiryText(r.Expiry))
		fmt.Fprintf(w, "compressed\t%s\n", yesNo(r.Compressed))
		fmt.Fprintf(w, "size\t%d\n", r.Size)
	}
	if err := w.Flush(); err != nil {
		return err
	}
	if !valid {
		return nil
	}
	if r.Text != nil {
		fmt.Fprintln(e.stdout, "payload (text):")
		fmt.Fprint(e.stdout, *r.Text)
		if n := len(*r.Text); n > 0 && (*r.Text)[n-1] != '\n' {
			fmt.Fprintln(e.stdout)
		}
		return nil
	}
	fmt.Fprintln(e.stdout, "payload (hex):")
	_, err := fmt.Fprint(e.stdout, hex.Dump(data))
	return err
}

func newRm(e *env) *cobra.Command {
	c := &cobra.Command{
		Use:   "rm DIR KEY|ID",
		Short: "Remove one session's record, through the store's locks",
		Long: `rm removes one record file, whatever it holds (a corrupt one too), under
the record's lock, as the application's own Delete would.

` + argHelp,
		Args: cobra.ExactArgs(2),
	}
	c.RunE = func(c *cobra.Command, args []string) (err error) {
		s, err := openStore(args[0])
		if err != nil {
			return err
		}
		defer closeStore(s, &err)
		key, fi, _, err := resolve(c.Context(), s, args[1])
		if err != nil {
			return err
		}
		if err := s.DeleteKey(c.Context(), key); err != nil {
			return err
		}
		fmt.Fprintf(e.stdout, "removed %s (%s)\n", key, fi.State)
		return nil
	}
	return c
}
