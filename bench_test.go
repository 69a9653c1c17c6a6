package filestore

import (
	"crypto/rand"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"
)

// The benchmarks pair each Store operation with the raw syscall recipe it
// is built on, measured in the same run, so the ratio holds on a noisy
// machine: compare Load/1K/store with Load/1K/raw, and so on. Each reports
// ops/s besides ns/op. bench/ has the full comparison with other stores.

var benchSizes = []int{1 << 10, 8 << 10}

func sizeName(n int) string { return strconv.Itoa(n>>10) + "K" }

func reportOps(b *testing.B) {
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "ops/s")
}

// benchPayload is incompressible, so Compress does not flatter the numbers.
func benchPayload(n int) []byte {
	p := make([]byte, n)
	_, _ = rand.Read(p)
	return p
}

const benchIDs = 1000

func benchID(i int) string { return fmt.Sprintf("bench-session-%06d", i%benchIDs) }

func BenchmarkLoad(b *testing.B) {
	for _, size := range benchSizes {
		data := benchPayload(size)
		// store reads every record from its file; cached, after one Load
		// of each, from the read cache.
		for _, sub := range []struct {
			name  string
			cache int64
		}{{"store", 0}, {"cached", 64 << 20}} {
			b.Run(sizeName(size)+"/"+sub.name, func(b *testing.B) {
				s := openTest(b, &Options{SweepInterval: -1, NoSync: true, CacheBytes: sub.cache})
				for i := range benchIDs {
					if err := s.Save(bg, benchID(i), data, time.Time{}); err != nil {
						b.Fatal(err)
					}
					if _, err := s.Load(bg, benchID(i)); err != nil {
						b.Fatal(err)
					}
				}
				b.SetBytes(int64(size))
				b.ReportAllocs()
				i := 0
				for b.Loop() {
					if _, err := s.Load(bg, benchID(i)); err != nil {
						b.Fatal(err)
					}
					i++
				}
				reportOps(b)
			})
		}
		b.Run(sizeName(size)+"/raw", func(b *testing.B) {
			dir := b.TempDir()
			for i := range benchIDs {
				if err := os.WriteFile(filepath.Join(dir, strconv.Itoa(i)), data, 0o600); err != nil {
					b.Fatal(err)
				}
			}
			b.SetBytes(int64(size))
			b.ReportAllocs()
			i := 0
			for b.Loop() {
				f, err := os.Open(filepath.Join(dir, strconv.Itoa(i%benchIDs)))
				if err != nil {
					b.Fatal(err)
				}
				buf := make([]byte, size)
				if _, err := f.Read(buf); err != nil {
					b.Fatal(err)
				}
				f.Close()
				i++
			}
			reportOps(b)
		})
	}
}

func BenchmarkSave(b *testing.B) {
	for _, size := range benchSizes {
		data := benchPayload(size)
		for _, noSync := range []bool{false, true} {
			mode := "fsync"
			if noSync {
				mode = "nosync"
			}
			b.Run(sizeName(size)+"/"+mode+"/store", func(b *testing.B) {
				s := openTest(b, &Options{SweepInterval: -1, NoSync: noSync})
				b.SetBytes(int64(size))
				b.ReportAllocs()
				i := 0
				for b.Loop() {
					if err := s.Save(bg, benchID(i), data, time.Time{}); err != nil {
						b.Fatal(err)
					}
					i++
				}
				reportOps(b)
			})
			b.Run(sizeName(size)+"/"+mode+"/raw", func(b *testing.B) {
				dir := b.TempDir()
				b.SetBytes(int64(size))
				b.ReportAllocs()
				i := 0
				for b.Loop() {
					if err := rawTempRename(dir, strconv.Itoa(i%benchIDs), data, !noSync); err != nil {
						b.Fatal(err)
					}
					i++
				}
				reportOps(b)
			})
		}
	}
}

// rawTempRename is the bare recipe Save is built on: temp file, write,
// optional fsync, close, rename, optional directory fsync.
func rawTempRename(dir, name string, data []byte, sync bool) error {
	tmp := filepath.Join(dir, name+".tmp")
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return err
	}
	if _, err := f.Write(data); err != nil {
		return err
	}
	if sync {
		if err := f.Sync(); err != nil {
			return err
		}
	}
	if err := f.Close(); err != nil {
		return err
	}
	if err := os.Rename(tmp, filepath.Join(dir, name)); err != nil {
		return err
	}
	if sync {
		d, err := os.Open(dir)
		if err != nil {
			return err
		}
		defer d.Close()
		return d.Sync()
	}
	return nil
}

func BenchmarkUpdate(b *testing.B) {
	for _, size := range benchSizes {
		data := benchPayload(size)
		b.Run(sizeName(size), func(b *testing.B) {
			s := openTest(b, &Options{SweepInterval: -1, NoSync: true})
			b.SetBytes(int64(size))
			b.ReportAllocs()
			i := 0
			for b.Loop() {
				err := s.Update(bg, benchID(i), func(cur *Record) (*Record, error) {
					return &Record{Data: data}, nil
				})
				if err != nil {
					b.Fatal(err)
				}
				i++
			}
			reportOps(b)
		})
	}
}

// BenchmarkDeleteExpired sweeps a population of 10,000 records of which
// 30% are expired; ns/op is one whole sweep, files/s the walk rate.
func BenchmarkDeleteExpired(b *testing.B) {
	const population = 10000
	for _, size := range benchSizes {
		data := benchPayload(size)
		b.Run(sizeName(size), func(b *testing.B) {
			s := openTest(b, &Options{SweepInterval: -1, NoSync: true})
			for i := range population {
				exp := time.Now().Add(time.Hour)
				if i%10 < 3 {
					exp = time.Now().Add(-time.Hour)
				}
				if err := s.Save(bg, strconv.Itoa(i), data, exp); err != nil {
					b.Fatal(err)
				}
			}
			// Re-create the expired 30% before each sweep, off the clock.
			for b.Loop() {
				b.StopTimer()
				for i := 0; i < population; i += 10 {
					for j := range 3 {
						if err := s.Save(bg, strconv.Itoa(i+j), data, time.Now().Add(-time.Hour)); err != nil {
							b.Fatal(err)
						}
					}
				}
				b.StartTimer()
				n, err := s.DeleteExpired(bg)
				if err != nil || n != population*3/10 {
					b.Fatalf("swept %d, %v", n, err)
				}
			}
			b.ReportMetric(float64(b.N*population)/b.Elapsed().Seconds(), "files/s")
		})
	}
}
