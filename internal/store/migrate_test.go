package store

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestOpenFreshDatabase(t *testing.T) {
	s := newStore(t)
	ctx := context.Background()

	v, err := s.SchemaVersion(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if want := len(migrations()); v != want {
		t.Errorf("schema version: got %d, want %d", v, want)
	}
	pragmas := []struct {
		pragma, want string
	}{
		{"journal_mode", "wal"},
		{"foreign_keys", "1"},
		{"synchronous", "2"}, // FULL
		{"busy_timeout", fmt.Sprint(busyTimeout.Milliseconds())},
	}
	for _, p := range pragmas {
		var got string
		if err := s.db.QueryRowContext(ctx, "PRAGMA "+p.pragma).Scan(&got); err != nil {
			t.Fatalf("PRAGMA %s: %v", p.pragma, err)
		}
		if got != p.want {
			t.Errorf("PRAGMA %s: got %q, want %q", p.pragma, got, p.want)
		}
	}
	for _, table := range []string{"vms", "vm_handles", "ip_leases", "images", "image_tags", "kernels"} {
		var n int
		err := s.db.QueryRowContext(ctx, `SELECT count(*) FROM sqlite_schema WHERE type = 'table' AND name = ?`, table).Scan(&n)
		if err != nil || n != 1 {
			t.Errorf("table %s: got count %d (err %v), want 1", table, n, err)
		}
	}
	fi, err := os.Stat(s.Path())
	if err != nil {
		t.Fatal(err)
	}
	if got := fi.Mode().Perm(); got != 0o600 {
		t.Errorf("database file mode: got %o, want 600", got)
	}
}

func TestReopenIsNoOp(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "banger.db")

	s, err := Open(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	seed(t, s)
	if err := s.CreateVM(ctx, testVM("0000aaaa", "dev")); err != nil {
		t.Fatal(err)
	}
	// schema_version counts schema changes; a no-op reopen must not bump it.
	var before int
	if err := s.db.QueryRowContext(ctx, "PRAGMA schema_version").Scan(&before); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}

	for i := range 2 {
		s := openStore(t, path)
		var after int
		if err := s.db.QueryRowContext(ctx, "PRAGMA schema_version").Scan(&after); err != nil {
			t.Fatal(err)
		}
		if after != before {
			t.Errorf("reopen %d: schema_version went from %d to %d: a migration ran again", i, before, after)
		}
		if _, err := s.GetVM(ctx, "dev"); err != nil {
			t.Errorf("reopen %d: GetVM(dev): %v", i, err)
		}
	}
}

func TestNewerSchemaRefused(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "banger.db")
	s, err := Open(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	newer := len(migrations()) + 1
	db := rawDB(t, path)
	if _, err := db.Exec(fmt.Sprintf("PRAGMA user_version = %d", newer)); err != nil {
		t.Fatal(err)
	}

	_, err = Open(ctx, path)
	if !errors.Is(err, ErrNewerSchema) {
		t.Fatalf("Open of a version-%d database: got %v, want ErrNewerSchema", newer, err)
	}
	if !strings.Contains(err.Error(), "upgrade banger") {
		t.Errorf("error %q does not tell the user to upgrade banger", err)
	}
	if got := queryInt(t, db, "PRAGMA user_version"); got != newer {
		t.Errorf("user_version after refused open: got %d, want %d (untouched)", got, newer)
	}
}

// TestMigrationsStepwise: steps apply in order, each in its own transaction, so a
// failing step leaves the database at the last whole step, with nothing of the
// failed step in it, and a later open with a fixed list resumes from there.
func TestMigrationsStepwise(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "banger.db")
	a := migration{name: "a", sql: `CREATE TABLE a (x INTEGER)`}
	b := migration{name: "b", sql: `CREATE TABLE b (x INTEGER REFERENCES a(x)); INSERT INTO a VALUES (1)`}
	badC := migration{name: "c", sql: `CREATE TABLE c (x INTEGER); CREATE TABLE broken (`}
	goodC := migration{name: "c", sql: `CREATE TABLE c (x INTEGER)`}

	_, err := openWith(ctx, path, []migration{a, b, badC})
	if err == nil || !strings.Contains(err.Error(), "migration 3 (c)") {
		t.Fatalf("open with a broken step 3: got %v, want an error naming migration 3 (c)", err)
	}
	db := rawDB(t, path)
	if got := queryInt(t, db, "PRAGMA user_version"); got != 2 {
		t.Errorf("user_version after failed step 3: got %d, want 2", got)
	}
	if got := queryInt(t, db, "SELECT count(*) FROM sqlite_schema WHERE name = 'c'"); got != 0 {
		t.Errorf("table c from the failed step exists: the step was not rolled back")
	}
	if got := queryInt(t, db, "SELECT count(*) FROM a"); got != 1 {
		t.Errorf("rows in a from step 2: got %d, want 1", got)
	}

	s, err := openWith(ctx, path, []migration{a, b, goodC})
	if err != nil {
		t.Fatalf("open with the fixed list: %v", err)
	}
	t.Cleanup(func() { _ = s.Close() })
	if v, _ := s.SchemaVersion(ctx); v != 3 {
		t.Errorf("schema version: got %d, want 3", v)
	}
	if got := queryInt(t, db, "SELECT count(*) FROM a"); got != 1 {
		t.Errorf("rows in a after resuming: got %d, want 1 (step 2 ran twice?)", got)
	}
}

func TestOpenErrors(t *testing.T) {
	dir := t.TempDir()
	garbage := filepath.Join(dir, "garbage.db")
	if err := os.WriteFile(garbage, []byte(strings.Repeat("not a database ", 100)), 0o600); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name, path, want string
	}{
		{"empty path", "", "path is empty"},
		{"query in path", filepath.Join(dir, "a?b.db"), "must not contain"},
		{"missing directory", filepath.Join(dir, "nope", "banger.db"), "no such file or directory"},
		{"not a database", garbage, "not a SQLite database"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, err := Open(context.Background(), tt.path)
			if err == nil {
				_ = s.Close()
				t.Fatalf("Open(%q): got no error, want one containing %q", tt.path, tt.want)
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Errorf("Open(%q): got %q, want it to contain %q", tt.path, err, tt.want)
			}
		})
	}
}

// TestConcurrentOpen: several Stores opening one fresh file at once all succeed,
// and the schema is applied once.
func TestConcurrentOpen(t *testing.T) {
	path := filepath.Join(t.TempDir(), "banger.db")
	const n = 5
	errs := make(chan error, n)
	stores := make(chan *Store, n)
	for range n {
		go func() {
			s, err := Open(context.Background(), path)
			errs <- err
			stores <- s
		}()
	}
	for range n {
		if err := <-errs; err != nil {
			t.Errorf("concurrent Open: %v", err)
		}
		if s := <-stores; s != nil {
			t.Cleanup(func() { _ = s.Close() })
		}
	}
	db := rawDB(t, path)
	if got, want := queryInt(t, db, "PRAGMA user_version"), len(migrations()); got != want {
		t.Errorf("user_version: got %d, want %d", got, want)
	}
}

// TestUpgradeFromV1KeepsData opens a database made by the first schema with the
// current binary: rows survive and the new columns take their defaults.
func TestUpgradeFromV1KeepsData(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "banger.db")
	old, err := openWith(ctx, path, migrations()[:1])
	if err != nil {
		t.Fatal(err)
	}
	if _, err := old.db.ExecContext(ctx, `INSERT INTO images (id, path, size_bytes, created_at) VALUES (?, '/i', 1, 0)`, testImageID); err != nil {
		t.Fatal(err)
	}
	if err := old.Close(); err != nil {
		t.Fatal(err)
	}
	s, err := Open(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if v, _ := s.SchemaVersion(ctx); v != len(migrations()) {
		t.Errorf("schema version = %d, want %d", v, len(migrations()))
	}
	img, err := s.GetImage(ctx, testImageID)
	if err != nil || img.Path != "/i" || string(img.Meta) != "{}" || img.AgentVersion != "" {
		t.Errorf("upgraded image = %+v, %v; want the old row with default provenance", img, err)
	}
}
