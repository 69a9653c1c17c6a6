package testkit

import (
	"testing"
)

func TestRedis(t *testing.T) {
	r := StartRedis(t)
	if err := ping(r.Addr()); err != nil {
		t.Fatal(err)
	}
	r.Kill()
	if err := ping(r.Addr()); err == nil {
		t.Fatal("redis-server still answers after Kill")
	}
	r.Restart()
	if err := ping(r.Addr()); err != nil {
		t.Fatal(err)
	}
}
