package store

import (
	"context"
	"database/sql"
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
	"time"
)

// Lease is one VM's guest IPv4 address.
type Lease struct {
	VMID      string
	Addr      netip.Addr
	CreatedAt time.Time
}

// guestRange is the set of addresses guests may lease on a bridge network: every
// host address except the bridge's own (the guests' gateway). Addresses are
// IPv4 as uint32 throughout, the form the ip_leases.addr column stores.
type guestRange struct {
	prefix      netip.Prefix // masked network, for messages
	first, last uint32       // inclusive; excludes network and broadcast
	gateway     uint32
}

// guestRangeOf checks bridge (the bridge address with its prefix, e.g.
// 172.30.77.1/24) and returns the addresses guests may lease on it.
func guestRangeOf(bridge netip.Prefix) (guestRange, error) {
	if !bridge.IsValid() || !bridge.Addr().Is4() {
		return guestRange{}, fmt.Errorf("bridge network %s: only IPv4 is supported: set network.bridge_cidr like 172.30.77.1/24", bridge)
	}
	if bridge.Bits() > 30 {
		return guestRange{}, fmt.Errorf("bridge network %s: a /%d leaves no address for guests: widen network.bridge_cidr to /30 or wider", bridge, bridge.Bits())
	}
	network := u32(bridge.Masked().Addr())
	broadcast := uint32(uint64(network) | (uint64(1)<<(32-bridge.Bits()) - 1))
	gw := u32(bridge.Addr())
	if gw == network || gw == broadcast {
		return guestRange{}, fmt.Errorf("bridge network %s: the bridge address is the network or broadcast address: set network.bridge_cidr to a host address such as %s/%d",
			bridge, addrOf(network+1), bridge.Bits())
	}
	return guestRange{prefix: bridge.Masked(), first: network + 1, last: broadcast - 1, gateway: gw}, nil
}

// usable reports whether a may be leased to a guest.
func (r guestRange) usable(a uint32) bool {
	return a >= r.first && a <= r.last && a != r.gateway
}

// size is the number of leasable addresses.
func (r guestRange) size() int { return int(r.last-r.first+1) - 1 }

func u32(a netip.Addr) uint32 {
	b := a.As4()
	return binary.BigEndian.Uint32(b[:])
}

func addrOf(n uint32) netip.Addr {
	var b [4]byte
	binary.BigEndian.PutUint32(b[:], n)
	return netip.AddrFrom4(b)
}

// AllocateIP leases VM vmID the lowest free guest address on bridge (the bridge
// address with its prefix, e.g. 172.30.77.1/24), never the network, bridge or
// broadcast address. The lease is persistent until ReleaseIP or DeleteVM.
//
// Allocating for a VM that already holds a usable lease returns that lease
// again. A lease left unusable by a changed bridge network (outside it, or now
// the bridge's own address) is replaced by a fresh one in the same transaction.
// A missing VM is ErrNotFound; no free address is ErrCIDRFull.
//
// Allocations cannot collide: the lowest-free search and the insert run in one
// transaction that holds SQLite's write lock from its start, whichever Store or
// process it comes from; UNIQUE(addr) is the backstop.
func (s *Store) AllocateIP(ctx context.Context, vmID string, bridge netip.Prefix) (netip.Addr, error) {
	r, err := guestRangeOf(bridge)
	if err != nil {
		return netip.Addr{}, fmt.Errorf("vm %s: %w", vmID, err)
	}
	var addr netip.Addr
	err = s.write(ctx, func(tx *sql.Tx) error {
		if err := existsTx(ctx, tx, `SELECT 1 FROM vms WHERE id = ?`, vmID); err != nil {
			return fmt.Errorf("vm %s: %w", vmID, err)
		}
		addr, err = s.allocateTx(ctx, tx, vmID, r)
		return err
	})
	return addr, err
}

// allocateTx is AllocateIP inside the caller's write transaction; vmID must exist.
func (s *Store) allocateTx(ctx context.Context, tx *sql.Tx, vmID string, r guestRange) (netip.Addr, error) {
	var cur int64
	err := tx.QueryRowContext(ctx, `SELECT addr FROM ip_leases WHERE vm_id = ?`, vmID).Scan(&cur)
	switch {
	case err == nil && r.usable(uint32(cur)):
		return addrOf(uint32(cur)), nil
	case err == nil:
		if _, err := tx.ExecContext(ctx, `DELETE FROM ip_leases WHERE vm_id = ?`, vmID); err != nil {
			return netip.Addr{}, fmt.Errorf("vm %s: drop lease %s outside %s: %w", vmID, addrOf(uint32(cur)), r.prefix, err)
		}
	case !errors.Is(err, sql.ErrNoRows):
		return netip.Addr{}, fmt.Errorf("vm %s: read lease: %w", vmID, err)
	}

	free, ok, err := lowestFree(ctx, tx, r)
	if err != nil {
		return netip.Addr{}, fmt.Errorf("vm %s: find a free address in %s: %w", vmID, r.prefix, err)
	}
	if !ok {
		return netip.Addr{}, fmt.Errorf("vm %s: all %d guest addresses in %s are leased: widen network.bridge_cidr or remove VMs (banger vm rm): %w",
			vmID, r.size(), r.prefix, ErrCIDRFull)
	}
	_, err = tx.ExecContext(ctx, `INSERT INTO ip_leases (vm_id, addr, created_at) VALUES (?, ?, ?)`, vmID, int64(free), stamp(s.now()))
	if isUnique(err) {
		return netip.Addr{}, fmt.Errorf("vm %s: address %s: %w", vmID, addrOf(free), ErrExists)
	}
	if err != nil {
		return netip.Addr{}, fmt.Errorf("vm %s: lease %s: %w", vmID, addrOf(free), err)
	}
	return addrOf(free), nil
}

// lowestFree walks the leases inside r in address order and returns the first
// usable address not among them. The walk reads at most one row per lease.
func lowestFree(ctx context.Context, tx *sql.Tx, r guestRange) (uint32, bool, error) {
	rows, err := tx.QueryContext(ctx, `SELECT addr FROM ip_leases WHERE addr BETWEEN ? AND ? ORDER BY addr`, int64(r.first), int64(r.last))
	if err != nil {
		return 0, false, err
	}
	defer rows.Close()

	// cand is the lowest address not yet known to be taken; it only grows.
	// Work in uint64 so stepping past r.last cannot wrap around.
	cand := uint64(r.first)
	skipGateway := func() {
		if cand == uint64(r.gateway) {
			cand++
		}
	}
	skipGateway()
	for rows.Next() {
		var a int64
		if err := rows.Scan(&a); err != nil {
			return 0, false, err
		}
		if uint64(a) > cand {
			break // a gap: cand is free
		}
		if uint64(a) == cand {
			cand++
			skipGateway()
		}
		// a < cand: a stale lease on the gateway address, already skipped.
	}
	if err := rows.Err(); err != nil {
		return 0, false, err
	}
	if cand > uint64(r.last) {
		return 0, false, nil
	}
	return uint32(cand), true, nil
}

// ReleaseIP drops VM vmID's lease, if it has one: releasing twice, or a VM
// that never had a lease, is not an error, so cleanup paths may call it freely.
func (s *Store) ReleaseIP(ctx context.Context, vmID string) error {
	return s.write(ctx, func(tx *sql.Tx) error {
		if _, err := tx.ExecContext(ctx, `DELETE FROM ip_leases WHERE vm_id = ?`, vmID); err != nil {
			return fmt.Errorf("vm %s: release lease: %w", vmID, err)
		}
		return nil
	})
}

// LeaseOf returns VM vmID's lease, or ErrNotFound if it holds none.
func (s *Store) LeaseOf(ctx context.Context, vmID string) (Lease, error) {
	row := s.db.QueryRowContext(ctx, `SELECT vm_id, addr, created_at FROM ip_leases WHERE vm_id = ?`, vmID)
	l, err := scanLease(row)
	if errors.Is(err, sql.ErrNoRows) {
		return Lease{}, fmt.Errorf("lease of vm %s: %w", vmID, ErrNotFound)
	}
	if err != nil {
		return Lease{}, fmt.Errorf("lease of vm %s: %w", vmID, s.wrapDBErr(err))
	}
	return l, nil
}

// ListLeases returns every lease in address order.
func (s *Store) ListLeases(ctx context.Context) ([]Lease, error) {
	rows, err := s.db.QueryContext(ctx, `SELECT vm_id, addr, created_at FROM ip_leases ORDER BY addr`)
	if err != nil {
		return nil, fmt.Errorf("list leases: %w", s.wrapDBErr(err))
	}
	defer rows.Close()
	ls := []Lease{} // empty, not nil: it marshals as []
	for rows.Next() {
		l, err := scanLease(rows)
		if err != nil {
			return nil, fmt.Errorf("list leases: %w", err)
		}
		ls = append(ls, l)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("list leases: %w", s.wrapDBErr(err))
	}
	return ls, nil
}

func scanLease(r scanner) (Lease, error) {
	var (
		l             Lease
		addr, created int64
	)
	if err := r.Scan(&l.VMID, &addr, &created); err != nil {
		return Lease{}, err
	}
	l.Addr, l.CreatedAt = addrOf(uint32(addr)), unstamp(created)
	return l, nil
}
