package main

import (
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/filestore-go/filestore"
	"github.com/spf13/cobra"
)

func init() { commands = append(commands, newLs) }

// lsEntry is one live session as ls prints it.
type lsEntry struct {
	Key        string     `json:"key"`
	Path       string     `json:"path"`
	Size       int        `json:"size"`      // payload bytes, uncompressed
	FileSize   int64      `json:"file_size"` // record file bytes
	Expiry     *time.Time `json:"expiry"`    // nil: never
	Compressed bool       `json:"compressed"`
	ID         string     `json:"id,omitempty"` // only with --show-ids
}

// idWarning is printed on stderr whenever a command prints raw ids.
const idWarning = "printing raw session ids: they are bearer secrets, anyone who reads them can use the sessions"

func newLs(e *env) *cobra.Command {
	c := &cobra.Command{
		Use:   "ls DIR",
		Short: "List the live sessions, by key",
		Long: `ls prints one line per live session, sorted by key: its key, payload
size, expiry and whether it is stored compressed. Raw session ids are
printed only with --show-ids.`,
		Args: cobra.ExactArgs(1),
	}
	c.Flags().BoolVar(&e.jsonOut, "json", false, "print JSON")
	c.RunE = func(c *cobra.Command, args []string) (err error) {
		s, err := openStore(args[0])
		if err != nil {
			return err
		}
		defer closeStore(s, &err)
		if e.showIDs {
			e.warnf(idWarning)
		}
		entries := []lsEntry{}
		err = s.Scan(c.Context(), func(fi filestore.FileInfo) error {
			if fi.State != filestore.FileLive {
				return nil
			}
			en := lsEntry{Key: fi.Key, Path: fi.Path, Size: fi.DataSize, FileSize: fi.Size, Compressed: fi.Compressed}
			if !fi.Expiry.IsZero() {
				t := fi.Expiry
				en.Expiry = &t
			}
			if e.showIDs {
				en.ID = fi.ID
			}
			entries = append(entries, en)
			return nil
		})
		if err != nil {
			return err
		}
		slices.SortFunc(entries, func(a, b lsEntry) int { return strings.Compare(a.Key, b.Key) })
		if e.jsonOut {
			return e.writeJSON(entries)
		}
		w := e.table()
		header := "KEY\tSIZE\tEXPIRY\tCOMPRESSED"
		if e.showIDs {
			header += "\tID"
		}
		fmt.Fprintln(w, header)
		for _, en := range entries {
			line := fmt.Sprintf("%s\t%d\t%s\t%s", en.Key, en.Size, expiryText(en.Expiry), yesNo(en.Compressed))
			if e.showIDs {
				line += "\t" + quoteID(en.ID)
			}
			fmt.Fprintln(w, line)
		}
		return w.Flush()
	}
	return c
}

// expiryText prints an expiry for people: RFC 3339 in UTC, or "never".
func expiryText(t *time.Time) string {
	if t == nil || t.IsZero() {
		return "never"
	}
	return t.UTC().Format(time.RFC3339)
}

// quoteID prints an id on one line whatever bytes it holds: as it is when
// it is plain printable text without spaces, Go-quoted otherwise.
func quoteID(id string) string {
	q := fmt.Sprintf("%q", id)
	if q[1:len(q)-1] == id && !strings.ContainsAny(id, " \t") {
		return id
	}
	return q
}
