package hostnetwork

import (
	"context"
	"net/netip"
	"slices"
	"sync"
	"testing"
	"time"

	"banger/internal/config"
	"banger/internal/privileged"
)

// fakeHelper is the helper as Service.Open sees it: a fixed tap list, and a record
// of the taps it is asked to create and delete and of the NAT requests.
type fakeHelper struct {
	taps []privileged.TapInfo

	mu      sync.Mutex
	created []string
	deleted []string
	nat     []privileged.EnsureNATRequest
}

func (f *fakeHelper) Status(context.Context) (privileged.StatusResponse, error) {
	return privileged.StatusResponse{}, nil
}
func (f *fakeHelper) EnsureBridge(context.Context, privileged.EnsureBridgeRequest) (privileged.EnsureBridgeResponse, error) {
	return privileged.EnsureBridgeResponse{}, nil
}
func (f *fakeHelper) CreateTap(_ context.Context, r privileged.CreateTapRequest) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.created = append(f.created, r.Name)
	return nil
}
func (f *fakeHelper) DeleteTap(_ context.Context, r privileged.DeleteTapRequest) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.deleted = append(f.deleted, r.Name)
	return nil
}
func (f *fakeHelper) ListTaps(context.Context) ([]privileged.TapInfo, error) { return f.taps, nil }
func (f *fakeHelper) EnsureNAT(_ context.Context, r privileged.EnsureNATRequest) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.nat = append(f.nat, r)
	return nil
}
func (f *fakeHelper) ResolverRouting(context.Context, privileged.ResolverRoutingRequest) (privileged.ResolverRoutingResponse, error) {
	return privileged.ResolverRoutingResponse{}, nil
}

type noRecords struct{}

func (noRecords) Set(string, netip.Addr) error        { return nil }
func (noRecords) Remove(string)                       {}
func (noRecords) Replace(map[string]netip.Addr) error { return nil }
func (noRecords) Records() map[string]netip.Addr      { return nil }

// TestOpenLeavesForeignTaps: taps the helper marks foreign (another user's or another
// root's, with banger's names) are neither adopted nor deleted, and their names are
// never created again; the owner's own idle pool tap is adopted.
func TestOpenLeavesForeignTaps(t *testing.T) {
	h := &fakeHelper{taps: []privileged.TapInfo{
		{Name: "tap-pool-1", Master: "banger0", OwnerUID: 1000, Up: true},
		{Name: "tap-pool-7", OwnerUID: 4243, Foreign: true},
		{Name: "tap-vm-deadbeef", OwnerUID: 4243, Foreign: true},
	}}
	nw := config.Default().Network
	nw.TapPoolSize = 3
	s, err := New(Deps{Helper: h, DNS: noRecords{}, Network: nw, Domain: "vm", DNSListen: netip.MustParseAddrPort("172.30.0.1:5353")})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if err := s.Open(ctx, nil); err != nil {
		t.Fatal(err)
	}
	defer s.Close(ctx)
	wctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if err := s.Pool().WaitWarm(wctx); err != nil {
		t.Fatal(err)
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if len(h.deleted) != 0 {
		t.Errorf("deleted %v, want nothing (foreign taps are not banger's to delete)", h.deleted)
	}
	for _, n := range h.created {
		if n == "tap-pool-7" || n == "tap-pool-1" {
			t.Errorf("created %s, a name already taken", n)
		}
	}
	if idle := s.Pool().Stats().IdleTaps; !slices.Contains(idle, "tap-pool-1") || slices.Contains(idle, "tap-pool-7") {
		t.Errorf("idle taps %v: want the owner's tap-pool-1 adopted and tap-pool-7 left alone", idle)
	}
}

// TestSetNATSendsTheMAC: the guest's MAC reaches the helper with the enable request.
func TestSetNATSendsTheMAC(t *testing.T) {
	h := &fakeHelper{}
	s, err := New(Deps{Helper: h, DNS: noRecords{}, Network: config.Default().Network, Domain: "vm"})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.SetNAT(context.Background(), netip.MustParseAddr("172.30.0.5"), "02:aa:bb:cc:dd:ee", "tap-pool-0", true); err != nil {
		t.Fatal(err)
	}
	want := privileged.EnsureNATRequest{GuestIP: netip.MustParseAddr("172.30.0.5"), MAC: "02:aa:bb:cc:dd:ee", Tap: "tap-pool-0", Enable: true}
	if len(h.nat) != 1 || h.nat[0] != want {
		t.Errorf("EnsureNAT requests %+v, want [%+v]", h.nat, want)
	}
}
