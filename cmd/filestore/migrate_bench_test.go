package main

import (
	"context"
	"fmt"
	"io"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/filestore-go/filestore"
	"github.com/filestore-go/filestore/internal/testkit"
	"github.com/gomodule/redigo/redis"
)

// BenchmarkMigrate measures migrate's sessions/s on 100,000 sessions
// against the baseline of a plain pipelined SET loop writing the same
// records, already in memory, over one connection in batches of the same
// size, in the same run against the same redis-server. It reports both
// rates and their ratio (migrate/baseline), and the rate of the store's
// walk alone (ForEach, no Redis), which bounds migrate's.
//
// It also reports the CPU time each spends a session, in this process
// and in redis-server (from INFO cpu): migrate runs no faster than its
// CPU time divided by the machine's cores, whatever it overlaps. Run it
// without -race:
//
//	go test -run '^$' -bench Migrate -benchtime 3x
func BenchmarkMigrate(b *testing.B) {
	const n, batch = 100_000, 1000
	r := testkit.StartRedis(b)
	dir := filepath.Join(b.TempDir(), "sessions")
	st, err := filestore.Open(dir, &filestore.Options{SweepInterval: -1, NoSync: true})
	if err != nil {
		b.Fatal(err)
	}
	ctx := context.Background()
	data := []byte(strings.Repeat("s", 200)) // about an scs session with a user id and a flash message
	exp := time.Now().Add(time.Hour)
	for i := range n {
		if err := st.Save(ctx, fmt.Sprintf("bench-session-%06d-%s", i, strings.Repeat("x", 22)), data, exp); err != nil {
			b.Fatal(err)
		}
	}
	var recs []filestore.Record
	if err := st.ForEach(ctx, func(r filestore.Record) error { recs = append(recs, r); return nil }); err != nil {
		b.Fatal(err)
	}
	if err := st.Close(); err != nil {
		b.Fatal(err)
	}
	conn, err := redis.Dial("tcp", r.Addr())
	if err != nil {
		b.Fatal(err)
	}
	defer conn.Close()
	do := func(cmd string, args ...any) {
		if _, err := conn.Do(cmd, args...); err != nil {
			b.Fatal(err)
		}
	}

	// The walk alone, through a Store as migrate opens it: the floor
	// under migrate's time that no Redis client can lower.
	walkStore, err := filestore.Open(dir, &filestore.Options{NoCreate: true, SweepInterval: -1})
	if err != nil {
		b.Fatal(err)
	}
	defer walkStore.Close()

	// The CPU time redis-server has used, from INFO cpu.
	redisCPU := func() time.Duration {
		info, err := redis.String(conn.Do("INFO", "cpu"))
		if err != nil {
			b.Fatal(err)
		}
		var sum time.Duration
		for _, line := range strings.Split(info, "\r\n") {
			name, v, _ := strings.Cut(line, ":")
			if name == "used_cpu_sys" || name == "used_cpu_user" {
				s, err := strconv.ParseFloat(v, 64)
				if err != nil {
					b.Fatalf("INFO cpu: %q: %v", line, err)
				}
				sum += time.Duration(s * float64(time.Second))
			}
		}
		return sum
	}
	// cpu is what one phase used, in this process and in redis-server.
	type cpu struct{ self, redis time.Duration }
	var baseCPU, migCPU, walkCPU cpu
	measure := func(acc *cpu, f func()) time.Duration {
		self, red := processCPU(), redisCPU()
		start := time.Now()
		f()
		d := time.Since(start)
		acc.self += processCPU() - self
		acc.redis += redisCPU() - red
		return d
	}

	var base, mig, walk time.Duration
	b.ResetTimer()
	for range b.N {
		b.StopTimer()
		do("FLUSHDB")
		b.StartTimer()
		base += measure(&baseCPU, func() {
			for i := 0; i < len(recs); i += batch {
				end := min(i+batch, len(recs))
				for _, rec := range recs[i:end] {
					if err := conn.Send("SET", "scs:session:"+rec.ID, rec.Data, "PXAT", rec.Expiry.UnixMilli()); err != nil {
						b.Fatal(err)
					}
				}
				if err := conn.Flush(); err != nil {
					b.Fatal(err)
				}
				for range end - i {
					if _, err := conn.Receive(); err != nil {
						b.Fatal(err)
					}
				}
			}
		})

		walk += measure(&walkCPU, func() {
			if err := walkStore.ForEach(ctx, func(filestore.Record) error { return nil }); err != nil {
				b.Fatal(err)
			}
		})

		b.StopTimer()
		do("FLUSHDB")
		b.StartTimer()
		mig += measure(&migCPU, func() {
			if code := run([]string{"migrate", dir, "--to", r.URL(0), "--format", "scs", "--batch", fmt.Sprint(batch)}, strings.NewReader(""), io.Discard, io.Discard); code != 0 {
				b.Fatalf("migrate exited %d", code)
			}
		})
	}
	b.StopTimer()
	if got, err := redis.Int(conn.Do("DBSIZE")); err != nil || got != n {
		b.Fatalf("Redis holds %d keys (%v), want %d", got, err, n)
	}
	baseRate := float64(n*b.N) / base.Seconds()
	migRate := float64(n*b.N) / mig.Seconds()
	b.ReportMetric(baseRate, "baseline-sessions/s")
	b.ReportMetric(migRate, "migrate-sessions/s")
	b.ReportMetric(float64(n*b.N)/walk.Seconds(), "walk-sessions/s")
	b.ReportMetric(migRate/baseRate, "migrate/baseline")
	perSession := func(d time.Duration) float64 { return float64(d.Microseconds()) / float64(n*b.N) }
	b.ReportMetric(perSession(baseCPU.self), "baseline-cpu-µs/session")
	b.ReportMetric(perSession(baseCPU.redis), "baseline-redis-cpu-µs/session")
	b.ReportMetric(perSession(walkCPU.self), "walk-cpu-µs/session")
	b.ReportMetric(perSession(migCPU.self), "migrate-cpu-µs/session")
	b.ReportMetric(perSession(migCPU.redis), "migrate-redis-cpu-µs/session")
}

// BenchmarkTrackerAdd measures the bookkeeping migrate does for every
// session it copies, when no session is deleted during the run: it should
// compute no key (a SHA-256) and build no map.
func BenchmarkTrackerAdd(b *testing.B) {
	recs := make([]filestore.Record, 100_000)
	exp := time.Now().Add(time.Hour)
	for i := range recs {
		recs[i] = filestore.Record{ID: fmt.Sprintf("bench-session-%06d-%s", i, strings.Repeat("x", 22)), Data: make([]byte, 200), Expiry: exp}
	}
	b.ReportAllocs()
	for b.Loop() {
		t := newTracker()
		for _, r := range recs {
			t.add(r)
		}
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*len(recs)), "ns/session")
}
