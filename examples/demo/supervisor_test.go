package main

import (
	"slices"
	"testing"
	"time"
)

func TestRestartBackoff(t *testing.T) {
	var b backoff
	var got []time.Duration
	for range 9 {
		got = append(got, b.delay(time.Second)) // a crash loop: each worker dies soon
	}
	ms := time.Millisecond
	want := []time.Duration{100 * ms, 200 * ms, 400 * ms, 800 * ms, 1600 * ms, 3200 * ms, 5000 * ms, 5000 * ms, 5000 * ms}
	if !slices.Equal(got, want) {
		t.Fatalf("delays %v, want %v", got, want)
	}
	// A worker that stayed up a while starts the count again.
	if d := b.delay(stableUptime); d != minRestart {
		t.Errorf("after a stable run: delay %v, want %v", d, minRestart)
	}
	if d := b.delay(0); d != 2*minRestart {
		t.Errorf("then after a quick death: delay %v, want %v", d, 2*minRestart)
	}
}
