package filestore

import (
	"strings"
	"testing"
)

// repeatsOp reports whether msg names one step twice in a row, as wrapping
// the same step at two layers does ("delete: delete: ...").
func repeatsOp(msg string) bool {
	parts := strings.Split(msg, ": ")
	for i := 1; i < len(parts); i++ {
		if parts[i] == parts[i-1] {
			return true
		}
	}
	return false
}

// requireNoRepeatedOp fails if err's message names a step twice in a row.
func requireNoRepeatedOp(t *testing.T, err error) {
	t.Helper()
	if repeatsOp(err.Error()) {
		t.Errorf("%q names a step twice", err.Error())
	}
}

func TestRepeatsOp(t *testing.T) {
	for msg, want := range map[string]bool{
		"filestore: delete: delete: remove /x: i/o error": true,
		"filestore: delete: remove /x: i/o error":         false,
		"filestore: save: write: open /x: no space":       false,
	} {
		if got := repeatsOp(msg); got != want {
			t.Errorf("%q: %v, want %v", msg, got, want)
		}
	}
}
