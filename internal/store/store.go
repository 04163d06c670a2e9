package store

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"os"
	"regexp"
	"strings"
	"time"

	"modernc.org/sqlite"
	sqlite3 "modernc.org/sqlite/lib"
)

// NotFoundError is the answer for a VM, image or kernel the user named that does not
// exist, in the user's words (`no VM named "web" (banger vm ls lists them)`), because
// it travels unchanged to the terminal. It is ErrNotFound for errors.Is.
type NotFoundError struct {
	Kind string // "VM", "image", "kernel"
	Ref  string // the name, id or reference the user gave
	Hint string // what to do, e.g. "banger vm ls lists them"
}

func (e *NotFoundError) Error() string {
	return fmt.Sprintf("no %s named %q (%s)", e.Kind, e.Ref, e.Hint)
}

// AmbiguousError is an ID prefix that matches several records; it names them so the
// user can type a longer one. It is ErrAmbiguous for errors.Is.
type AmbiguousError struct {
	Kind    string   // "VM", "image", "kernel"
	Prefix  string   // what the user typed
	Matches []string // the IDs it matches, sorted
}

func (e *AmbiguousError) Error() string {
	return fmt.Sprintf("%s ID prefix %q is ambiguous: it matches %s; type more of the ID", e.Kind, e.Prefix, strings.Join(e.Matches, ", "))
}

// Is makes errors.Is(err, ErrAmbiguous) hold.
func (e *AmbiguousError) Is(target error) bool { return target == ErrAmbiguous }

// MinIDPrefix is the shortest ID prefix accepted in place of a whole ID: shorter ones
// match too much to be meant.
const MinIDPrefix = 4

// hexPrefixRe is what may be an ID prefix (images: after "sha256:").
var hexPrefixRe = regexp.MustCompile(`^[0-9a-f]+$`)

// byIDPrefix finds the one id in table (column id) that starts with prefix, when
// prefix is at least MinIDPrefix lowercase hex digits, after an optional "sha256:". It returns "" with no error when prefix cannot be one or matches
// nothing, and an AmbiguousError when it matches several.
func byIDPrefix(ctx context.Context, q interface {
	QueryContext(context.Context, string, ...any) (*sql.Rows, error)
}, table, kind, prefix string) (string, error) {
	// Image and kernel IDs are digests ("sha256:<hex>"), which users shorten to
	// their hex; VM IDs are bare hex.
	hex := strings.TrimPrefix(prefix, "sha256:")
	if len(hex) < MinIDPrefix || !hexPrefixRe.MatchString(hex) {
		return "", nil
	}
	// Hex digits hold no LIKE wildcards; the table name is one of ours.
	rows, err := q.QueryContext(ctx, `SELECT id FROM `+table+` WHERE id LIKE ? || '%' OR id LIKE 'sha256:' || ? || '%' ORDER BY id LIMIT 6`, hex, hex)
	if err != nil {
		return "", err
	}
	defer rows.Close()
	var ids []string
	for rows.Next() {
		var id string
		if err := rows.Scan(&id); err != nil {
			return "", err
		}
		ids = append(ids, id)
	}
	if err := rows.Err(); err != nil {
		return "", err
	}
	switch len(ids) {
	case 0:
		return "", nil
	case 1:
		return ids[0], nil
	}
	return "", &AmbiguousError{Kind: kind, Prefix: prefix, Matches: ids}
}

// Is makes errors.Is(err, ErrNotFound) hold.
func (e *NotFoundError) Is(target error) bool { return target == ErrNotFound }

// Sentinel errors. Every error the store returns for one of these cases wraps the
// sentinel with the object it is about (`vm "dev": store: not found`), so callers
// test with errors.Is and translate to a wire code once, at the API edge.
var (
	// ErrNotFound: no VM, handle, lease, image, tag or kernel by that id or name.
	ErrNotFound = errors.New("store: not found")
	// ErrAmbiguous: an ID prefix matches more than one record.
	ErrAmbiguous = errors.New("store: ambiguous ID prefix")
	// ErrExists: the name, id, tap or vsock CID is already taken by another record.
	ErrExists = errors.New("store: already exists")
	// ErrInUse: an image or kernel cannot be deleted while VMs refer to it.
	ErrInUse = errors.New("store: in use")
	// ErrCIDRFull: every guest address of the bridge network is leased.
	ErrCIDRFull = errors.New("store: guest address range full")
	// ErrNewerSchema: the database was written by a newer banger than this one.
	ErrNewerSchema = errors.New("store: schema newer than this binary")
)

// busyTimeout is how long a write waits for another process (a second bangerd on
// the same root, a crashed one's leftover lock is released by the kernel) before
// giving up with SQLITE_BUSY. Writes here take milliseconds, so five seconds of
// waiting means something holds the database for real.
const busyTimeout = 5 * time.Second

// maxOpenConns bounds the pool. WAL lets readers run beside the single writer, so a
// few connections are useful; more only cost file descriptors.
const maxOpenConns = 8

// Store is bangerd's persistent state: VMs, their runtime handles, IP leases,
// images and kernels, in one SQLite database. It is safe for concurrent use by
// many goroutines, and several Stores (in one process or several) may open the
// same file: SQLite's file locks serialize their writes.
//
// Every exported method that changes state is exactly one transaction; see the
// package documentation for why that makes the store crash-safe.
type Store struct {
	db   *sql.DB // immutable; never nil until Close
	path string  // immutable

	// wlock is a one-slot semaphore serializing this Store's write transactions.
	// SQLite admits one writer per file anyway; queueing here, with a context,
	// keeps our own goroutines from polling each other through busy_timeout.
	// Other processes are still serialized by SQLite's locks.
	wlock chan struct{}

	now func() time.Time // immutable; the clock for created/updated stamps
}

// Open opens (creating if needed) the store at path and brings its schema up to
// date. The parent directory must exist (layout.Create makes it). A database
// written by a newer banger is refused with ErrNewerSchema rather than touched.
func Open(ctx context.Context, path string) (*Store, error) {
	return openWith(ctx, path, migrations())
}

// openWith is Open with an explicit migration list, so tests can exercise the
// migration machinery with lists of their own.
func openWith(ctx context.Context, path string, migs []migration) (*Store, error) {
	if path == "" {
		return nil, errors.New("store path is empty: pass the state database path (layout.StorePath)")
	}
	if strings.ContainsAny(path, "?#") {
		return nil, fmt.Errorf("store %s: the path must not contain '?' or '#': choose another --root", path)
	}
	// Create the file ourselves so it, and the -wal and -shm files SQLite derives
	// from its mode, are private to the owner. An existing file keeps its mode.
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("store %s: %w", path, err)
	}
	if err := f.Close(); err != nil {
		return nil, fmt.Errorf("store %s: %w", path, err)
	}

	// Switching a fresh file to WAL needs a lock SQLite does not wait for with the
	// busy handler: a second process opening the same new file at that instant gets
	// SQLITE_BUSY at once. Such a collision lasts milliseconds, so the whole open is
	// retried within busyTimeout, like any other wait for the lock.
	deadline := time.Now().Add(busyTimeout)
	for {
		s, err := openOnce(ctx, path, migs)
		if err == nil || !isCode(err, sqlite3.SQLITE_BUSY) || time.Now().After(deadline) {
			return s, err
		}
		select {
		case <-ctx.Done():
			return nil, err
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// openOnce opens the database and brings its schema up to date, once.
func openOnce(ctx context.Context, path string, migs []migration) (*Store, error) {
	db, err := sql.Open("sqlite", dsn(path))
	if err != nil {
		return nil, fmt.Errorf("store %s: %w", path, err)
	}
	db.SetMaxOpenConns(maxOpenConns)
	s := &Store{db: db, path: path, wlock: make(chan struct{}, 1), now: time.Now}
	if err := s.init(ctx, migs); err != nil {
		_ = db.Close() // the init error is the one worth reporting
		return nil, err
	}
	return s, nil
}

// dsn builds the modernc.org/sqlite connection string. Every pooled connection
// runs these pragmas when it opens, which matters for the per-connection ones
// (foreign_keys, busy_timeout, synchronous).
//
//   - journal_mode=WAL: readers never block the writer and a commit is one append
//     to the log, which a crash either contains whole or not at all.
//   - synchronous=FULL: the WAL is fsynced at every commit, so a committed change
//     survives power loss too, not only a killed process. The store sees a few
//     writes per VM operation; the fsync is cheap next to booting a VM.
//   - foreign_keys=1: leases and handles cannot outlive their VM, VMs cannot
//     point at a missing image or kernel.
//   - _txlock=immediate: BEGIN takes the write lock up front, so the read-then-
//     write steps inside a transaction (lowest free address, name taken?) cannot
//     interleave with another writer, and no transaction fails half-way with
//     SQLITE_BUSY_SNAPSHOT when it upgrades from reading to writing. Read-only
//     transactions (sql.TxOptions{ReadOnly: true}) still begin DEFERRED.
func dsn(path string) string {
	q := url.Values{}
	q.Set("_busy_timeout", fmt.Sprint(busyTimeout.Milliseconds()))
	q.Set("_journal_mode", "WAL")
	q.Set("_synchronous", "FULL")
	q.Set("_foreign_keys", "1")
	q.Set("_txlock", "immediate")
	return path + "?" + q.Encode()
}

// init checks that the pragmas took effect and migrates the schema.
func (s *Store) init(ctx context.Context, migs []migration) error {
	var mode string
	if err := s.db.QueryRowContext(ctx, "PRAGMA journal_mode").Scan(&mode); err != nil {
		return s.wrapOpenErr(err)
	}
	// SQLite silently keeps the old journal mode where WAL is impossible (some
	// network filesystems); the crash-safety reasoning assumes WAL, so refuse.
	if !strings.EqualFold(mode, "wal") {
		return fmt.Errorf("store %s: journal mode is %q, not WAL: put the banger root on a local filesystem", s.path, mode)
	}
	var fk int
	if err := s.db.QueryRowContext(ctx, "PRAGMA foreign_keys").Scan(&fk); err != nil {
		return s.wrapOpenErr(err)
	}
	if fk != 1 {
		return fmt.Errorf("store %s: foreign keys are off: this SQLite build cannot enforce the schema", s.path)
	}
	return s.migrate(ctx, migs)
}

func (s *Store) wrapOpenErr(err error) error {
	if isCode(err, sqlite3.SQLITE_NOTADB) {
		return fmt.Errorf("store %s is not a SQLite database: move it aside or choose another --root: %w", s.path, err)
	}
	return s.wrapDBErr(err)
}

// Close closes the database. Transactions already committed are durable; the
// Store must not be used afterwards.
func (s *Store) Close() error {
	if err := s.db.Close(); err != nil {
		return fmt.Errorf("store %s: close: %w", s.path, err)
	}
	return nil
}

// Path is the database file the store was opened on.
func (s *Store) Path() string { return s.path }

// write runs fn in one write transaction: all of its changes commit together or
// none do. fn must not call other Store methods that write (it would deadlock
// on wlock); it works through tx only.
func (s *Store) write(ctx context.Context, fn func(tx *sql.Tx) error) error {
	select {
	case s.wlock <- struct{}{}:
	case <-ctx.Done():
		return fmt.Errorf("store %s: waiting to write: %w", s.path, ctx.Err())
	}
	defer func() { <-s.wlock }()

	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return s.wrapDBErr(err)
	}
	if err := fn(tx); err != nil {
		_ = tx.Rollback() // fn's error is the cause; a rollback error adds nothing
		return err
	}
	if err := tx.Commit(); err != nil {
		return s.wrapDBErr(err)
	}
	return nil
}

// read runs fn in a read-only transaction, so several queries see one snapshot.
func (s *Store) read(ctx context.Context, fn func(tx *sql.Tx) error) error {
	tx, err := s.db.BeginTx(ctx, &sql.TxOptions{ReadOnly: true})
	if err != nil {
		return s.wrapDBErr(err)
	}
	defer func() { _ = tx.Rollback() }() // read-only: nothing to keep
	return fn(tx)
}

// wrapDBErr labels an error from SQLite with the store path and, for a lock held
// too long, says what to look for.
func (s *Store) wrapDBErr(err error) error {
	if isCode(err, sqlite3.SQLITE_BUSY) {
		return fmt.Errorf("store %s is locked by another process for over %s: is a second bangerd running on this root? %w", s.path, busyTimeout, err)
	}
	return fmt.Errorf("store %s: %w", s.path, err)
}

// isCode reports whether err is a SQLite error whose primary result code is code
// (code may also be an extended code, compared exactly).
func isCode(err error, code int) bool {
	var se *sqlite.Error
	if !errors.As(err, &se) {
		return false
	}
	if code > 0xff {
		return se.Code() == code
	}
	return se.Code()&0xff == code
}

// isUnique reports a UNIQUE or PRIMARY KEY violation. The store checks for
// duplicates itself to give a precise message; this is the backstop.
func isUnique(err error) bool {
	return isCode(err, sqlite3.SQLITE_CONSTRAINT_UNIQUE) || isCode(err, sqlite3.SQLITE_CONSTRAINT_PRIMARYKEY)
}

// stamp and unstamp convert times to the INTEGER unix-nanosecond columns. An
// integer compares and sorts correctly in SQL, unlike variable-width text.
func stamp(t time.Time) int64 { return t.UnixNano() }

func unstamp(n int64) time.Time { return time.Unix(0, n).UTC() }

// jsonOrEmpty returns raw as text for a JSON column, "{}" when empty, and an error
// when it is not valid JSON (the column's CHECK would refuse it less clearly).
func jsonOrEmpty(raw json.RawMessage) (string, error) {
	if len(raw) == 0 {
		return "{}", nil
	}
	if !json.Valid(raw) {
		return "", errors.New("not valid JSON")
	}
	return string(raw), nil
}
