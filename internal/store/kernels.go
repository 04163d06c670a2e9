package store

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"time"
)

// Kernel is a guest kernel, with an optional initrd.
type Kernel struct {
	ID         string // immutable, unique
	Name       string // unique
	Path       string
	InitrdPath string    // "" when the kernel needs none
	CreatedAt  time.Time // set by PutKernel when zero
	Version    string    // the kernel's own version string, when known
	// Meta holds the rest (source, format, config checks) as JSON, opaque to the
	// store. Empty means {}.
	Meta json.RawMessage
}

// PutKernel records k, or updates the kernel with that id. A name taken by
// another kernel is ErrExists.
func (s *Store) PutKernel(ctx context.Context, k Kernel) error {
	switch {
	case k.ID == "":
		return fmt.Errorf("kernel %q: empty id", k.Name)
	case k.Name == "":
		return fmt.Errorf("kernel %s: empty name", k.ID)
	case k.Path == "":
		return fmt.Errorf("kernel %q: empty path", k.Name)
	}
	if k.CreatedAt.IsZero() {
		k.CreatedAt = s.now()
	}
	meta, err := jsonOrEmpty(k.Meta)
	if err != nil {
		return fmt.Errorf("kernel %q: meta: %w", k.Name, err)
	}
	return s.write(ctx, func(tx *sql.Tx) error {
		other, err := holderTx(ctx, tx, `SELECT id FROM kernels WHERE name = ? AND id <> ?`, k.Name, k.ID)
		if err != nil {
			return fmt.Errorf("kernel %q: %w", k.Name, err)
		}
		if other != "" {
			return fmt.Errorf("kernel %q: the name is taken by kernel %s: choose another name or remove that kernel: %w", k.Name, other, ErrExists)
		}
		_, err = tx.ExecContext(ctx, `
			INSERT INTO kernels (id, name, path, initrd_path, created_at, version, meta) VALUES (?, ?, ?, ?, ?, ?, ?)
			ON CONFLICT (id) DO UPDATE SET name = excluded.name, path = excluded.path, initrd_path = excluded.initrd_path,
				version = excluded.version, meta = excluded.meta`,
			k.ID, k.Name, k.Path, k.InitrdPath, stamp(k.CreatedAt), k.Version, meta)
		if isUnique(err) {
			return fmt.Errorf("kernel %q: %w", k.Name, ErrExists)
		}
		if err != nil {
			return fmt.Errorf("kernel %q: %w", k.Name, err)
		}
		return nil
	})
}

const kernelColumns = `id, name, path, initrd_path, created_at, version, meta`

// GetKernel finds a kernel by id, by name, or by a unique id prefix (see GetVM).
func (s *Store) GetKernel(ctx context.Context, idOrName string) (Kernel, error) {
	// An id match sorts first, so it wins over another record's name.
	row := s.db.QueryRowContext(ctx, `SELECT `+kernelColumns+` FROM kernels WHERE id = ?1 OR name = ?1
		ORDER BY id = ?1 DESC LIMIT 1`, idOrName)
	k, err := scanKernel(row)
	if errors.Is(err, sql.ErrNoRows) {
		id, perr := byIDPrefix(ctx, s.db, "kernels", "kernel", idOrName)
		if perr != nil {
			return Kernel{}, perr
		}
		if id != "" {
			return s.GetKernel(ctx, id)
		}
		return Kernel{}, &NotFoundError{Kind: "kernel", Ref: idOrName, Hint: "banger kernel ls lists them"}
	}
	if err != nil {
		return Kernel{}, fmt.Errorf("kernel %q: %w", idOrName, s.wrapDBErr(err))
	}
	return k, nil
}

// ListKernels returns every kernel, oldest first.
func (s *Store) ListKernels(ctx context.Context) ([]Kernel, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT `+kernelColumns+` FROM kernels ORDER BY created_at, name`)
	if err != nil {
		return nil, fmt.Errorf("list kernels: %w", s.wrapDBErr(err))
	}
	defer rows.Close()
	ks := []Kernel{} // empty, not nil: it marshals as []
	for rows.Next() {
		k, err := scanKernel(rows)
		if err != nil {
			return nil, fmt.Errorf("list kernels: %w", err)
		}
		ks = append(ks, k)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("list kernels: %w", s.wrapDBErr(err))
	}
	return ks, nil
}

// DeleteKernel removes kernel id. A kernel VMs boot is ErrInUse. Its files are
// the caller's to remove, after this succeeds.
func (s *Store) DeleteKernel(ctx context.Context, id string) error {
	return s.write(ctx, func(tx *sql.Tx) error {
		if err := notUsedTx(ctx, tx, `kernel_id`, id, fmt.Sprintf("kernel %s", id)); err != nil {
			return err
		}
		res, err := tx.ExecContext(ctx, `DELETE FROM kernels WHERE id = ?`, id)
		if err != nil {
			return fmt.Errorf("kernel %s: delete: %w", id, err)
		}
		return mustAffect(res, fmt.Sprintf("kernel %s", id))
	})
}

func scanKernel(r scanner) (Kernel, error) {
	var (
		k       Kernel
		created int64
		meta    string
	)
	if err := r.Scan(&k.ID, &k.Name, &k.Path, &k.InitrdPath, &created, &k.Version, &meta); err != nil {
		return Kernel{}, err
	}
	k.Meta = json.RawMessage(meta)
	k.CreatedAt = unstamp(created)
	return k, nil
}
