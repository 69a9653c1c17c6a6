package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/filestore-go/filestore"
	"github.com/spf13/cobra"
)

func init() { commands = append(commands, newExport, newImport) }

// exportLine is one session in the export format, one JSON object a line:
//
//	{"id": "...", "expiry": "RFC 3339" or null, "data": "base64"}
type exportLine struct {
	ID     string  `json:"id"`
	Expiry *string `json:"expiry"`
	Data   []byte  `json:"data"` // standard base64, padded
}

func newExport(e *env) *cobra.Command {
	var out string
	c := &cobra.Command{
		Use:   "export DIR [-o FILE]",
		Short: "Write the live sessions as JSON lines",
		Long: `export writes every live session as one JSON object a line:

  {"id": "...", "expiry": "2026-12-31T23:59:59Z", "data": "<base64>"}

with "expiry": null for a session that never expires. import reads it back.

The output holds raw session ids, which are bearer secrets: anyone who reads
it can use the sessions. With -o, the file is created with mode 0600 (owner
only) from the start, and replaced atomically if it exists; keep it
private and delete it when done. Without -o (or with -o -), it goes to
standard output.

Records that cannot be read are left out, named by key, with exit status 1.`,
		Args: cobra.ExactArgs(1),
	}
	c.Flags().StringVarP(&out, "output", "o", "-", "file to write (mode 0600), or - for standard output")
	c.RunE = func(c *cobra.Command, args []string) (err error) {
		s, err := openStore(args[0])
		if err != nil {
			return err
		}
		defer closeStore(s, &err)
		if out == "-" || out == "" {
			bw := bufio.NewWriter(e.stdout)
			n, skipped, err := e.export(c.Context(), s, bw)
			if ferr := bw.Flush(); err == nil && ferr != nil {
				return ferr
			}
			return exportResult(e.stderr, n, "standard output", skipped, err)
		}
		// A temp file in the target's directory, which CreateTemp makes
		// with mode 0600, renamed over the target once complete: the
		// secrets are never readable by others, not even for a moment,
		// whatever mode an existing file had.
		f, err := os.CreateTemp(filepath.Dir(out), "."+filepath.Base(out)+".tmp-*")
		if err != nil {
			return err
		}
		tmp := f.Name()
		done := false
		defer func() {
			if !done {
				_ = f.Close()      // error deliberately ignored: already failing
				_ = os.Remove(tmp) // error deliberately ignored: as above
			}
		}()
		bw := bufio.NewWriter(f)
		n, skipped, xerr := e.export(c.Context(), s, bw)
		if xerr != nil && skipped == 0 {
			return xerr // failed as a whole: no file
		}
		if err := bw.Flush(); err != nil {
			return err
		}
		if err := f.Sync(); err != nil {
			return err
		}
		if err := f.Close(); err != nil {
			return err
		}
		if err := os.Rename(tmp, out); err != nil {
			return err
		}
		done = true
		return exportResult(e.stdout, n, out, skipped, xerr)
	}
	return c
}

// exportResult prints export's summary on w and returns its error: a
// problem (status 1) when records were left out.
func exportResult(w io.Writer, n int, where string, skipped int, err error) error {
	if err != nil && skipped == 0 {
		return err
	}
	fmt.Fprintf(w, "exported %s to %s\n", plural(n, "session"), where)
	if err != nil {
		// One error from ForEach may name several records: no count.
		return problems("records left out: %v", err)
	}
	return nil
}

// export writes the live records of s to w and returns how many it wrote
// and how many it left out. When records were left out (corrupt, or an id
// JSON cannot carry), the error says which, by key, and every other record
// was written; otherwise an error means the export failed.
func (e *env) export(ctx context.Context, s *filestore.Store, w io.Writer) (int, int, error) {
	enc := json.NewEncoder(w)
	enc.SetEscapeHTML(false)
	bar := e.newProgress(-1, "exporting")
	defer bar.Finish()
	n, skipped := 0, 0
	var leftOut []error
	err := s.ForEach(ctx, func(r filestore.Record) error {
		if !utf8.ValidString(r.ID) {
			// JSON text would replace its bad bytes: the id would not
			// come back as it is.
			skipped++
			leftOut = append(leftOut, fmt.Errorf("%s: id is not valid UTF-8, which JSON cannot carry", filestore.Key(r.ID)))
			return nil
		}
		l := exportLine{ID: r.ID, Data: r.Data}
		if l.Data == nil {
			l.Data = []byte{}
		}
		if !r.Expiry.IsZero() {
			t := r.Expiry.UTC().Format(time.RFC3339Nano)
			l.Expiry = &t
		}
		if err := enc.Encode(l); err != nil {
			return err
		}
		n++
		bar.Add(1)
		return nil
	})
	if errors.Is(err, filestore.ErrCorrupt) && ctx.Err() == nil {
		// ForEach visited every other record: they are written.
		skipped++
		leftOut = append(leftOut, err)
		err = nil
	}
	if err != nil {
		return n, 0, err
	}
	if len(leftOut) > 0 {
		return n, skipped, errors.Join(leftOut...)
	}
	return n, 0, nil
}

func newImport(e *env) *cobra.Command {
	var in, layout string
	c := &cobra.Command{
		Use:   "import DIR [-i FILE]",
		Short: "Read sessions from JSON lines, as export writes them",
		Long: `import saves each session of a JSON lines file, as export writes it,
into the store in DIR, creating the store if DIR does not exist or is
empty (with --layout, in that shard layout). Each session keeps its expiry;
sessions already expired are skipped. A session already in the store is
replaced. Blank lines are ignored.

On a malformed line, import stops: it reports the line's number, keeps the
sessions it imported before it, and exits with status 1. Without -i (or with
-i -), it reads standard input.`,
		Args: cobra.ExactArgs(1),
	}
	c.Flags().StringVarP(&in, "input", "i", "-", "file to read, or - for standard input")
	c.Flags().StringVar(&layout, "layout", "", `shard layout for a new store: "flat" or "LxW", such as "1x2" (default "`+filestore.DefaultLayout+`")`)
	c.RunE = func(c *cobra.Command, args []string) (err error) {
		ctx := c.Context()
		dir := args[0]
		if fi, err := os.Stat(dir); err == nil && !fi.IsDir() {
			return fmt.Errorf("%s: not a directory", dir)
		}
		var r io.Reader = e.stdin
		total := int64(-1)
		if in != "-" && in != "" {
			f, err := os.Open(in)
			if err != nil {
				return err
			}
			defer f.Close()
			if fi, err := f.Stat(); err == nil && fi.Mode().IsRegular() {
				total = fi.Size()
			}
			r = f
		}
		s, err := filestore.Open(dir, &filestore.Options{SweepInterval: -1, Layout: layout})
		if errors.Is(err, filestore.ErrNotStore) {
			return fmt.Errorf("%s is not a filestore store (and not empty, so import will not create one)", dir)
		}
		if errors.Is(err, filestore.ErrLayout) && layout != "" {
			return usagef("%v", err)
		}
		if err != nil {
			return err
		}
		defer closeStore(s, &err)
		bar := e.newBytesProgress(total, "importing")
		imp := importer{s: s, bar: bar, now: time.Now()}
		ierr := imp.run(ctx, bufio.NewReaderSize(r, 64<<10))
		bar.Finish()
		fmt.Fprintf(e.stdout, "imported %s, skipped %d expired\n", plural(imp.imported, "session"), imp.expired)
		if ierr != nil {
			return problems("%v (the %s before it imported)", ierr, plural(imp.imported, "session"))
		}
		return nil
	}
	return c
}

// importer saves the sessions of an export stream into a store.
type importer struct {
	s        *filestore.Store
	bar      *progress
	now      time.Time // expiries not after it are expired
	imported int
	expired  int
}

// run reads lines from r until its end or the first bad line, whose error
// names its number.
func (imp *importer) run(ctx context.Context, r *bufio.Reader) error {
	// The longest line a record of this store can need: its data in
	// base64, its id with every byte escaped as \u00XX, and room for the
	// field names, an expiry and spacing.
	limit := base64.StdEncoding.EncodedLen(imp.s.MaxRecordSize()) + 6*filestore.MaxIDLength + 1024
	for n := 1; ; n++ {
		line, read, tooLong, err := readLine(r, limit)
		imp.bar.Add(read)
		if err != nil && !errors.Is(err, io.EOF) {
			return fmt.Errorf("line %d: %w", n, err)
		}
		if tooLong {
			return fmt.Errorf("line %d: longer than any session this store accepts (%d bytes at most); its data would be too large", n, limit)
		}
		if len(bytes.TrimSpace(line)) > 0 {
			if lerr := imp.line(ctx, line); lerr != nil {
				return fmt.Errorf("line %d: %w", n, lerr)
			}
		}
		if errors.Is(err, io.EOF) {
			return nil
		}
	}
}

// errBadLine marks a malformed line.
var errBadLine = errors.New("malformed line")

func badLine(format string, args ...any) error {
	return fmt.Errorf("%w: %s", errBadLine, fmt.Sprintf(format, args...))
}

// importLine is exportLine as read: pointers, to tell a missing field
// from an empty one, and the expiry raw, to tell its type.
type importLine struct {
	ID     *string         `json:"id"`
	Expiry json.RawMessage `json:"expiry"`
	Data   *string         `json:"data"`
}

// line imports one non-blank line. Its errors never quote the id.
func (imp *importer) line(ctx context.Context, b []byte) error {
	var l importLine
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&l); err != nil {
		return jsonProblem(err)
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return badLine("unexpected data after the JSON object")
	}
	switch {
	case l.ID == nil:
		return badLine(`no "id" field`)
	case *l.ID == "":
		return badLine("empty id")
	case len(*l.ID) > filestore.MaxIDLength:
		return badLine("id of %d bytes, longer than %d", len(*l.ID), filestore.MaxIDLength)
	case l.Data == nil:
		return badLine(`no "data" field`)
	}
	var expiry time.Time
	switch raw := bytes.TrimSpace(l.Expiry); {
	case len(raw) == 0 || string(raw) == "null":
	case raw[0] == '"':
		var s string
		if err := json.Unmarshal(raw, &s); err != nil {
			return badLine("expiry is not a valid JSON string")
		}
		t, err := time.Parse(time.RFC3339Nano, s)
		if err != nil {
			return badLine("expiry %q is not an RFC 3339 time", truncate(s, 40))
		}
		expiry = t
	default:
		return badLine("expiry must be an RFC 3339 string or null, not %s", jsonKind(raw))
	}
	data, err := base64.StdEncoding.DecodeString(*l.Data)
	if err != nil {
		return badLine("data is not valid base64 (%v)", err)
	}
	if len(data) > imp.s.MaxRecordSize() {
		return badLine("data of %d bytes, more than this store's limit of %d", len(data), imp.s.MaxRecordSize())
	}
	if !expiry.IsZero() && !expiry.After(imp.now) {
		imp.expired++
		return nil
	}
	if err := imp.s.Save(ctx, *l.ID, data, expiry); err != nil {
		return fmt.Errorf("saving session %s: %w", filestore.Key(*l.ID), err)
	}
	imp.imported++
	return nil
}

// jsonProblem says in words what is wrong with a line the decoder
// rejected, without quoting the line.
func jsonProblem(err error) error {
	var syn *json.SyntaxError
	var typ *json.UnmarshalTypeError
	switch {
	case errors.As(err, &syn):
		return badLine("not valid JSON (at byte %d)", syn.Offset)
	case errors.Is(err, io.ErrUnexpectedEOF):
		return badLine("not valid JSON: the line ends inside a value")
	case errors.As(err, &typ):
		if typ.Field == "" {
			return badLine("a line must be a JSON object, not %s", typ.Value)
		}
		return badLine("%s must be a string, not %s", typ.Field, typ.Value)
	}
	if name, ok := strings.CutPrefix(err.Error(), "json: unknown field "); ok {
		return badLine("unknown field %s", truncate(name, 40))
	}
	return badLine("not valid JSON")
}

// jsonKind names the type of a raw JSON value.
func jsonKind(raw []byte) string {
	switch raw[0] {
	case '{':
		return "an object"
	case '[':
		return "an array"
	case 't', 'f':
		return "a boolean"
	default:
		return "a number"
	}
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "..."
}

// readLine returns the next line of r without its newline, and how many
// bytes it consumed. A line longer than limit is consumed whole and
// reported as tooLong, with no content. The error is io.EOF at the end of
// the input, with the last line if it had no newline.
func readLine(r *bufio.Reader, limit int) (line []byte, read int, tooLong bool, err error) {
	for {
		chunk, err := r.ReadSlice('\n')
		read += len(chunk)
		if !tooLong {
			if len(line)+len(chunk) > limit+1 {
				tooLong, line = true, nil
			} else {
				line = append(line, chunk...)
			}
		}
		if errors.Is(err, bufio.ErrBufferFull) {
			continue
		}
		return bytes.TrimSuffix(line, []byte("\n")), read, tooLong, err
	}
}
