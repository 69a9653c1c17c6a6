package main

import (
	"encoding/json"
	"fmt"

	"os"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/schollz/progressbar/v3"
	"golang.org/x/term"
)

// writeJSON prints v as indented JSON, for --json.
func (e *env) writeJSON(v any) error {
	enc := json.NewEncoder(e.stdout)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

// table returns a writer that aligns tab-separated columns; call Flush.
func (e *env) table() *tabwriter.Writer {
	return tabwriter.NewWriter(e.stdout, 0, 0, 2, ' ', 0)
}

// warnf prints a warning line on stderr.
func (e *env) warnf(format string, args ...any) {
	fmt.Fprintf(e.stderr, "filestore: warning: "+format+"\n", args...)
}

// progress is a progress bar on stderr, shown only when stderr is a
// terminal, so that piped and scripted runs stay quiet.
type progress struct{ bar *progressbar.ProgressBar }

// newProgress starts a bar of total steps (-1 when unknown) described by
// what; it is a no-op off a terminal.
func (e *env) newProgress(total int64, what string) *progress {
	return e.startProgress(total, what, progressbar.OptionShowCount())
}

// newBytesProgress is newProgress for a count of bytes.
func (e *env) newBytesProgress(total int64, what string) *progress {
	return e.startProgress(total, what, progressbar.OptionShowBytes(true), progressbar.OptionShowCount())
}

func (e *env) startProgress(total int64, what string, count ...progressbar.Option) *progress {
	f, ok := e.stderr.(*os.File)
	if !ok || !term.IsTerminal(int(f.Fd())) {
		return &progress{}
	}
	opts := append([]progressbar.Option{
		progressbar.OptionSetWriter(f),
		progressbar.OptionSetDescription(what),
		progressbar.OptionThrottle(100 * time.Millisecond),
		progressbar.OptionClearOnFinish(),
	}, count...)
	return &progress{bar: progressbar.NewOptions64(total, opts...)}
}

func (p *progress) Set(n int64) {
	if p.bar != nil {
		_ = p.bar.Set64(n) // error deliberately ignored: a bar that cannot draw changes no result
	}
}

func (p *progress) Add(n int) {
	if p.bar != nil {
		_ = p.bar.Add(n) // error deliberately ignored: as in Set
	}
}

func (p *progress) Finish() {
	if p.bar != nil {
		_ = p.bar.Finish() // error deliberately ignored: as in Set
	}
}

// humanBytes prints n bytes with a binary unit.
func humanBytes(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTPE"[exp])
}

// printable reports whether b is text worth printing as is.
func printable(b []byte) bool {
	s := string(b)
	if strings.ToValidUTF8(s, "\x00") != s {
		return false
	}
	for _, r := range s {
		if r < 0x20 && r != '\n' && r != '\t' && r != '\r' {
			return false
		}
	}
	return true
}

// plural prints n with word, adding an s unless n is 1: "1 file", "2
// files"; or with the plural form given, if any.
func plural(n int, word string, pluralForm ...string) string {
	switch {
	case n == 1:
		return fmt.Sprintf("%d %s", n, word)
	case len(pluralForm) > 0:
		return fmt.Sprintf("%d %s", n, pluralForm[0])
	}
	return fmt.Sprintf("%d %ss", n, word)
}
