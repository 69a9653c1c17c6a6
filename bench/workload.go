package main

import (
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"math/bits"
	"math/rand/v2"
	"os"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// maxPayload is the largest session payload any workload uses.
const maxPayload = 32 << 10

// Workloads.
const (
	wlLoad  = "load"  // 100% Load of live sessions
	wlSave  = "save"  // 100% Save over live sessions
	wlRead  = "read"  // read-heavy: 95% Load, 5% Save
	wlMixed = "mixed" // 50% Load, 50% Save
	wlChurn = "churn" // logins and logouts: Save a new session, Delete a live one
	wlSweep = "sweep" // one expiry sweep of a population that is 30% expired

	// The hot-set twins of load and read: 90% of operations go to the
	// first 10% of the live sessions, as on a site where a few users are
	// active and most sessions idle. This is the shape a cache is for.
	wlLoadHot = "load-hot"
	wlReadHot = "read-hot"
)

// hotShare is the part of the live sessions a hot workload favours, and
// hotOps the part of its operations that go to them.
const (
	hotShare = 10 // percent
	hotOps   = 90 // percent
)

// expiredShare is the part of every population that has already expired:
// ids whose index i has i%10 < 3.
func isExpired(i int) bool { return i%10 < 3 }

// sessionID returns the i-th session id of a population: 32 bytes encoded
// as scs and most frameworks do, derived from i so that every process of a
// run agrees on the ids without sharing them.
func sessionID(tag string, i int) string {
	var b [8]byte
	binary.BigEndian.PutUint64(b[:], uint64(i))
	sum := sha256.Sum256(append([]byte(tag), b[:]...))
	return base64.RawURLEncoding.EncodeToString(sum[:])
}

// population is the set of ids a workload draws from.
type population struct {
	ids  []string // every id, live or expired
	live []string // ids of live sessions; churn replaces entries
}

func newPopulation(n int) *population {
	p := &population{ids: make([]string, n), live: make([]string, 0, n-n*3/10+1)}
	for i := range p.ids {
		p.ids[i] = sessionID("pop", i)
		if !isExpired(i) {
			p.live = append(p.live, p.ids[i])
		}
	}
	return p
}

// payloads returns a few session payloads of about size bytes each, shaped
// like real sessions: JSON with a user id, a CSRF token, flash messages and
// a shopping cart that pads the payload to size.
func payloads(size int) [][]byte {
	rng := rand.New(rand.NewPCG(uint64(size), 7))
	token := func(n int) string {
		b := make([]byte, n)
		for i := range b {
			b[i] = byte(rng.Uint32())
		}
		return base64.RawURLEncoding.EncodeToString(b)
	}
	type item struct {
		SKU   string  `json:"sku"`
		Name  string  `json:"name"`
		Qty   int     `json:"qty"`
		Price float64 `json:"price"`
	}
	products := []string{"Espresso beans 1kg", "Ceramic pour-over set", "Burr grinder", "Milk frother", "Travel mug 350ml", "Paper filters x100", "Gift card", "Descaling tablets"}
	out := make([][]byte, 16)
	for v := range out {
		s := struct {
			UserID    int64     `json:"user_id"`
			Email     string    `json:"email"`
			CSRF      string    `json:"csrf_token"`
			LoginAt   time.Time `json:"login_at"`
			Locale    string    `json:"locale"`
			Flash     []string  `json:"flash"`
			Cart      []item    `json:"cart"`
			Referrer  string    `json:"referrer"`
			Viewed    []int     `json:"recently_viewed"`
			UserAgent string    `json:"ua"`
		}{
			UserID:    rng.Int64N(1e9),
			Email:     "user" + strconv.Itoa(rng.IntN(1e6)) + "@example.com",
			CSRF:      token(32),
			LoginAt:   time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC).Add(time.Duration(rng.Int64N(1e15))),
			Locale:    "en-GB",
			Flash:     []string{"Welcome back!", "Your order #" + strconv.Itoa(rng.IntN(1e6)) + " has shipped."},
			Referrer:  "https://www.example.com/search?q=coffee+grinder&page=" + strconv.Itoa(rng.IntN(9)),
			UserAgent: "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0 Safari/537.36",
		}
		for range 8 {
			s.Viewed = append(s.Viewed, rng.IntN(1e5))
		}
		var b []byte
		for {
			b, _ = json.Marshal(s)
			if len(b) >= size {
				break
			}
			s.Cart = append(s.Cart, item{
				SKU:   "SKU-" + strings.ToUpper(token(6)),
				Name:  products[rng.IntN(len(products))],
				Qty:   1 + rng.IntN(3),
				Price: float64(rng.IntN(10000)) / 100,
			})
		}
		// Trim the last cart item's excess so every payload is exactly
		// size bytes: cut inside the JSON is fine, stores treat it as opaque.
		out[v] = b[:size]
	}
	return out
}

// hist is a latency histogram with buckets about 12% wide: eight per
// power of two of nanoseconds. Histograms from several processes merge by
// adding counts.
type hist struct {
	Counts [64 * 8]uint64
}

func bucketOf(ns int64) int {
	if ns < 8 {
		return max(int(ns), 0)
	}
	e := bits.Len64(uint64(ns)) - 1
	return e*8 + int(uint64(ns)>>(e-3)&7)
}

// bucketMid returns the middle of bucket b, in nanoseconds.
func bucketMid(b int) float64 {
	if b < 8 {
		return float64(b)
	}
	e, m := b/8, b%8
	lo := float64(uint64(8+m) << (e - 3))
	return lo + float64(uint64(1)<<(e-3))/2
}

func (h *hist) add(d time.Duration) { h.Counts[bucketOf(int64(d))]++ }

func (h *hist) merge(o *hist) {
	for i, c := range o.Counts {
		h.Counts[i] += c
	}
}

// quantile returns the q-quantile in microseconds.
func (h *hist) quantile(q float64) float64 {
	var total uint64
	for _, c := range h.Counts {
		total += c
	}
	if total == 0 {
		return 0
	}
	want := uint64(q * float64(total))
	var seen uint64
	for i, c := range h.Counts {
		seen += c
		if seen > want {
			return bucketMid(i) / 1e3
		}
	}
	return bucketMid(len(h.Counts)-1) / 1e3
}

// result is what one run of a workload on one subject measured.
type result struct {
	Ops      int64         `json:"ops"`
	Elapsed  time.Duration `json:"elapsed"`
	Mallocs  uint64        `json:"mallocs"`
	Errors   int64         `json:"errors"`
	FirstErr string        `json:"first_err,omitempty"`
	Removed  int           `json:"removed"` // sweep only
	Loads    int64         `json:"loads"`   // how many of Ops were Loads
	// Reads is how many read system calls the process made during the run
	// (/proc/self/io's syscr), -1 where that is not available. A Load
	// served from a cache makes none, so it measures the hit rate.
	Reads int64 `json:"reads"`
	Lat   hist  `json:"lat"` // Load latency; Save for write-only workloads
}

func (r *result) merge(o *result) {
	if r.Reads < 0 || o.Reads < 0 {
		r.Reads = -1
	} else {
		r.Reads += o.Reads
	}
	r.Loads += o.Loads
	r.Ops += o.Ops
	r.Elapsed = max(r.Elapsed, o.Elapsed)
	r.Mallocs += o.Mallocs
	r.Errors += o.Errors
	if r.FirstErr == "" {
		r.FirstErr = o.FirstErr
	}
	r.Removed += o.Removed
	r.Lat.merge(&o.Lat)
}

func (r *result) fail(err error) {
	r.Errors++
	if r.FirstErr == "" {
		r.FirstErr = err.Error()
	}
}

// driver runs workloads on one subject, from one goroutine.
type driver struct {
	kv       kv
	pop      *population
	payloads [][]byte
	live     time.Time // expiry of live sessions
	rng      *rand.Rand
	newTag   string // distinguishes the new ids of churn per process
	newSeq   int
}

func newDriver(k kv, pop *population, payloads [][]byte, seed uint64, newTag string) *driver {
	return &driver{
		kv: k, pop: pop, payloads: payloads,
		live:   time.Now().Add(24 * time.Hour),
		rng:    rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15)),
		newTag: newTag,
	}
}

// populate saves the whole population, 30% of it already expired.
func (d *driver) populate(progress func(done int)) error {
	past := time.Now().Add(-2 * time.Hour)
	for i, id := range d.pop.ids {
		exp := d.live
		if isExpired(i) {
			exp = past
		}
		if err := d.kv.Save(id, d.payloads[i%len(d.payloads)], exp); err != nil {
			return fmt.Errorf("populate: %w", err)
		}
		if progress != nil && i%2048 == 0 {
			progress(i)
		}
	}
	return nil
}

// phased is a kv with work of its own to start before a measurement and
// stop after it, outside the timed part (a Watch consumer).
type phased interface {
	start() error
	stop()
}

// run runs workload w for about dur, or maxOps operations, whichever comes
// first, and measures it. Sweeps run once whatever dur is.
func (d *driver) run(w string, dur time.Duration, maxOps int64) result {
	var r result
	if p, ok := d.kv.(phased); ok {
		if err := p.start(); err != nil {
			r.fail(err)
			return r
		}
		defer p.stop()
	}
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	before := ms.Mallocs
	reads := readSyscalls()
	start := time.Now()
	if w == wlSweep {
		n, err := d.kv.(sweeper).Sweep()
		r.Elapsed = time.Since(start)
		r.Lat.add(r.Elapsed)
		r.Ops, r.Removed = int64(len(d.pop.ids)), n
		if err != nil {
			r.fail(err)
		}
	} else {
		deadline := start.Add(dur)
		for r.Ops < maxOps {
			// Check the clock every few operations only: time.Now is
			// cheap but not free next to a tmpfs read.
			if r.Ops%16 == 0 && time.Now().After(deadline) {
				break
			}
			d.step(w, &r)
		}
		r.Elapsed = time.Since(start)
	}
	r.Reads = -1
	if after := readSyscalls(); reads >= 0 && after >= 0 {
		r.Reads = max(after-reads-1, 0) // the first sample's own read counts in the second
	}
	runtime.ReadMemStats(&ms)
	r.Mallocs = ms.Mallocs - before
	return r
}

// ioFile is /proc/self/io, held open so that a sample is one pread.
var (
	ioOnce sync.Once
	ioFile *os.File
)

// readSyscalls returns how many read system calls this process has made
// (every thread), or -1 where /proc/self/io is not available. The sample
// itself is one more, counted from the next sample on.
func readSyscalls() int64 {
	ioOnce.Do(func() {
		f, err := os.Open("/proc/self/io")
		if err == nil {
			ioFile = f
		}
	})
	if ioFile == nil {
		return -1
	}
	// One pread: os.File.ReadAt would read again to fill the buffer,
	// and each read counts.
	var buf [512]byte
	n, err := unix.Pread(int(ioFile.Fd()), buf[:], 0)
	if n <= 0 || err != nil {
		return -1
	}
	for line := range strings.Lines(string(buf[:n])) {
		if v, ok := strings.CutPrefix(line, "syscr:"); ok {
			c, err := strconv.ParseInt(strings.TrimSpace(v), 10, 64)
			if err != nil {
				return -1
			}
			return c
		}
	}
	return -1
}

// step does one operation of workload w (two for churn: a login and a
// logout) and records its latency.
func (d *driver) step(w string, r *result) {
	live := d.pop.live
	var i int
	if w == wlLoadHot || w == wlReadHot {
		i = hotIndex(d.rng, len(live))
	} else {
		i = d.rng.IntN(len(live))
	}
	id := live[i]
	var load bool
	switch w {
	case wlLoad, wlLoadHot:
		load = true
	case wlRead, wlReadHot:
		load = d.rng.IntN(100) < 95
	case wlMixed:
		load = d.rng.IntN(2) == 0
	case wlChurn:
		d.newSeq++
		nid := sessionID(d.newTag, d.newSeq)
		t := time.Now()
		err := d.kv.Save(nid, d.payloads[d.newSeq%len(d.payloads)], d.live)
		if err == nil {
			err = d.kv.Delete(id)
		}
		r.Lat.add(time.Since(t) / 2)
		r.Ops += 2
		if err != nil {
			r.fail(err)
		}
		live[i] = nid
		return
	}
	t := time.Now()
	var err error
	if load {
		_, err = d.kv.Load(id)
	} else {
		err = d.kv.Save(id, d.payloads[i%len(d.payloads)], d.live)
	}
	el := time.Since(t)
	// Report the latency of the operation a workload is about: loads,
	// except where there are none.
	if load || w == wlSave {
		r.Lat.add(el)
	}
	if load {
		r.Loads++
	}
	r.Ops++
	if err != nil {
		r.fail(err)
	}
}

// hotIndex draws an index into n live sessions: hotOps% of draws from the
// first hotShare% of them, the rest from the others.
func hotIndex(rng *rand.Rand, n int) int {
	hot := max(n*hotShare/100, 1)
	if hot >= n || rng.IntN(100) < hotOps {
		return rng.IntN(hot)
	}
	return hot + rng.IntN(n-hot)
}
