package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/url"
	"regexp"
	"sync"
	"time"

	"github.com/filestore-go/filestore"
	"github.com/gomodule/redigo/redis"
	"github.com/spf13/cobra"
)

func init() { commands = append(commands, newMigrate) }

// migrateFormats are the key prefixes of the Redis stores migrate writes
// for: scs's redisstore keeps a session under "scs:session:"+token (its
// NewWithPrefix changes that), Fiber's redis storage under the key as is.
var migrateFormats = map[string]string{
	"scs":   "scs:session:",
	"fiber": "",
}

// migrateOpts are migrate's flags.
type migrateOpts struct {
	to        string
	format    string
	prefix    string
	prefixSet bool
	dryRun    bool
	overwrite bool
	allowNet  bool
	batch     int
}

// migrateResult is migrate's summary; --json prints it as is.
type migrateResult struct {
	Target string `json:"target"`
	Format string `json:"format"`
	Prefix string `json:"prefix"`
	DryRun bool   `json:"dry_run"`
	// Sessions is how many live sessions the store held when read.
	Sessions int `json:"sessions"`
	// Copied were written to Redis (would be, with --dry-run).
	Copied int `json:"copied"`
	// Kept were in Redis already and left as they were (not counted
	// with --overwrite or --dry-run).
	Kept int `json:"kept"`
	// NoExpiry never expire: they have no TTL in Redis either.
	NoExpiry int `json:"no_expiry"`
	// Gone expired or were deleted during the run; not in Redis.
	Gone int `json:"gone"`
	// Bytes is the data copied (would be, with --dry-run).
	Bytes int64 `json:"bytes"`
	// Unreadable records were skipped (see filestore verify).
	Unreadable bool `json:"unreadable,omitempty"`
}

func newMigrate(e *env) *cobra.Command {
	var o migrateOpts
	cmd := &cobra.Command{
		Use:   "migrate DIR --to redis://HOST:PORT[/DB] --format scs|fiber",
		Short: "Copy every live session into Redis, for scs's or Fiber's Redis store",
		Long: `migrate copies every live session of the store in DIR into Redis, in the
key and value format that the application's Redis store reads:

  --format scs    scs's redisstore: key "scs:session:" + token, the data as is
  --format fiber  Fiber's redis storage: the key as is, the data as is

--prefix replaces the key prefix (scs's redisstore.NewWithPrefix). Each
copy expires in Redis when the original would (PXAT, to the millisecond);
a session stored without an expiry gets no TTL in Redis, and so never
expires there either.

A session already in Redis is kept as it is: during a move the application
(through scsstore.Fallback) writes newer data there than the store holds.
--overwrite replaces it. Running migrate again is safe: it copies what is
missing and changes nothing else. A session deleted from the store while
migrate runs (a user who logs out) is removed from Redis again.

Writes go out in pipelined batches. On a terminal a progress bar shows on
stderr; a summary follows on stdout. No session id is printed. --dry-run
reads the store and prints the summary without connecting to Redis.

migrate never sweeps the store, and changes nothing in it but a record of
its own, under a random id, that it saves and deletes at the end to time
the store's change notifications. A store on a network filesystem, which
filestore refuses, opens with --allow-network-fs: to move such a store off
it, stop every writer but one host's first.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			o.prefixSet = cmd.Flags().Changed("prefix")
			return e.migrate(cmd.Context(), args[0], o)
		},
	}
	f := cmd.Flags()
	f.StringVar(&o.to, "to", "", "the Redis server: redis://[USER:PASSWORD@]HOST:PORT[/DB] (rediss:// for TLS)")
	f.StringVar(&o.format, "format", "", "the application's Redis store: scs or fiber")
	f.StringVar(&o.prefix, "prefix", "", `key prefix (default "scs:session:" for scs, none for fiber)`)
	f.BoolVar(&o.dryRun, "dry-run", false, "read the store and report, without connecting to Redis")
	f.BoolVar(&o.overwrite, "overwrite", false, "replace sessions already in Redis")
	f.IntVar(&o.batch, "batch", 1000, "sessions per pipelined batch")
	f.BoolVar(&o.allowNet, "allow-network-fs", false, "open a store on a network filesystem (NFS, SMB, ...), to move it off one")
	f.BoolVar(&e.jsonOut, "json", false, "print the summary as JSON")
	_ = cmd.MarkFlagRequired("to")     // error deliberately ignored: the flag exists
	_ = cmd.MarkFlagRequired("format") // error deliberately ignored: as above
	return cmd
}

var redisDBPath = regexp.MustCompile(`^(?:/(\d*))?$`)

// redisTarget checks a --to URL and returns it without its user
// information, to be printed.
func redisTarget(raw string) (string, error) {
	u, err := url.Parse(raw)
	if err != nil {
		return "", usagef("--to: %v", err)
	}
	if u.Scheme != "redis" && u.Scheme != "rediss" {
		return "", usagef("--to: want redis://HOST:PORT[/DB] or rediss://..., got scheme %q", u.Scheme)
	}
	if u.Host == "" || u.Opaque != "" {
		return "", usagef("--to: no host in %q", u.Redacted())
	}
	if !redisDBPath.MatchString(u.Path) {
		return "", usagef("--to: the path must be a database number, got %q", u.Path)
	}
	host := u.Host
	if _, _, err := net.SplitHostPort(host); err != nil {
		host = net.JoinHostPort(host, "6379")
	}
	db := "0"
	if m := redisDBPath.FindStringSubmatch(u.Path); m[1] != "" {
		db = m[1]
	}
	return u.Scheme + "://" + host + "/" + db, nil
}

func (e *env) migrate(ctx context.Context, dir string, o migrateOpts) error {
	if ctx == nil {
		ctx = context.Background()
	}
	def, ok := migrateFormats[o.format]
	if !ok {
		return usagef("--format: want scs or fiber, got %q", o.format)
	}
	if !o.prefixSet {
		o.prefix = def
	}
	if o.batch < 1 {
		return usagef("--batch: want at least 1, got %d", o.batch)
	}
	target, err := redisTarget(o.to)
	if err != nil {
		return err
	}
	st, err := filestore.Open(dir, &filestore.Options{NoCreate: true, SweepInterval: -1, AllowNetworkFS: o.allowNet})
	if err != nil {
		return err
	}
	defer st.Close()

	res := migrateResult{Target: target, Format: o.format, Prefix: o.prefix, DryRun: o.dryRun}
	var conn redis.Conn
	if !o.dryRun {
		conn, err = redis.DialURLContext(ctx, o.to,
			redis.DialConnectTimeout(10*time.Second),
			redis.DialReadTimeout(time.Minute),
			redis.DialWriteTimeout(time.Minute))
		if err != nil {
			return fmt.Errorf("migrate: cannot connect to %s: %w", target, err)
		}
		defer conn.Close()
		if _, err := conn.Do("PING"); err != nil {
			return fmt.Errorf("migrate: %s does not answer: %w", target, err)
		}
	}
	m := &migrator{st: st, conn: conn, o: o, res: &res, bar: e.newProgress(-1, "migrating sessions")}
	err = m.run(ctx)
	m.bar.Finish()
	if errors.Is(err, filestore.ErrCorrupt) {
		res.Unreadable = true
		e.warnf("%v", err)
		err = nil
	}
	if err != nil {
		if o.dryRun {
			return fmt.Errorf("migrate: %w", err)
		}
		return fmt.Errorf("migrate: %w (%d sessions copied before it; running migrate again is safe)", err, res.Copied)
	}
	if e.jsonOut {
		if err := e.writeJSON(res); err != nil {
			return err
		}
	} else {
		e.printMigrate(res)
	}
	if res.Unreadable {
		return problems("")
	}
	return nil
}

func (e *env) printMigrate(r migrateResult) {
	verb := "migrated"
	if r.DryRun {
		verb = "would migrate (dry run)"
	}
	fmt.Fprintf(e.stdout, "%s %d sessions to %s (%s format, key prefix %q)\n", verb, r.Sessions, r.Target, r.Format, r.Prefix)
	tw := e.table()
	copied := "copied"
	if r.DryRun {
		copied = "to copy"
	}
	fmt.Fprintf(tw, "  %s\t%d\t(%s)\n", copied, r.Copied, humanBytes(r.Bytes))
	if !r.DryRun {
		fmt.Fprintf(tw, "  already in Redis, kept\t%d\n", r.Kept)
	}
	fmt.Fprintf(tw, "  without expiry (no TTL in Redis)\t%d\n", r.NoExpiry)
	fmt.Fprintf(tw, "  expired or deleted during the run\t%d\n", r.Gone)
	_ = tw.Flush() // error deliberately ignored: stdout's errors surface nowhere better
	if r.Unreadable {
		fmt.Fprintln(e.stdout, "  some records could not be read and were skipped: see the warning above and 'filestore verify'")
	}
}

// migrator copies batches of records into Redis over one connection.
type migrator struct {
	st   *filestore.Store
	conn redis.Conn // nil for a dry run
	o    migrateOpts
	res  *migrateResult // Sessions is the walk's, the rest the writer's
	bar  *progress
	tr   *tracker // nil for a dry run
}

// run walks the store and writes what it finds: the walk fills batches,
// and another goroutine writes each to Redis while the walk reads the
// next, so that the two overlap. The first error of either ends both;
// the writer's wins, since a failed write stops the walk with
// context.Canceled.
func (m *migrator) run(ctx context.Context) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	if m.conn != nil {
		m.tr = newTracker()
		// Without notifications every copy is checked by reading the
		// store again: slower, as safe. On a network filesystem they
		// would miss the deletions made by other hosts.
		events, err := m.st.Watch(ctx)
		if err != nil || m.o.allowNet {
			m.tr.blind = true
		} else {
			go m.tr.follow(ctx, events)
		}
	}
	batches := make(chan []filestore.Record, 2)
	written := make(chan error, 1)
	go func() {
		var err error
		for b := range batches {
			if err == nil {
				if err = m.flush(ctx, b); err != nil {
					cancel()
				}
			}
		}
		written <- err
	}()
	batch := make([]filestore.Record, 0, m.o.batch)
	send := func() error {
		if len(batch) == 0 {
			return nil
		}
		select {
		case batches <- batch:
			batch = make([]filestore.Record, 0, m.o.batch)
			return nil
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	err := m.st.ForEach(ctx, func(r filestore.Record) error {
		m.res.Sessions++
		batch = append(batch, r)
		if len(batch) == cap(batch) {
			return send()
		}
		return nil
	})
	if err == nil || errors.Is(err, filestore.ErrCorrupt) {
		// ForEach reports unreadable records after visiting the rest.
		if serr := send(); serr != nil {
			err = serr
		}
	}
	close(batches)
	if werr := <-written; werr != nil {
		return werr
	}
	if err != nil || m.tr == nil {
		return err
	}
	// Deletions made before the last writes may still be on their way as
	// notifications: fence them, then handle what they name.
	m.fence(ctx)
	return m.undoDeleted(ctx)
}

// flush writes a batch in one pipeline, then removes again from Redis
// what was deleted from the store meanwhile.
func (m *migrator) flush(ctx context.Context, batch []filestore.Record) error {
	m.hook("sending")
	now := time.Now()
	var sent []int
	for i, r := range batch {
		if !r.Expiry.IsZero() && !r.Expiry.After(now) {
			m.res.Gone++
			continue
		}
		if r.Expiry.IsZero() {
			m.res.NoExpiry++
		}
		if m.conn == nil {
			m.res.Copied++
			m.res.Bytes += int64(len(r.Data))
			continue
		}
		args := redis.Args{m.o.prefix + r.ID, r.Data}
		if !r.Expiry.IsZero() {
			args = append(args, "PXAT", r.Expiry.UnixMilli())
		}
		if !m.o.overwrite {
			args = append(args, "NX")
		}
		if err := m.conn.Send("SET", args...); err != nil {
			return redisErr(err)
		}
		sent = append(sent, i)
	}
	if m.conn == nil {
		m.bar.Add(len(batch))
		return nil
	}
	if err := m.conn.Flush(); err != nil {
		return redisErr(err)
	}
	for _, i := range sent {
		reply, err := m.conn.Receive()
		if err != nil {
			return redisErr(err)
		}
		if reply == nil { // NX: the key was there
			m.res.Kept++
			continue
		}
		r := batch[i]
		m.res.Copied++
		m.res.Bytes += int64(len(r.Data))
		m.tr.add(r)
	}
	m.hook("written")
	if err := m.undoDeleted(ctx); err != nil {
		return err
	}
	m.bar.Add(len(batch))
	m.hook("done")
	return nil
}

// undoDeleted deletes from Redis the copies whose sessions were deleted
// from the store after the walk read them: a user who logged out through
// scsstore.Fallback, which deletes from the store first and Redis second,
// while migrate was copying their session. Whichever of the two deletes
// from Redis last removes it. A copy whose session is gone because it
// expired is left alone: Redis expires it at the same time, unless the
// application has since renewed it there.
func (m *migrator) undoDeleted(ctx context.Context) error {
	now := time.Now()
	var dels int
	for _, c := range m.tr.takeSuspects() {
		_, err := m.st.Load(ctx, c.id)
		if err != nil && !errors.Is(err, filestore.ErrNotFound) {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			continue // unreadable now: it was read before, keep the copy
		}
		if err == nil || (!c.expiry.IsZero() && !c.expiry.After(now)) {
			continue
		}
		if err := m.conn.Send("DEL", m.o.prefix+c.id); err != nil {
			return redisErr(err)
		}
		m.tr.drop(c.i)
		dels++
		m.res.Copied--
		m.res.Bytes -= int64(c.size)
		m.res.Gone++
	}
	if dels == 0 {
		return nil
	}
	if err := m.conn.Flush(); err != nil {
		return redisErr(err)
	}
	for range dels {
		if _, err := m.conn.Receive(); err != nil {
			return redisErr(err)
		}
	}
	return nil
}

// copied is a session this run wrote to Redis.
type copied struct {
	id      string
	expiry  time.Time
	size    int
	key     string // filestore.Key(id), once the tracker has indexed it
	dropped bool   // deleted from Redis again, or copied again later
}

// tracker tells which of the sessions a run copied may have been deleted
// from the store since the walk read them: those whose record the store's
// change notifications (Store.Watch) report deleted, or every copy once
// notifications were lost or could not be had. It keeps each copy's id
// until the run ends, as a deletion may be reported at any time. Its
// methods are safe for concurrent use.
//
// Notifications name records by key (filestore.Key, a SHA-256), so the
// tracker must know the key of every copy once a deletion is reported.
// It learns them only then, all at once and each once: a run during
// which no session is deleted computes none.
type tracker struct {
	mu       sync.Mutex
	copies   []copied
	byKey    map[string]int   // key -> index in copies, for copies[:indexed]
	indexed  int              // how many copies byKey covers
	deleted  map[string]bool  // keys reported deleted since the run began
	suspects map[int]struct{} // copies to look up in the store again
	blind    bool             // notifications were lost: every copy is a suspect

	fenceKey     string        // the key of fence's own record
	fenceSaved   chan struct{} // closed when its saving is reported
	fenceDeleted chan struct{} // closed when its deletion is reported
}

func newTracker() *tracker {
	return &tracker{byKey: map[string]int{}, deleted: map[string]bool{}, suspects: map[int]struct{}{}}
}

// add records a copy, a suspect at once if its record was reported
// deleted already or notifications were lost.
func (t *tracker) add(r filestore.Record) {
	c := copied{id: r.ID, expiry: r.Expiry, size: len(r.Data)}
	t.mu.Lock()
	defer t.mu.Unlock()
	t.copies = append(t.copies, c)
	i := len(t.copies) - 1
	if t.blind {
		t.suspects[i] = struct{}{}
		return
	}
	if len(t.deleted) > 0 {
		t.index()
		if t.deleted[t.copies[i].key] {
			t.suspects[i] = struct{}{}
		}
	}
}

// index learns the keys of the copies not yet indexed. t.mu is held.
func (t *tracker) index() {
	for ; t.indexed < len(t.copies); t.indexed++ {
		c := &t.copies[t.indexed]
		c.key = filestore.Key(c.id)
		if prev, ok := t.byKey[c.key]; ok {
			// The same session copied twice (a walk may list a name
			// that was replaced twice): one Redis key, one suspect.
			t.copies[prev].dropped = true
			delete(t.suspects, prev)
		}
		t.byKey[c.key] = t.indexed
	}
}

// drop marks copy i as deleted from Redis again.
func (t *tracker) drop(i int) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.copies[i].dropped = true
}

// suspect is a copy to look up in the store again, and its index.
type suspect struct {
	copied
	i int
}

// takeSuspects returns the suspects found since the last call.
func (t *tracker) takeSuspects() []suspect {
	t.mu.Lock()
	defer t.mu.Unlock()
	s := make([]suspect, 0, len(t.suspects))
	for i := range t.suspects {
		if !t.copies[i].dropped {
			s = append(s, suspect{t.copies[i], i})
		}
	}
	clear(t.suspects)
	return s
}

// follow takes in the store's notifications until ctx ends. If they end
// before it, notifications are lost from then on.
func (t *tracker) follow(ctx context.Context, events <-chan filestore.Event) {
	for ev := range events {
		t.mu.Lock()
		switch ev.Kind {
		case filestore.EventSaved:
			if ev.Key == t.fenceKey && t.fenceSaved != nil {
				close(t.fenceSaved)
				t.fenceSaved = nil
			}
		case filestore.EventDeleted:
			if ev.Key == t.fenceKey {
				if t.fenceDeleted != nil {
					close(t.fenceDeleted)
					t.fenceDeleted = nil
				}
				break
			}
			t.deleted[ev.Key] = true
			t.index()
			if i, ok := t.byKey[ev.Key]; ok {
				t.suspects[i] = struct{}{}
			}
		case filestore.EventOverflow:
			t.goBlind()
		}
		t.mu.Unlock()
	}
	if ctx.Err() == nil {
		t.mu.Lock()
		t.goBlind()
		t.mu.Unlock()
	}
}

// goBlind makes every copy a suspect, now and from now on. t.mu is held.
func (t *tracker) goBlind() {
	if t.blind {
		return
	}
	t.blind = true
	for i, c := range t.copies {
		if !c.dropped {
			t.suspects[i] = struct{}{}
		}
	}
}

// fence makes sure that every notification of a deletion made before it
// was called has been taken in. The store's notifications come in the order
// the kernel queued them, so fence saves and deletes a record of its own,
// under a random id that no session has, and waits for the notification
// of that deletion. If that cannot be done in time, notifications count as
// lost and every copy is looked up in the store again.
func (m *migrator) fence(ctx context.Context) {
	if m.tr.isBlind() {
		return
	}
	var b [16]byte
	_, _ = rand.Read(b[:]) // never fails (crypto/rand)
	id := "filestore-migrate-fence-" + hex.EncodeToString(b[:])
	saved, deleted := m.tr.expect(filestore.Key(id))
	// The record's shard directory may be new, and a new directory is
	// watched only from when the watcher sees it: the record is reported
	// saved once it is, and only then is its deletion sure to be seen.
	ok := m.st.Save(ctx, id, []byte{0}, time.Now().Add(time.Minute)) == nil && m.await(ctx, saved)
	if err := m.st.Delete(ctx, id); err != nil {
		ok = false
	}
	if ok && m.await(ctx, deleted) {
		return
	}
	m.tr.mu.Lock()
	m.tr.goBlind()
	m.tr.mu.Unlock()
}

// await waits for c to close, at most 30 seconds.
func (m *migrator) await(ctx context.Context, c <-chan struct{}) bool {
	select {
	case <-c:
		return true
	case <-time.After(30 * time.Second):
	case <-ctx.Done():
	}
	return false
}

func (t *tracker) isBlind() bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.blind
}

// expect returns channels closed when key is reported saved, and deleted.
func (t *tracker) expect(key string) (saved, deleted <-chan struct{}) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.fenceKey, t.fenceSaved, t.fenceDeleted = key, make(chan struct{}), make(chan struct{})
	return t.fenceSaved, t.fenceDeleted
}

// migrateBatchHook, when a test sets it, runs at points of each batch:
// "sending" before its SETs go out, "written" when they have been
// answered, "done" at its end.
var migrateBatchHook func(point string)

func (m *migrator) hook(point string) {
	if h := migrateBatchHook; h != nil {
		h(point)
	}
}

// redisErr words a failure of the Redis connection for the operator.
func redisErr(err error) error {
	var re redis.Error
	if errors.As(err, &re) {
		return fmt.Errorf("redis refused a write: %w", err)
	}
	return fmt.Errorf("lost the connection to redis: %w", err)
}
