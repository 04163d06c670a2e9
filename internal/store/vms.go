package store

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"time"
)

// VMState is where a VM is in its lifecycle. The store only checks that a state
// is one of these; which transitions are legal is the VM service's business.
type VMState string

// The VM states. Add new ones here (no migration needed: the column is text).
const (
	VMCreated  VMState = "created"  // record and disk exist, never started
	VMStarting VMState = "starting" // VMM launched, guest not ready yet
	VMRunning  VMState = "running"  // guest agent answered
	VMStopping VMState = "stopping" // shutdown requested
	VMStopped  VMState = "stopped"  // VMM gone, disk kept
	VMFailed   VMState = "failed"   // a start or stop step failed; see logs
)

// Valid reports whether s is one of the known states.
func (s VMState) Valid() bool {
	switch s {
	case VMCreated, VMStarting, VMRunning, VMStopping, VMStopped, VMFailed:
		return true
	}
	return false
}

// VM is the durable record of one VM: what it is, not where its processes are
// (that is its Handle).
type VM struct {
	ID        string // immutable, unique; chosen by the caller (hex, see privileged.VMTapName)
	Name      string // unique, case-insensitively: it is the VM's DNS label
	ImageID   string // an image digest present in the store
	KernelID  string // a kernel id present in the store
	State     VMState
	CPUs      int
	MemoryMiB int
	DiskBytes int64 // root disk size; 0 means the image's own size
	Driver    string
	// Spec holds the rest of the VM's configuration (env, published ports, ...)
	// as JSON, opaque to the store, which only checks that it is valid JSON.
	// Empty means {}.
	Spec json.RawMessage
	// Disk is the disk layer's record of the VM's copy-on-write root (JSON, opaque
	// to the store): durable, unlike the handle, because the disk outlives a stop.
	// Empty means {}. Set with SetVMDisk.
	Disk      json.RawMessage
	CreatedAt time.Time // set by CreateVM when zero
	UpdatedAt time.Time // set by every change
}

func (vm VM) validate() error {
	switch {
	case vm.ID == "":
		return fmt.Errorf("vm %q: empty id", vm.Name)
	case vm.Name == "":
		return fmt.Errorf("vm %s: empty name", vm.ID)
	case vm.ImageID == "":
		return fmt.Errorf("vm %q: no image", vm.Name)
	case vm.KernelID == "":
		return fmt.Errorf("vm %q: no kernel", vm.Name)
	case !vm.State.Valid():
		return fmt.Errorf("vm %q: unknown state %q", vm.Name, vm.State)
	case vm.CPUs <= 0:
		return fmt.Errorf("vm %q: cpus must be positive, got %d", vm.Name, vm.CPUs)
	case vm.MemoryMiB <= 0:
		return fmt.Errorf("vm %q: memory must be positive, got %d MiB", vm.Name, vm.MemoryMiB)
	case vm.DiskBytes < 0:
		return fmt.Errorf("vm %q: disk size must not be negative, got %d", vm.Name, vm.DiskBytes)
	case vm.Driver == "":
		return fmt.Errorf("vm %q: no driver", vm.Name)
	case len(vm.Spec) > 0 && !json.Valid(vm.Spec):
		return fmt.Errorf("vm %q: spec is not valid JSON", vm.Name)
	}
	return nil
}

// CreateVM records a new VM. A taken id or name (names compare case-insensitively)
// is ErrExists; a missing image or kernel is ErrNotFound.
func (s *Store) CreateVM(ctx context.Context, vm VM) error {
	return s.write(ctx, func(tx *sql.Tx) error {
		return s.createVMTx(ctx, tx, vm)
	})
}

// CreateVMWithLease records a new VM and leases it a guest address in bridge, in
// one transaction: either both exist afterwards or neither does.
func (s *Store) CreateVMWithLease(ctx context.Context, vm VM, bridge netip.Prefix) (netip.Addr, error) {
	r, err := guestRangeOf(bridge)
	if err != nil {
		return netip.Addr{}, err
	}
	var addr netip.Addr
	err = s.write(ctx, func(tx *sql.Tx) error {
		if err := s.createVMTx(ctx, tx, vm); err != nil {
			return err
		}
		addr, err = s.allocateTx(ctx, tx, vm.ID, r)
		return err
	})
	return addr, err
}

func (s *Store) createVMTx(ctx context.Context, tx *sql.Tx, vm VM) error {
	if err := vm.validate(); err != nil {
		return err
	}
	var taken string
	err := tx.QueryRowContext(ctx, `SELECT id FROM vms WHERE id = ? OR name = ?`, vm.ID, vm.Name).Scan(&taken)
	switch {
	case err == nil && taken == vm.ID:
		return fmt.Errorf("vm id %s: %w", vm.ID, ErrExists)
	case err == nil:
		return fmt.Errorf("vm %q: the name is taken by vm %s: choose another name or remove that VM: %w", vm.Name, taken, ErrExists)
	case !errors.Is(err, sql.ErrNoRows):
		return fmt.Errorf("vm %q: %w", vm.Name, err)
	}
	if err := existsTx(ctx, tx, `SELECT 1 FROM images WHERE id = ?`, vm.ImageID); err != nil {
		return fmt.Errorf("vm %q: image %s: %w", vm.Name, vm.ImageID, err)
	}
	if err := existsTx(ctx, tx, `SELECT 1 FROM kernels WHERE id = ?`, vm.KernelID); err != nil {
		return fmt.Errorf("vm %q: kernel %s: %w", vm.Name, vm.KernelID, err)
	}

	now := s.now()
	if vm.CreatedAt.IsZero() {
		vm.CreatedAt = now
	}
	spec := string(vm.Spec)
	if spec == "" {
		spec = "{}"
	}
	disk, err := jsonOrEmpty(vm.Disk)
	if err != nil {
		return fmt.Errorf("vm %q: disk: %w", vm.Name, err)
	}
	_, err = tx.ExecContext(ctx, `
		INSERT INTO vms (id, name, image_id, kernel_id, state, cpus, memory_mib, disk_bytes, driver, spec, created_at, updated_at, disk)
		VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
		vm.ID, vm.Name, vm.ImageID, vm.KernelID, string(vm.State), vm.CPUs, vm.MemoryMiB, vm.DiskBytes, vm.Driver, spec,
		stamp(vm.CreatedAt), stamp(now), disk)
	if isUnique(err) {
		return fmt.Errorf("vm %q: %w", vm.Name, ErrExists)
	}
	if err != nil {
		return fmt.Errorf("vm %q: insert: %w", vm.Name, err)
	}
	return nil
}

const vmColumns = `id, name, image_id, kernel_id, state, cpus, memory_mib, disk_bytes, driver, spec, created_at, updated_at, disk`

// GetVM finds a VM by id, by name, or by a unique prefix of its id (at least
// MinIDPrefix hex digits), in that order. An id match wins, so a VM named like another
// VM's id is reachable only by id; a name wins over an id prefix.
func (s *Store) GetVM(ctx context.Context, idOrName string) (VM, error) {
	// An id match sorts first, so it wins over another record's name.
	row := s.db.QueryRowContext(ctx, `SELECT `+vmColumns+` FROM vms WHERE id = ?1 OR name = ?1
		ORDER BY id = ?1 DESC LIMIT 1`, idOrName)
	vm, err := scanVM(row)
	if errors.Is(err, sql.ErrNoRows) {
		id, perr := byIDPrefix(ctx, s.db, "vms", "VM", idOrName)
		if perr != nil {
			return VM{}, perr
		}
		if id != "" {
			return s.GetVM(ctx, id)
		}
		return VM{}, &NotFoundError{Kind: "VM", Ref: idOrName, Hint: "banger vm ls lists them"}
	}
	if err != nil {
		return VM{}, fmt.Errorf("vm %q: %w", idOrName, s.wrapDBErr(err))
	}
	return vm, nil
}

// ListVMs returns every VM, oldest first.
func (s *Store) ListVMs(ctx context.Context) ([]VM, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT `+vmColumns+` FROM vms ORDER BY created_at, name`)
	if err != nil {
		return nil, fmt.Errorf("list vms: %w", s.wrapDBErr(err))
	}
	defer rows.Close()
	vms := []VM{} // empty, not nil: it marshals as []
	for rows.Next() {
		vm, err := scanVM(rows)
		if err != nil {
			return nil, fmt.Errorf("list vms: %w", err)
		}
		vms = append(vms, vm)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("list vms: %w", s.wrapDBErr(err))
	}
	return vms, nil
}

// UpdateVMState sets the state of VM id and its updated time.
func (s *Store) UpdateVMState(ctx context.Context, id string, state VMState) error {
	if !state.Valid() {
		return fmt.Errorf("vm %s: unknown state %q", id, state)
	}
	return s.write(ctx, func(tx *sql.Tx) error {
		res, err := tx.ExecContext(ctx, `UPDATE vms SET state = ?, updated_at = ? WHERE id = ?`, string(state), stamp(s.now()), id)
		if err != nil {
			return fmt.Errorf("vm %s: set state %s: %w", id, state, err)
		}
		return mustAffect(res, fmt.Sprintf("vm %s", id))
	})
}

// SetVMSpec replaces VM id's spec (the VM service's own JSON: env, published
// ports, start-up timings).
func (s *Store) SetVMSpec(ctx context.Context, id string, spec json.RawMessage) error {
	sp, err := jsonOrEmpty(spec)
	if err != nil {
		return fmt.Errorf("vm %s: spec: %w", id, err)
	}
	return s.write(ctx, func(tx *sql.Tx) error {
		res, err := tx.ExecContext(ctx, `UPDATE vms SET spec = ?, updated_at = ? WHERE id = ?`, sp, stamp(s.now()), id)
		if err != nil {
			return fmt.Errorf("vm %s: set spec: %w", id, err)
		}
		return mustAffect(res, fmt.Sprintf("vm %s", id))
	})
}

// SetVMDisk records the disk layer's JSON record of VM id's root disk.
func (s *Store) SetVMDisk(ctx context.Context, id string, disk json.RawMessage) error {
	d, err := jsonOrEmpty(disk)
	if err != nil {
		return fmt.Errorf("vm %s: disk: %w", id, err)
	}
	return s.write(ctx, func(tx *sql.Tx) error {
		res, err := tx.ExecContext(ctx, `UPDATE vms SET disk = ?, updated_at = ? WHERE id = ?`, d, stamp(s.now()), id)
		if err != nil {
			return fmt.Errorf("vm %s: set disk: %w", id, err)
		}
		return mustAffect(res, fmt.Sprintf("vm %s", id))
	})
}

// DeleteVM removes VM id together with its lease and handle, in one
// transaction. The VM's processes, tap and disk are the caller's to clean up
// first: once the record is gone nothing remembers them.
func (s *Store) DeleteVM(ctx context.Context, id string) error {
	return s.write(ctx, func(tx *sql.Tx) error {
		// Explicit deletes rather than relying only on ON DELETE CASCADE: the
		// intent is visible here, and the cascade stays as a backstop.
		if _, err := tx.ExecContext(ctx, `DELETE FROM ip_leases WHERE vm_id = ?`, id); err != nil {
			return fmt.Errorf("vm %s: release lease: %w", id, err)
		}
		if _, err := tx.ExecContext(ctx, `DELETE FROM vm_handles WHERE vm_id = ?`, id); err != nil {
			return fmt.Errorf("vm %s: clear handle: %w", id, err)
		}
		res, err := tx.ExecContext(ctx, `DELETE FROM vms WHERE id = ?`, id)
		if err != nil {
			return fmt.Errorf("vm %s: delete: %w", id, err)
		}
		return mustAffect(res, fmt.Sprintf("vm %s", id))
	})
}

// scanner is what *sql.Row and *sql.Rows have in common.
type scanner interface{ Scan(dest ...any) error }

func scanVM(r scanner) (VM, error) {
	var (
		vm                VM
		state, spec, disk string
		created, updated  int64
	)
	err := r.Scan(&vm.ID, &vm.Name, &vm.ImageID, &vm.KernelID, &state, &vm.CPUs, &vm.MemoryMiB, &vm.DiskBytes, &vm.Driver, &spec, &created, &updated, &disk)
	if err != nil {
		return VM{}, err
	}
	vm.Disk = json.RawMessage(disk)
	vm.State = VMState(state)
	vm.Spec = json.RawMessage(spec)
	vm.CreatedAt, vm.UpdatedAt = unstamp(created), unstamp(updated)
	return vm, nil
}

// existsTx returns ErrNotFound unless query (selecting one row by arg) finds a row.
func existsTx(ctx context.Context, tx *sql.Tx, query string, arg any) error {
	var one int
	err := tx.QueryRowContext(ctx, query, arg).Scan(&one)
	if errors.Is(err, sql.ErrNoRows) {
		return ErrNotFound
	}
	return err
}

// mustAffect turns "no row matched" into ErrNotFound for what.
func mustAffect(res sql.Result, what string) error {
	n, err := res.RowsAffected()
	if err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	if n == 0 {
		return fmt.Errorf("%s: %w", what, ErrNotFound)
	}
	return nil
}
