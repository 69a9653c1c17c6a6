// Package gorillastore is a github.com/gorilla/sessions store backed by a
// filestore: a drop-in replacement for sessions.FilesystemStore that stays
// correct when many goroutines and processes share the session directory.
//
// Switching is one line:
//
//	store := sessions.NewFilesystemStore(path, key)   // before
//	store := gorillastore.NewFilesystemStore(path, key) // after
//
// As with FilesystemStore, the cookie holds only the session id, signed
// (and optionally encrypted) with the store's Codecs, and the session's
// Values are encoded with the same Codecs and kept on disk. What changes:
//
//   - Writes are atomic and coordinated across processes, so concurrent
//     requests never tear a session file, and a preforked or blue/green
//     deployment can share one directory.
//   - A session's Options.MaxAge becomes its record's expiry, and expired
//     records are removed by the filestore's sweeper. FilesystemStore never
//     removes a session that was not explicitly deleted.
//   - Session ids never reach a file name: the filestore names records by a
//     hash of the id.
//   - The codecs' length limit is raised from securecookie's 4096 bytes,
//     meant for cookies, to the filestore's own record size cap.
//
// # Differences from FilesystemStore
//
// A session whose Options.MaxAge is 0 is a browser session: its cookie has
// no Max-Age and its record lives for BrowserSessionTTL after its last Save.
// FilesystemStore instead deletes the session when MaxAge is 0, which makes
// browser-session cookies impossible with it (gorilla/sessions issue 267).
// Applications that relied on that to log users out must set MaxAge to -1,
// which deletes the record here as it does in every gorilla store.
//
// When a request carries a valid cookie whose record is gone (expired or
// deleted), New returns a new session with no error, and the next Save gives
// it a fresh id. FilesystemStore returns the file's "not exist" error and
// reuses the old id, which lets whoever knew that id share the next session
// saved under it.
//
// # Frameworks
//
// A *Store is a sessions.Store, so it plugs into anything that takes one,
// such as github.com/labstack/echo-contrib/session. For
// github.com/gin-contrib/sessions, whose Store interface adds an Options
// method, use GinStore.
package gorillastore

import (
	"context"
	"encoding/base32"
	"errors"
	"fmt"
	"math"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"github.com/filestore-go/filestore"
	"github.com/gorilla/securecookie"
	"github.com/gorilla/sessions"
)

// DefaultBrowserSessionTTL is the BrowserSessionTTL of a new Store.
const DefaultBrowserSessionTTL = 24 * time.Hour

// defaultMaxAge is the default Options.MaxAge of a new Store: 30 days, as
// for sessions.FilesystemStore.
const defaultMaxAge = 86400 * 30

// idEncoding encodes new session ids: base32 without padding, as gorilla's
// FilesystemStore does, so that ids are safe in any cookie or log format.
var idEncoding = base32.StdEncoding.WithPadding(base32.NoPadding)

// errNilSession is returned by Save for a nil session.
var errNilSession = errors.New("gorillastore: nil session")

// Store is a sessions.Store that keeps sessions in a filestore. Create it
// with NewStore or NewFilesystemStore.
//
// Get, New and Save are safe for concurrent use by multiple goroutines and
// by other processes sharing the filestore. The exported fields and the
// MaxAge and MaxLength methods configure the Store: set them before it
// serves requests, not concurrently with Get, New or Save.
type Store struct {
	// Codecs sign, and optionally encrypt, both the cookie holding the
	// session id and the session values on disk. Several codecs allow key
	// rotation: the first encodes, each is tried in turn to decode.
	Codecs []securecookie.Codec

	// Options is the default configuration of new sessions. Each session
	// gets a copy, which the application may change before Save.
	Options *sessions.Options

	// BrowserSessionTTL is how long the record of a session whose
	// Options.MaxAge is 0 lives after its last Save. Such a session's
	// cookie lasts until the browser closes, which the server cannot see,
	// so without a bound its record would stay on disk forever. Zero or
	// negative means such records never expire.
	BrowserSessionTTL time.Duration

	fs    *filestore.Store
	owned bool  // fs was opened by NewFilesystemStore; Close closes it
	err   error // why the Store is unusable: fs could not be opened, or is nil
}

// NewStore returns a Store that keeps sessions in fs. The caller keeps
// ownership of fs and closes it after the Store is no longer used.
//
// keyPairs are as for sessions.NewFilesystemStore: an authentication key
// (32 or 64 bytes recommended) and an optional encryption key (16, 24 or 32
// bytes, selecting AES-128, AES-192 or AES-256) per pair, with older pairs
// after newer ones for key rotation.
//
// The new Store's Options have Path "/" and MaxAge 30 days, as
// FilesystemStore's do, and each codec's MaxLength is
// filestore.DefaultMaxRecordSize; see MaxLength.
func NewStore(fs *filestore.Store, keyPairs ...[]byte) *Store {
	s := &Store{
		Codecs:            securecookie.CodecsFromPairs(keyPairs...),
		Options:           &sessions.Options{Path: "/", MaxAge: defaultMaxAge},
		BrowserSessionTTL: DefaultBrowserSessionTTL,
		fs:                fs,
	}
	if fs == nil {
		s.err = errors.New("gorillastore: nil filestore")
	}
	s.MaxAge(s.Options.MaxAge)
	s.MaxLength(filestore.DefaultMaxRecordSize)
	return s
}

// NewFilesystemStore opens the filestore in the directory path with default
// options, creating it if needed, and returns a Store that keeps sessions
// there. It has the signature of sessions.NewFilesystemStore so that
// switching stores is a one-line change; see NewStore for keyPairs and the
// defaults. An empty path means a directory named gorillastore-UID in
// os.TempDir, UID being the current user's id.
//
// Like the function it replaces, NewFilesystemStore cannot fail. If the
// filestore cannot be opened (see filestore.Open), the returned Store is
// unusable: Err reports the error, every New returns a new session and the
// error, and every Save returns the error. Check Err at startup, or open
// the filestore yourself and use NewStore.
//
// The Store owns the filestore it opened, whose background sweeper runs
// until Close.
func NewFilesystemStore(path string, keyPairs ...[]byte) *Store {
	if path == "" {
		path = filepath.Join(os.TempDir(), "gorillastore-"+strconv.Itoa(os.Getuid()))
	}
	fs, err := filestore.Open(path, nil)
	s := NewStore(fs, keyPairs...)
	s.owned = true
	if err != nil {
		s.err = fmt.Errorf("gorillastore: %w", err)
	}
	return s
}

// Err returns the error that kept NewFilesystemStore from opening its
// filestore, or that NewStore was given a nil filestore; otherwise nil. A
// Store with an error is unusable, and New and Save return that error. Err
// is safe for concurrent use and does not block.
func (s *Store) Err() error { return s.check() }

var errNilStore = errors.New("gorillastore: nil Store")

// check returns why s cannot serve requests, or nil.
func (s *Store) check() error {
	if s == nil {
		return errNilStore
	}
	return s.err
}

// defaultOptions returns a copy of the store's default session options.
func (s *Store) defaultOptions() *sessions.Options {
	opts := sessions.Options{Path: "/"}
	if s.Options != nil {
		opts = *s.Options
	}
	return &opts
}

// Close closes the filestore that NewFilesystemStore opened, stopping its
// sweeper; after Close, New and Save return errors. For a Store made by
// NewStore, Close does nothing and returns nil: the caller owns that
// filestore. Close is safe for concurrent use, and waits for a sweep in
// progress to finish; calls after the first return an error matching
// filestore.ErrClosed.
func (s *Store) Close() error {
	if s == nil || !s.owned || s.fs == nil {
		return nil
	}
	return s.fs.Close()
}

// MaxAge sets the store's default Options.MaxAge to age seconds and makes
// each securecookie codec reject cookies and records encoded more than age
// seconds ago (0 disables that check). Individual sessions are deleted by
// setting their Options.MaxAge to -1 before Save.
//
// MaxAge modifies the Store: do not call it concurrently with other methods.
func (s *Store) MaxAge(age int) {
	if s.Options == nil {
		s.Options = &sessions.Options{Path: "/"}
	}
	s.Options.MaxAge = age
	for _, c := range s.Codecs {
		if sc, ok := c.(*securecookie.SecureCookie); ok {
			sc.MaxAge(age)
		}
	}
}

// MaxLength sets each securecookie codec's limit on the length of an
// encoded value, in bytes; 0 means no limit. The limit applies to the
// encoded session values stored on disk and to the cookie, so a Save of
// larger values fails and so does decoding a longer cookie.
//
// The default, filestore.DefaultMaxRecordSize, replaces securecookie's
// 4096 bytes, which is sized for values kept in cookies. Values longer than
// the filestore's own Options.MaxRecordSize are refused by the filestore
// with filestore.ErrTooLarge whatever MaxLength says.
//
// MaxLength modifies the Store: do not call it concurrently with other
// methods.
func (s *Store) MaxLength(l int) {
	for _, c := range s.Codecs {
		if sc, ok := c.(*securecookie.SecureCookie); ok {
			sc.MaxLength(l)
		}
	}
}

// Get returns the session called name for r, through r's
// sessions.Registry: the first call for a name calls New and later calls
// return the same session. As with New, the session is never nil, even
// when the error is not.
//
// Get is safe for concurrent use; it reads the session's record and takes
// no lock.
func (s *Store) Get(r *http.Request, name string) (*sessions.Session, error) {
	return sessions.GetRegistry(r).Get(s, name)
}

// New returns the session called name for r, loaded from the filestore if
// r carries a valid cookie for it and its record is live, without
// registering it in r's registry. It never returns a nil session.
//
// If r has no such cookie (or an empty one), or the record is missing or
// expired, New returns a new session (IsNew true) with no error. If the cookie fails to decode
// (tampered, signed with an unknown key, or older than the codecs' MaxAge),
// or the record cannot be read or decoded, New returns a new session and
// the error. A new session has no id; Save assigns a fresh one.
//
// New is safe for concurrent use; it reads the session's record and takes
// no lock.
func (s *Store) New(r *http.Request, name string) (*sessions.Session, error) {
	session := sessions.NewSession(s, name)
	session.IsNew = true
	if err := s.check(); err != nil {
		session.Options = &sessions.Options{Path: "/"}
		return session, err
	}
	session.Options = s.defaultOptions()
	c, err := r.Cookie(name)
	if err != nil || c.Value == "" {
		// An empty value is what gorilla's stores set to delete a cookie,
		// so it is no session rather than a bad one.
		return session, nil
	}
	var id string
	if err := securecookie.DecodeMulti(name, c.Value, &id, s.Codecs...); err != nil {
		return session, err
	}
	err = s.load(r.Context(), session, id)
	if errors.Is(err, filestore.ErrNotFound) {
		return session, nil
	}
	return session, err
}

// load reads the record for id into session, leaving session new if it
// cannot.
func (s *Store) load(ctx context.Context, session *sessions.Session, id string) error {
	rec, err := s.fs.Load(ctx, id)
	if err != nil {
		return fmt.Errorf("gorillastore: %w", err)
	}
	values := make(map[any]any)
	if err := securecookie.DecodeMulti(session.Name(), string(rec.Data), &values, s.Codecs...); err != nil {
		return fmt.Errorf("gorillastore: decode session values: %w", err)
	}
	session.ID = id
	session.Values = values
	session.IsNew = false
	return nil
}

// Save writes session to the filestore and sets its cookie on w.
//
// If session.Options.MaxAge is negative, Save deletes the session's record
// and sets a cookie that deletes the browser's. Otherwise it gives a new
// session a fresh random id, stores the values encoded with the Codecs,
// expiring MaxAge seconds from now (BrowserSessionTTL from now if MaxAge is
// 0), and sets a cookie holding the encoded id.
//
// Save is safe for concurrent use. It waits for the session's lock in the
// filestore, shared with every process using it, honouring r's context,
// and returns once the record is durable.
func (s *Store) Save(r *http.Request, w http.ResponseWriter, session *sessions.Session) error {
	if session == nil {
		return errNilSession
	}
	if err := s.check(); err != nil {
		return err
	}
	if session.Options == nil {
		session.Options = s.defaultOptions()
	}
	ctx := r.Context()
	if session.Options.MaxAge < 0 {
		// A session never saved has no id, which the filestore rejects
		// as invalid: it has no record to delete.
		err := s.fs.Delete(ctx, session.ID)
		if err != nil && !errors.Is(err, filestore.ErrInvalidID) {
			return fmt.Errorf("gorillastore: %w", err)
		}
		http.SetCookie(w, sessions.NewCookie(session.Name(), "", session.Options))
		return nil
	}

	if session.ID == "" {
		key := securecookie.GenerateRandomKey(32)
		if key == nil {
			return errors.New("gorillastore: cannot generate a session id: system random source failed")
		}
		session.ID = idEncoding.EncodeToString(key)
	}
	values, err := securecookie.EncodeMulti(session.Name(), session.Values, s.Codecs...)
	if err != nil {
		return fmt.Errorf("gorillastore: encode session values: %w", err)
	}
	if err := s.fs.Save(ctx, session.ID, []byte(values), s.expiry(session.Options.MaxAge)); err != nil {
		return fmt.Errorf("gorillastore: %w", err)
	}
	cookie, err := securecookie.EncodeMulti(session.Name(), session.ID, s.Codecs...)
	if err != nil {
		return fmt.Errorf("gorillastore: encode session cookie: %w", err)
	}
	http.SetCookie(w, sessions.NewCookie(session.Name(), cookie, session.Options))
	return nil
}

// expiry returns the record expiry for a session saved now with the given
// non-negative MaxAge; the zero Time means never.
func (s *Store) expiry(maxAge int) time.Time {
	d := s.BrowserSessionTTL
	if maxAge > 0 {
		d = math.MaxInt64 // about 292 years; the filestore clamps it
		if int64(maxAge) < int64(math.MaxInt64/time.Second) {
			d = time.Duration(maxAge) * time.Second
		}
	}
	if d <= 0 {
		return time.Time{}
	}
	return time.Now().Add(d)
}
