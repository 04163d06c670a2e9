// Package hostnetwork is bangerd's HostNetwork service: it owns everything about the
// host's network that VMs use — the bridge, the TAP pool, per-VM NAT and DNS records,
// and host resolver routing — and reaches the kernel only through the root helper.
package hostnetwork

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"sync"

	"banger/internal/api"
	"banger/internal/config"
	"banger/internal/privileged"
)

// Helper is the part of the root helper's client this service uses.
type Helper interface {
	Status(ctx context.Context) (privileged.StatusResponse, error)
	EnsureBridge(ctx context.Context, req privileged.EnsureBridgeRequest) (privileged.EnsureBridgeResponse, error)
	CreateTap(ctx context.Context, req privileged.CreateTapRequest) error
	DeleteTap(ctx context.Context, req privileged.DeleteTapRequest) error
	ListTaps(ctx context.Context) ([]privileged.TapInfo, error)
	EnsureNAT(ctx context.Context, req privileged.EnsureNATRequest) error
	ResolverRouting(ctx context.Context, req privileged.ResolverRoutingRequest) (privileged.ResolverRoutingResponse, error)
}

// Records is the VM DNS server's record set.
type Records interface {
	Set(name string, ip netip.Addr) error
	Remove(name string)
	Replace(records map[string]netip.Addr) error
	Records() map[string]netip.Addr
}

// Deps are the service's explicit dependencies.
type Deps struct {
	Helper  Helper         // never nil
	DNS     Records        // never nil
	Network config.Network // bridge name, CIDR, pool size, MTU
	Domain  string         // DNS domain, e.g. "vm"
	// DNSListen is where the DNS server listens; guests' gateway:53 is redirected to
	// its port, and systemd-resolved (where present) is pointed at it.
	DNSListen netip.AddrPort
	// ResolveHint explains, for hosts without systemd-resolved, how to query banger's DNS.
	ResolveHint func(domain string, addr netip.AddrPort) string
	Logger      *slog.Logger
	// Root is the banger root; it names the helper's nftables tables in Status.
	Root string
}

// Service is HostNetwork. Construct with New, then Open; Close when done.
type Service struct {
	deps   Deps
	bridge netip.Prefix
	pool   *TapPool
	log    *slog.Logger

	mu         sync.Mutex // guards the following
	routing    privileged.ResolverRoutingResponse
	routingErr string // why routing failed, when the helper call itself failed
	routedOn   bool   // resolver routing was applied by Open and must be undone by Close
}

// New validates deps; it touches nothing until Open.
func New(deps Deps) (*Service, error) {
	if deps.Helper == nil || deps.DNS == nil {
		return nil, errors.New("hostnetwork: Helper and DNS are required")
	}
	cfg := config.Config{Network: deps.Network}
	bridge, err := cfg.BridgePrefix()
	if err != nil {
		return nil, err
	}
	log := deps.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	s := &Service{deps: deps, bridge: bridge, log: log}
	s.pool = NewTapPool(TapPoolConfig{Ops: helperTaps{h: deps.Helper, bridge: deps.Network.Bridge}, Size: deps.Network.TapPoolSize, Logger: log.With("component", "tap-pool")})
	return s, nil
}

// Bridge returns the bridge address with the guest prefix (every guest's gateway).
func (s *Service) Bridge() netip.Prefix { return s.bridge }

// Open makes sure the bridge and banger's nftables table exist, seeds the TAP pool
// from inUse (the taps VMs hold) and the taps on the host, starts its warm-up and
// routes the DNS domain through the host resolver where possible.
func (s *Service) Open(ctx context.Context, inUse []string) error {
	if _, err := s.deps.Helper.EnsureBridge(ctx, privileged.EnsureBridgeRequest{
		Name: s.deps.Network.Bridge, Address: s.bridge, MTU: s.deps.Network.MTU, DNSPort: s.deps.DNSListen.Port(),
	}); err != nil {
		return fmt.Errorf("bridge %s: %w", s.deps.Network.Bridge, err)
	}
	taps, err := s.deps.Helper.ListTaps(ctx)
	if err != nil {
		return fmt.Errorf("list taps: %w", err)
	}
	present := make([]string, 0, len(taps))
	held := append([]string(nil), inUse...)
	for _, t := range taps {
		if t.Foreign {
			// Another user's or another banger root's tap with one of banger's names:
			// the helper refuses to touch it, so it is treated like a tap in use (its
			// name is avoided, it is neither adopted nor deleted).
			held = append(held, t.Name)
			continue
		}
		present = append(present, t.Name)
	}
	if err := s.pool.Open(ctx, held, present); err != nil {
		// Surplus taps that could not be deleted are not fatal: log and go on.
		s.log.Warn("tap pool open", "err", err)
	}
	s.routeResolver(ctx)
	return nil
}

func (s *Service) routeResolver(ctx context.Context) {
	resp, err := s.deps.Helper.ResolverRouting(ctx, privileged.ResolverRoutingRequest{
		Enable: true, Bridge: s.deps.Network.Bridge, Domain: s.deps.Domain, DNS: s.deps.DNSListen,
	})
	s.mu.Lock()
	defer s.mu.Unlock()
	s.routing, s.routedOn, s.routingErr = resp, resp.Applied, ""
	if err != nil {
		s.routingErr = err.Error()
		s.log.Warn("host resolver routing failed; names resolve only through banger's DNS", "err", err)
	}
}

// AcquireTap returns a tap for a VM: an idle pool tap, or a new one named after vmID.
func (s *Service) AcquireTap(ctx context.Context, vmID string) (string, error) {
	name, _, err := s.pool.Acquire(ctx, privileged.VMTapName(vmID))
	return name, err
}

// ReleaseTap gives a VM's tap back to the pool (or deletes it).
func (s *Service) ReleaseTap(ctx context.Context, tap string) error { return s.pool.Release(ctx, tap) }

// SetNAT adds or removes a guest's network rules: its tap may send only from guest
// and mac (the VM's own MAC, needed when enabling), and the guest gets NAT egress.
func (s *Service) SetNAT(ctx context.Context, guest netip.Addr, mac, tap string, enable bool) error {
	if err := s.deps.Helper.EnsureNAT(ctx, privileged.EnsureNATRequest{GuestIP: guest, MAC: mac, Tap: tap, Enable: enable}); err != nil {
		return fmt.Errorf("nat for %s on %s: %w", guest, tap, err)
	}
	return nil
}

// tableName is how Status names the helper's nftables tables.
func (s *Service) tableName() string {
	if s.deps.Root == "" {
		return "banger_*"
	}
	return "ip/bridge " + privileged.NFTTableName(s.deps.Root)
}

// Pool exposes the pool's snapshot and warm-up wait for status and tests.
func (s *Service) Pool() *TapPool { return s.pool }

// Status reports the network as the helper and the pool see it.
func (s *Service) Status(ctx context.Context) (api.NetworkStatus, api.DNSStatus, api.HelperStatus) {
	ps := s.pool.Stats()
	ns := api.NetworkStatus{
		Bridge: s.deps.Network.Bridge, Address: s.bridge.String(), NFTName: s.tableName(),
		TapPool: api.TapPool{Idle: ps.Idle, Size: ps.Size, Warming: ps.Warming, IdleTaps: ps.IdleTaps},
	}
	ds := api.DNSStatus{Domain: s.deps.Domain, Listen: s.deps.DNSListen.String(), Records: len(s.deps.DNS.Records())}
	s.mu.Lock()
	routing, routingErr := s.routing, s.routingErr
	s.mu.Unlock()
	if routing.Applied {
		ds.ResolverRouting = "systemd-resolved"
	} else {
		// The helper's reason (e.g. no systemd-resolved) is what the hint explains;
		// only a failed call is worth showing on its own.
		ds.ResolverRouting = "none"
		if s.deps.ResolveHint != nil {
			ds.Hint = s.deps.ResolveHint(s.deps.Domain, s.deps.DNSListen)
		}
		if routingErr != "" {
			ds.Hint = "routing the domain through the host resolver failed: " + routingErr + "\n" + ds.Hint
		}
	}
	hs := api.HelperStatus{OwnerUID: -1}
	st, err := s.deps.Helper.Status(ctx)
	if err != nil {
		hs.Error = err.Error()
		return ns, ds, hs
	}
	hs = api.HelperStatus{Reachable: true, Version: st.Version, PID: st.PID, OwnerUID: st.OwnerUID}
	ns.BridgeUp, ns.NFTTable, ns.IPForward = st.BridgeUp, st.NFTTable, st.IPForward
	return ns, ds, hs
}

// Close stops the pool's warm-up and removes the resolver routing Open applied. The
// bridge, the table, idle pool taps and running VMs' taps stay: VMs outlive the
// daemon, and the next Open adopts the idle taps.
func (s *Service) Close(ctx context.Context) error {
	s.pool.Close()
	s.mu.Lock()
	on := s.routedOn
	s.routedOn = false
	s.mu.Unlock()
	if on {
		if _, err := s.deps.Helper.ResolverRouting(ctx, privileged.ResolverRoutingRequest{
			Enable: false, Bridge: s.deps.Network.Bridge, Domain: s.deps.Domain, DNS: s.deps.DNSListen,
		}); err != nil {
			return fmt.Errorf("remove host resolver routing: %w", err)
		}
	}
	return nil
}

// helperTaps adapts the helper client to the pool's TapOps, binding the bridge.
type helperTaps struct {
	h      Helper
	bridge string
}

func (t helperTaps) CreateTap(ctx context.Context, name string) error {
	return t.h.CreateTap(ctx, privileged.CreateTapRequest{Name: name, Bridge: t.bridge})
}

func (t helperTaps) DeleteTap(ctx context.Context, name string) error {
	return t.h.DeleteTap(ctx, privileged.DeleteTapRequest{Name: name})
}
