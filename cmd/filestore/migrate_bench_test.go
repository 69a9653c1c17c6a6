package main

import (
	"context"
	"fmt"
	"io"
	"path/filepath"
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
// walk alone (ForEach, no Redis), which bounds migrate's. Run it without
// -race:
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

	var base, mig, walk time.Duration
	b.ResetTimer()
	for range b.N {
		b.StopTimer()
		do("FLUSHDB")
		b.StartTimer()
		start := time.Now()
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
		base += time.Since(start)

		start = time.Now()
		if err := walkStore.ForEach(ctx, func(filestore.Record) error { return nil }); err != nil {
			b.Fatal(err)
		}
		walk += time.Since(start)

		b.StopTimer()
		do("FLUSHDB")
		b.StartTimer()
		start = time.Now()
		if code := run([]string{"migrate", dir, "--to", r.URL(0), "--format", "scs", "--batch", fmt.Sprint(batch)}, strings.NewReader(""), io.Discard, io.Discard); code != 0 {
			b.Fatalf("migrate exited %d", code)
		}
		mig += time.Since(start)
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
}
