package main

import (
	"bytes"
	"context"
	"encoding/base64"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/filestore-go/filestore"
)

// runTool runs the tool in this process and returns its exit status and
// output.
func runTool(t *testing.T, stdin string, args ...string) (int, string, string) {
	t.Helper()
	var out, errOut bytes.Buffer
	code := run(args, strings.NewReader(stdin), &out, &errOut)
	return code, out.String(), errOut.String()
}

// TestImportMalformedLine feeds import two good lines, a bad one and a
// good one: each bad line is an error naming line 3 and what is wrong
// with it, the two sessions before it are kept, the one after it is not
// imported, and the exit status is 1. No error quotes the id.
func TestImportMalformedLine(t *testing.T) {
	const secret = "secret-id-do-not-print"
	b64 := func(n int) string { return base64.StdEncoding.EncodeToString(make([]byte, n)) }
	cases := []struct {
		name, line, want string
	}{
		{"bad JSON", `{"id": "` + secret + `", "data": `, "not valid JSON"},
		{"broken JSON", `{"id": "` + secret + `" "data": ""}`, "not valid JSON (at byte"},
		{"not an object", `["` + secret + `"]`, "a line must be a JSON object, not array"},
		{"missing id", `{"expiry": null, "data": "eA=="}`, `no "id" field`},
		{"null id", `{"id": null, "data": "eA=="}`, `no "id" field`},
		{"empty id", `{"id": "", "data": "eA=="}`, "empty id"},
		{"id of a wrong type", `{"id": 12345, "data": "eA=="}`, "id must be a string, not number"},
		{"id too long", `{"id": "` + secret + strings.Repeat("x", filestore.MaxIDLength) + `", "data": "eA=="}`, "id of 1046 bytes, longer than 1024"},
		{"missing data", `{"id": "` + secret + `", "expiry": null}`, `no "data" field`},
		{"data of a wrong type", `{"id": "` + secret + `", "data": [1, 2]}`, "data must be a string, not array"},
		{"bad base64", `{"id": "` + secret + `", "data": "not base64!"}`, "data is not valid base64"},
		{"bad expiry", `{"id": "` + secret + `", "expiry": "next tuesday", "data": "eA=="}`, `expiry "next tuesday" is not an RFC 3339 time`},
		{"expiry of a wrong type", `{"id": "` + secret + `", "expiry": 1767225600, "data": "eA=="}`, "expiry must be an RFC 3339 string or null, not a number"},
		{"expiry an object", `{"id": "` + secret + `", "expiry": {"t": 1}, "data": "eA=="}`, "expiry must be an RFC 3339 string or null, not an object"},
		{"data too large", `{"id": "` + secret + `", "data": "` + b64(filestore.DefaultMaxRecordSize+1) + `"}`, "data of 1048577 bytes, more than this store's limit of 1048576"},
		{"line too long", `{"id": "` + secret + `", "data": "` + b64(2*filestore.DefaultMaxRecordSize) + `"}`, "longer than any session this store accepts"},
		{"unknown field", `{"id": "` + secret + `", "data": "eA==", "owner": "x"}`, `unknown field "owner"`},
		{"trailing garbage", `{"id": "` + secret + `", "data": "eA=="} trailing`, "unexpected data after the JSON object"},
		{"two objects", `{"id": "` + secret + `", "data": "eA=="}{"id": "b", "data": ""}`, "unexpected data after the JSON object"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			dir := filepath.Join(t.TempDir(), "store")
			in := filepath.Join(t.TempDir(), "in.jsonl")
			lines := []string{
				`{"id": "first", "expiry": null, "data": "MQ=="}`,
				`{"id": "second", "expiry": "2999-01-01T00:00:00Z", "data": "Mg=="}`,
				c.line,
				`{"id": "fourth", "expiry": null, "data": "NA=="}`,
			}
			if err := os.WriteFile(in, []byte(strings.Join(lines, "\n")+"\n"), 0o600); err != nil {
				t.Fatal(err)
			}
			code, stdout, stderr := runTool(t, "", "import", dir, "-i", in)
			if code != 1 {
				t.Errorf("exit status %d, want 1", code)
			}
			if !strings.HasPrefix(stderr, "filestore: line 3: ") || !strings.Contains(stderr, c.want) {
				t.Errorf("stderr %q, want line 3 and %q", stderr, c.want)
			}
			if strings.Count(stderr, "\n") != 1 {
				t.Errorf("stderr is not one line: %q", stderr)
			}
			if strings.Contains(stderr+stdout, "secret") {
				t.Errorf("output quotes the id: %q %q", stdout, stderr)
			}
			if !strings.Contains(stdout, "imported 2 sessions") {
				t.Errorf("stdout %q, want 2 imported", stdout)
			}
			s, err := filestore.Open(dir, &filestore.Options{NoCreate: true, SweepInterval: -1})
			if err != nil {
				t.Fatal(err)
			}
			defer s.Close()
			ctx := context.Background()
			for id, want := range map[string]string{"first": "1", "second": "2"} {
				rec, err := s.Load(ctx, id)
				if err != nil || string(rec.Data) != want {
					t.Errorf("session %s: %q, %v; want %q", id, rec.Data, err, want)
				}
			}
			for _, id := range []string{"fourth", secret} {
				if _, err := s.Load(ctx, id); !errors.Is(err, filestore.ErrNotFound) {
					t.Errorf("a session after the bad line was imported: %v", err)
				}
			}
		})
	}
}
