package store

import (
	"context"
	"database/sql"
	"fmt"
)

// migration is one step of the schema. Steps are applied in order, each in its
// own transaction that also records the new version (PRAGMA user_version, which
// lives in the database header and commits with the step), so a crash between
// steps leaves the database at the last whole step and the next Open resumes.
// Never edit or reorder a released step: add a new one.
type migration struct {
	name string
	sql  string
}

// migrations returns the schema history; version N is the first N steps.
func migrations() []migration {
	return []migration{
		{name: "initial schema", sql: schemaV1},
		{name: "image and kernel provenance, per-VM disk record", sql: schemaV2},
	}
}

// schemaV1: see doc.go for the reasoning behind each table.
const schemaV1 = `
CREATE TABLE kernels (
	id          TEXT    PRIMARY KEY,
	name        TEXT    NOT NULL UNIQUE,
	path        TEXT    NOT NULL,
	initrd_path TEXT    NOT NULL DEFAULT '',
	created_at  INTEGER NOT NULL
) STRICT;

CREATE TABLE images (
	id         TEXT    PRIMARY KEY,          -- content digest, sha256:<hex>
	path       TEXT    NOT NULL,
	size_bytes INTEGER NOT NULL CHECK (size_bytes >= 0),
	created_at INTEGER NOT NULL
) STRICT;

CREATE TABLE image_tags (
	name     TEXT PRIMARY KEY,               -- e.g. docker.io/library/debian:12
	image_id TEXT NOT NULL REFERENCES images(id) ON DELETE CASCADE
) STRICT;
CREATE INDEX image_tags_image ON image_tags(image_id);

CREATE TABLE vms (
	id         TEXT    PRIMARY KEY,
	name       TEXT    NOT NULL UNIQUE COLLATE NOCASE,  -- a DNS label: case-insensitive
	image_id   TEXT    NOT NULL REFERENCES images(id) ON DELETE RESTRICT,
	kernel_id  TEXT    NOT NULL REFERENCES kernels(id) ON DELETE RESTRICT,
	state      TEXT    NOT NULL,
	cpus       INTEGER NOT NULL CHECK (cpus > 0),
	memory_mib INTEGER NOT NULL CHECK (memory_mib > 0),
	disk_bytes INTEGER NOT NULL CHECK (disk_bytes >= 0),
	driver     TEXT    NOT NULL,
	spec       TEXT    NOT NULL DEFAULT '{}' CHECK (json_valid(spec)),
	created_at INTEGER NOT NULL,
	updated_at INTEGER NOT NULL
) STRICT;
CREATE INDEX vms_image ON vms(image_id);
CREATE INDEX vms_kernel ON vms(kernel_id);

CREATE TABLE vm_handles (
	vm_id         TEXT    PRIMARY KEY REFERENCES vms(id) ON DELETE CASCADE,
	pid           INTEGER NOT NULL DEFAULT 0,
	pid_start     INTEGER NOT NULL DEFAULT 0,  -- /proc/<pid>/stat starttime: guards re-attach against pid reuse
	tap           TEXT    NOT NULL DEFAULT '',
	api_socket    TEXT    NOT NULL DEFAULT '',
	agent_socket  TEXT    NOT NULL DEFAULT '',
	vsock_path    TEXT    NOT NULL DEFAULT '',
	vsock_cid     INTEGER NOT NULL DEFAULT 0,
	disk_path     TEXT    NOT NULL DEFAULT '',
	disk_strategy TEXT    NOT NULL DEFAULT '',
	updated_at    INTEGER NOT NULL
) STRICT;
CREATE UNIQUE INDEX vm_handles_tap ON vm_handles(tap) WHERE tap <> '';
CREATE UNIQUE INDEX vm_handles_cid ON vm_handles(vsock_cid) WHERE vsock_cid <> 0;

CREATE TABLE ip_leases (
	vm_id      TEXT    PRIMARY KEY REFERENCES vms(id) ON DELETE CASCADE,
	addr       INTEGER NOT NULL UNIQUE,      -- IPv4 as a 32-bit number: ordered, gap search is a scan
	created_at INTEGER NOT NULL
) STRICT;
`

// schemaV2 records where images and kernels came from (for inspect, and so a newer
// guest agent can be re-injected into images made with an older one) and the disk
// layer's record of each VM's copy-on-write disk (what Remove and Activate need;
// it outlives the VM's handle, which is cleared on stop).
const schemaV2 = `
ALTER TABLE images ADD COLUMN kind          TEXT NOT NULL DEFAULT '';
ALTER TABLE images ADD COLUMN source        TEXT NOT NULL DEFAULT '';
ALTER TABLE images ADD COLUMN agent_version TEXT NOT NULL DEFAULT '';
ALTER TABLE images ADD COLUMN meta          TEXT NOT NULL DEFAULT '{}' CHECK (json_valid(meta));
ALTER TABLE kernels ADD COLUMN version      TEXT NOT NULL DEFAULT '';
ALTER TABLE kernels ADD COLUMN meta         TEXT NOT NULL DEFAULT '{}' CHECK (json_valid(meta));
ALTER TABLE vms ADD COLUMN disk             TEXT NOT NULL DEFAULT '{}' CHECK (json_valid(disk));
`

// migrate brings the schema up to len(migs), one transaction per step. An
// up-to-date database costs one read and no write.
func (s *Store) migrate(ctx context.Context, migs []migration) error {
	v, err := s.SchemaVersion(ctx)
	if err != nil {
		return err
	}
	if v > len(migs) {
		return s.newerSchemaErr(v, len(migs))
	}
	for i := v; i < len(migs); i++ {
		m, target := migs[i], i+1
		err := s.write(ctx, func(tx *sql.Tx) error {
			// Read the version again inside the write transaction: another
			// process opening the same file may have applied this step meanwhile.
			cur, err := userVersion(ctx, tx)
			if err != nil {
				return err
			}
			if cur > len(migs) {
				return s.newerSchemaErr(cur, len(migs))
			}
			if cur >= target {
				return nil
			}
			if _, err := tx.ExecContext(ctx, m.sql); err != nil {
				return fmt.Errorf("store %s: migration %d (%s): %w", s.path, target, m.name, err)
			}
			// PRAGMA takes no bound parameters; target is our own integer.
			if _, err := tx.ExecContext(ctx, fmt.Sprintf("PRAGMA user_version = %d", target)); err != nil {
				return fmt.Errorf("store %s: migration %d (%s): record version: %w", s.path, target, m.name, err)
			}
			return nil
		})
		if err != nil {
			return err
		}
	}
	return nil
}

func (s *Store) newerSchemaErr(have, known int) error {
	return fmt.Errorf("store %s has schema version %d, but this banger knows only versions up to %d: it was written by a newer banger; upgrade banger or use another --root: %w",
		s.path, have, known, ErrNewerSchema)
}

// SchemaVersion is the number of schema steps applied to the database.
func (s *Store) SchemaVersion(ctx context.Context) (int, error) {
	var v int
	if err := s.db.QueryRowContext(ctx, "PRAGMA user_version").Scan(&v); err != nil {
		return 0, s.wrapDBErr(err)
	}
	return v, nil
}

func userVersion(ctx context.Context, tx *sql.Tx) (int, error) {
	var v int
	if err := tx.QueryRowContext(ctx, "PRAGMA user_version").Scan(&v); err != nil {
		return 0, fmt.Errorf("read schema version: %w", err)
	}
	return v, nil
}
