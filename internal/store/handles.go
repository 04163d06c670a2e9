package store

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"
)

// Handle is where a VM's runtime pieces are: what bangerd needs to re-attach to
// a VMM that outlived it, and to clean up after one that did not. At most one
// per VM; a tap and a vsock CID belong to at most one VM at a time.
type Handle struct {
	VMID string
	// PID is the VMM process, 0 when none. PIDStart is that process's start
	// time (field 22 of /proc/<pid>/stat, in clock ticks): a PID alone may have
	// been reused by an unrelated process by the time bangerd re-attaches.
	PID      int
	PIDStart uint64
	Tap      string // the VM's tap (tap-pool-N or tap-vm-X), "" when none
	// APISocket is the VMM control socket (Firecracker API or QEMU QMP),
	// AgentSocket the guest agent's host-side socket (virtio-serial under QEMU),
	// VsockPath Firecracker's hybrid vsock socket.
	APISocket    string
	AgentSocket  string
	VsockPath    string
	VsockCID     uint32 // 0 when none
	DiskPath     string // the VM's copy-on-write root disk
	DiskStrategy string // how DiskPath was made: dm-snapshot, reflink, qcow2, copy
	UpdatedAt    time.Time
}

const handleColumns = `vm_id, pid, pid_start, tap, api_socket, agent_socket, vsock_path, vsock_cid, disk_path, disk_strategy, updated_at`

// SetHandle records h as VM h.VMID's handle, replacing any previous one. A
// missing VM is ErrNotFound; a tap or vsock CID held by another VM is ErrExists.
func (s *Store) SetHandle(ctx context.Context, h Handle) error {
	if h.VMID == "" {
		return errors.New("handle: empty vm id")
	}
	if h.PID < 0 {
		return fmt.Errorf("handle of vm %s: negative pid %d", h.VMID, h.PID)
	}
	return s.write(ctx, func(tx *sql.Tx) error {
		if err := existsTx(ctx, tx, `SELECT 1 FROM vms WHERE id = ?`, h.VMID); err != nil {
			return fmt.Errorf("handle of vm %s: vm: %w", h.VMID, err)
		}
		if h.Tap != "" {
			if other, err := holderTx(ctx, tx, `SELECT vm_id FROM vm_handles WHERE tap = ? AND vm_id <> ?`, h.Tap, h.VMID); err != nil {
				return fmt.Errorf("handle of vm %s: %w", h.VMID, err)
			} else if other != "" {
				return fmt.Errorf("handle of vm %s: tap %s is held by vm %s: %w", h.VMID, h.Tap, other, ErrExists)
			}
		}
		if h.VsockCID != 0 {
			if other, err := holderTx(ctx, tx, `SELECT vm_id FROM vm_handles WHERE vsock_cid = ? AND vm_id <> ?`, int64(h.VsockCID), h.VMID); err != nil {
				return fmt.Errorf("handle of vm %s: %w", h.VMID, err)
			} else if other != "" {
				return fmt.Errorf("handle of vm %s: vsock CID %d is held by vm %s: %w", h.VMID, h.VsockCID, other, ErrExists)
			}
		}
		_, err := tx.ExecContext(ctx, `
			INSERT INTO vm_handles (`+handleColumns+`) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
			ON CONFLICT (vm_id) DO UPDATE SET
				pid = excluded.pid, pid_start = excluded.pid_start, tap = excluded.tap,
				api_socket = excluded.api_socket, agent_socket = excluded.agent_socket,
				vsock_path = excluded.vsock_path, vsock_cid = excluded.vsock_cid,
				disk_path = excluded.disk_path, disk_strategy = excluded.disk_strategy,
				updated_at = excluded.updated_at`,
			h.VMID, h.PID, int64(h.PIDStart), h.Tap, h.APISocket, h.AgentSocket, h.VsockPath, int64(h.VsockCID),
			h.DiskPath, h.DiskStrategy, stamp(s.now()))
		if isUnique(err) {
			return fmt.Errorf("handle of vm %s: %w", h.VMID, ErrExists)
		}
		if err != nil {
			return fmt.Errorf("handle of vm %s: %w", h.VMID, err)
		}
		return nil
	})
}

// GetHandle returns VM vmID's handle, or ErrNotFound if it has none.
func (s *Store) GetHandle(ctx context.Context, vmID string) (Handle, error) {
	row := s.db.QueryRowContext(ctx, `SELECT `+handleColumns+` FROM vm_handles WHERE vm_id = ?`, vmID)
	h, err := scanHandle(row)
	if errors.Is(err, sql.ErrNoRows) {
		return Handle{}, fmt.Errorf("handle of vm %s: %w", vmID, ErrNotFound)
	}
	if err != nil {
		return Handle{}, fmt.Errorf("handle of vm %s: %w", vmID, s.wrapDBErr(err))
	}
	return h, nil
}

// ListHandles returns every handle, ordered by VM id. bangerd reads it when it
// opens: to re-attach to VMMs and to seed the tap pool past the taps in use.
func (s *Store) ListHandles(ctx context.Context) ([]Handle, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT `+handleColumns+` FROM vm_handles ORDER BY vm_id`)
	if err != nil {
		return nil, fmt.Errorf("list handles: %w", s.wrapDBErr(err))
	}
	defer rows.Close()
	hs := []Handle{} // empty, not nil: it marshals as []
	for rows.Next() {
		h, err := scanHandle(rows)
		if err != nil {
			return nil, fmt.Errorf("list handles: %w", err)
		}
		hs = append(hs, h)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("list handles: %w", s.wrapDBErr(err))
	}
	return hs, nil
}

// ClearHandle drops VM vmID's handle, if it has one; clearing twice is not an
// error, so cleanup paths may call it freely.
func (s *Store) ClearHandle(ctx context.Context, vmID string) error {
	return s.write(ctx, func(tx *sql.Tx) error {
		if _, err := tx.ExecContext(ctx, `DELETE FROM vm_handles WHERE vm_id = ?`, vmID); err != nil {
			return fmt.Errorf("handle of vm %s: clear: %w", vmID, err)
		}
		return nil
	})
}

// holderTx returns the vm_id the query finds, or "" when it finds none.
func holderTx(ctx context.Context, tx *sql.Tx, query string, args ...any) (string, error) {
	var id string
	err := tx.QueryRowContext(ctx, query, args...).Scan(&id)
	if errors.Is(err, sql.ErrNoRows) {
		return "", nil
	}
	return id, err
}

func scanHandle(r scanner) (Handle, error) {
	var (
		h                  Handle
		pidStart, cid, upd int64
	)
	err := r.Scan(&h.VMID, &h.PID, &pidStart, &h.Tap, &h.APISocket, &h.AgentSocket, &h.VsockPath, &cid, &h.DiskPath, &h.DiskStrategy, &upd)
	if err != nil {
		return Handle{}, err
	}
	h.PIDStart, h.VsockCID, h.UpdatedAt = uint64(pidStart), uint32(cid), unstamp(upd)
	return h, nil
}
