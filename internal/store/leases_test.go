package store

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func mustPrefix(t testing.TB, s string) netip.Prefix {
	t.Helper()
	p, err := netip.ParsePrefix(s)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func addrs(ss ...string) []netip.Addr {
	out := make([]netip.Addr, len(ss))
	for i, s := range ss {
		out[i] = netip.MustParseAddr(s)
	}
	return out
}

func TestGuestRangeOf(t *testing.T) {
	tests := []struct {
		bridge          string
		first, last, gw string
		size            int
		wantErr         string
	}{
		{bridge: "172.30.77.1/24", first: "172.30.77.1", last: "172.30.77.254", gw: "172.30.77.1", size: 253},
		{bridge: "10.0.0.4/29", first: "10.0.0.1", last: "10.0.0.6", gw: "10.0.0.4", size: 5},
		{bridge: "10.0.0.1/30", first: "10.0.0.1", last: "10.0.0.2", gw: "10.0.0.1", size: 1},
		{bridge: "10.1.0.1/16", first: "10.1.0.1", last: "10.1.255.254", gw: "10.1.0.1", size: 65533},
		{bridge: "10.0.0.1/31", wantErr: "leaves no address for guests"},
		{bridge: "10.0.0.1/32", wantErr: "leaves no address for guests"},
		{bridge: "10.0.0.0/24", wantErr: "network or broadcast"},
		{bridge: "10.0.0.255/24", wantErr: "network or broadcast"},
		{bridge: "fd00::1/64", wantErr: "only IPv4"},
	}
	for _, tt := range tests {
		t.Run(tt.bridge, func(t *testing.T) {
			r, err := guestRangeOf(mustPrefix(t, tt.bridge))
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("got %v, want error containing %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			got := []string{addrOf(r.first).String(), addrOf(r.last).String(), addrOf(r.gateway).String()}
			if diff := cmp.Diff([]string{tt.first, tt.last, tt.gw}, got); diff != "" {
				t.Errorf("first/last/gateway (-want +got):\n%s", diff)
			}
			if r.size() != tt.size {
				t.Errorf("size: got %d, want %d", r.size(), tt.size)
			}
		})
	}
	if _, err := guestRangeOf(netip.Prefix{}); err == nil {
		t.Error("zero prefix: got no error")
	}
}

// TestAllocateFillsSmallNetwork fills /29s completely: only host addresses other
// than the bridge's are handed out, lowest first, then ErrCIDRFull.
func TestAllocateFillsSmallNetwork(t *testing.T) {
	tests := []struct {
		bridge string
		want   []netip.Addr
	}{
		{"10.0.0.1/29", addrs("10.0.0.2", "10.0.0.3", "10.0.0.4", "10.0.0.5", "10.0.0.6")},
		{"10.0.0.4/29", addrs("10.0.0.1", "10.0.0.2", "10.0.0.3", "10.0.0.5", "10.0.0.6")},
		{"10.0.0.6/29", addrs("10.0.0.1", "10.0.0.2", "10.0.0.3", "10.0.0.4", "10.0.0.5")},
	}
	for _, tt := range tests {
		t.Run(tt.bridge, func(t *testing.T) {
			s := newSeededStore(t)
			ctx := context.Background()
			bridge := mustPrefix(t, tt.bridge)
			ids := createVMs(t, s, len(tt.want)+1)

			var got []netip.Addr
			for _, id := range ids[:len(tt.want)] {
				a, err := s.AllocateIP(ctx, id, bridge)
				if err != nil {
					t.Fatalf("AllocateIP(%s): %v", id, err)
				}
				got = append(got, a)
			}
			if diff := cmp.Diff(tt.want, got, cmp.Comparer(func(a, b netip.Addr) bool { return a == b })); diff != "" {
				t.Errorf("allocated addresses (-want +got):\n%s", diff)
			}

			last := ids[len(ids)-1]
			_, err := s.AllocateIP(ctx, last, bridge)
			if !errors.Is(err, ErrCIDRFull) {
				t.Fatalf("allocation in a full /29: got %v, want ErrCIDRFull", err)
			}
			for _, want := range []string{"all 5 guest addresses in 10.0.0.0/29", "widen network.bridge_cidr or remove VMs"} {
				if !strings.Contains(err.Error(), want) {
					t.Errorf("full error %q does not contain %q", err, want)
				}
			}
			if _, err := s.LeaseOf(ctx, last); !errors.Is(err, ErrNotFound) {
				t.Errorf("LeaseOf after a failed allocation: got %v, want ErrNotFound", err)
			}

			// Release one in the middle: the next allocation reuses it.
			if err := s.ReleaseIP(ctx, ids[2]); err != nil {
				t.Fatal(err)
			}
			a, err := s.AllocateIP(ctx, last, bridge)
			if err != nil || a != tt.want[2] {
				t.Errorf("allocation after release: got %s, %v; want %s", a, err, tt.want[2])
			}
		})
	}
}

func TestAllocateIPBehaviour(t *testing.T) {
	s := newSeededStore(t)
	ctx := context.Background()
	bridge := mustPrefix(t, "172.30.77.1/24")
	ids := createVMs(t, s, 3)

	a0, err := s.AllocateIP(ctx, ids[0], bridge)
	if err != nil {
		t.Fatal(err)
	}
	again, err := s.AllocateIP(ctx, ids[0], bridge)
	if err != nil || again != a0 {
		t.Errorf("second AllocateIP for the same VM: got %s, %v; want %s", again, err, a0)
	}
	if _, err := s.AllocateIP(ctx, "ffffffff", bridge); !errors.Is(err, ErrNotFound) {
		t.Errorf("AllocateIP for a missing VM: got %v, want ErrNotFound", err)
	}
	if _, err := s.AllocateIP(ctx, ids[1], mustPrefix(t, "172.30.77.0/24")); err == nil {
		t.Error("AllocateIP with the bridge on the network address: got no error")
	}

	for range 2 { // releasing is idempotent
		if err := s.ReleaseIP(ctx, ids[0]); err != nil {
			t.Fatalf("ReleaseIP: %v", err)
		}
	}
	if _, err := s.LeaseOf(ctx, ids[0]); !errors.Is(err, ErrNotFound) {
		t.Errorf("LeaseOf after release: got %v, want ErrNotFound", err)
	}

	// A lease made unusable by a changed bridge network is replaced.
	if _, err := s.AllocateIP(ctx, ids[0], bridge); err != nil {
		t.Fatal(err)
	}
	moved, err := s.AllocateIP(ctx, ids[0], mustPrefix(t, "10.20.0.1/24"))
	if err != nil || moved != netip.MustParseAddr("10.20.0.2") {
		t.Errorf("allocation after the bridge network changed: got %s, %v; want 10.20.0.2", moved, err)
	}
	// The bridge moved onto the VM's address: the VM moves off it.
	onGateway, err := s.AllocateIP(ctx, ids[0], mustPrefix(t, "10.20.0.2/24"))
	if err != nil || onGateway != netip.MustParseAddr("10.20.0.1") {
		t.Errorf("allocation when the bridge took the VM's address: got %s, %v; want 10.20.0.1", onGateway, err)
	}
	leases, err := s.ListLeases(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(leases) != 1 || leases[0].VMID != ids[0] || leases[0].Addr != onGateway {
		t.Errorf("ListLeases: got %+v, want only %s -> %s", leases, ids[0], onGateway)
	}
}

// TestAllocateSkipsStaleGatewayLease: a lease left on what is now the bridge's
// address (config changed) is skipped by the lowest-free search.
func TestAllocateSkipsStaleGatewayLease(t *testing.T) {
	s := newSeededStore(t)
	ctx := context.Background()
	ids := createVMs(t, s, 3)
	old := mustPrefix(t, "10.0.0.1/29")
	for _, id := range ids[:2] { // .2, .3
		if _, err := s.AllocateIP(ctx, id, old); err != nil {
			t.Fatal(err)
		}
	}
	// Now the bridge is .3, which ids[1] still holds.
	a, err := s.AllocateIP(ctx, ids[2], mustPrefix(t, "10.0.0.3/29"))
	if err != nil || a != netip.MustParseAddr("10.0.0.1") {
		t.Errorf("got %s, %v; want 10.0.0.1", a, err)
	}
	a, err = s.AllocateIP(ctx, ids[1], mustPrefix(t, "10.0.0.3/29"))
	if err != nil || a != netip.MustParseAddr("10.0.0.4") {
		t.Errorf("VM on the new gateway address: got %s, %v; want it moved to 10.0.0.4", a, err)
	}
}

func TestLeasesPersistAcrossReopen(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "banger.db")
	bridge := mustPrefix(t, "172.30.77.1/24")

	s, err := Open(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	seed(t, s)
	ids := createVMs(t, s, 3)
	want := map[string]netip.Addr{}
	for _, id := range ids {
		a, err := s.AllocateIP(ctx, id, bridge)
		if err != nil {
			t.Fatal(err)
		}
		want[id] = a
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}

	s = openStore(t, path)
	for _, id := range ids {
		l, err := s.LeaseOf(ctx, id)
		if err != nil || l.Addr != want[id] {
			t.Errorf("LeaseOf(%s) after reopen: got %s, %v; want %s", id, l.Addr, err, want[id])
		}
		if a, err := s.AllocateIP(ctx, id, bridge); err != nil || a != want[id] {
			t.Errorf("AllocateIP(%s) after reopen: got %s, %v; want the same %s", id, a, err, want[id])
		}
	}
	if _, err := s.CreateVMWithLease(ctx, testVM("0000ffff", "new"), bridge); err != nil {
		t.Fatal(err)
	}
	l, _ := s.LeaseOf(ctx, "0000ffff")
	if l.Addr != netip.MustParseAddr("172.30.77.5") {
		t.Errorf("new VM after reopen: got %s, want 172.30.77.5 (past the persisted leases)", l.Addr)
	}
}

// TestConcurrentAllocate: 50 concurrent allocations hand out 50 distinct
// addresses, exactly the 50 lowest, whether the goroutines share one Store or
// spread over several Stores on the same file (which SQLite's file lock, not our
// in-process semaphore, must serialize).
func TestConcurrentAllocate(t *testing.T) {
	const n = 50
	for _, stores := range []int{1, 5} {
		t.Run(fmt.Sprintf("%d stores", stores), func(t *testing.T) {
			ctx := context.Background()
			path := filepath.Join(t.TempDir(), "banger.db")
			ss := make([]*Store, stores)
			for i := range ss {
				ss[i] = openStore(t, path)
			}
			seed(t, ss[0])
			ids := createVMs(t, ss[0], n)
			bridge := mustPrefix(t, "172.30.77.1/24")

			got := make([]netip.Addr, n)
			errs := make([]error, n)
			var wg sync.WaitGroup
			for i := range n {
				wg.Go(func() {
					got[i], errs[i] = ss[i%stores].AllocateIP(ctx, ids[i], bridge)
				})
			}
			wg.Wait()

			seen := map[netip.Addr]string{}
			for i, a := range got {
				if errs[i] != nil {
					t.Fatalf("AllocateIP(%s): %v", ids[i], errs[i])
				}
				if other, dup := seen[a]; dup {
					t.Errorf("address %s handed to both %s and %s", a, other, ids[i])
				}
				seen[a] = ids[i]
			}
			for i := range n {
				want := netip.AddrFrom4([4]byte{172, 30, 77, byte(2 + i)})
				if _, ok := seen[want]; !ok {
					t.Errorf("address %s not handed out: allocation is not lowest-first", want)
				}
			}
			leases, err := ss[stores-1].ListLeases(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if len(leases) != n {
				t.Errorf("leases stored: got %d, want %d", len(leases), n)
			}
		})
	}
}

// TestConcurrentAllocateSameVM: racing allocations for one VM agree on one address.
func TestConcurrentAllocateSameVM(t *testing.T) {
	path := filepath.Join(t.TempDir(), "banger.db")
	ss := []*Store{openStore(t, path), openStore(t, path)}
	seed(t, ss[0])
	ids := createVMs(t, ss[0], 1)
	bridge := mustPrefix(t, "172.30.77.1/24")

	const n = 20
	got := make([]netip.Addr, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() { got[i], errs[i] = ss[i%2].AllocateIP(context.Background(), ids[0], bridge) })
	}
	wg.Wait()
	for i := range n {
		if errs[i] != nil || got[i] != got[0] {
			t.Errorf("allocation %d: got %s, %v; want %s like the first", i, got[i], errs[i], got[0])
		}
	}
}

func BenchmarkAllocateRelease(b *testing.B) {
	s := newSeededStore(b)
	ctx := context.Background()
	// 100 standing leases, so the lowest-free walk has something to step over.
	ids := createVMs(b, s, 101)
	bridge := mustPrefix(b, "172.30.77.1/24")
	for _, id := range ids[1:] {
		if _, err := s.AllocateIP(ctx, id, bridge); err != nil {
			b.Fatal(err)
		}
	}
	b.ResetTimer()
	for b.Loop() {
		if _, err := s.AllocateIP(ctx, ids[0], bridge); err != nil {
			b.Fatal(err)
		}
		if err := s.ReleaseIP(ctx, ids[0]); err != nil {
			b.Fatal(err)
		}
	}
}
