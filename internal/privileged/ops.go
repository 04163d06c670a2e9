package privileged

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"sort"

	"banger/internal/buildinfo"
)

// handlerTable is every op the helper answers. Each entry validates its request (the
// first function) before running it (the second); ChownToOwner and LoopAttach finish
// validating inside their run function because validation yields the resolved
// target, and LoopDetach and DMCreate because they check against the kernel's state
// (ops_block.go).
func (s *Server) handlerTable() map[string]handler {
	return map[string]handler{
		OpStatus:          typed(nil, s.status),
		OpEnsureBridge:    typed(s.v.ensureBridge, s.ensureBridge),
		OpCreateTap:       typed(s.v.createTap, s.createTap),
		OpDeleteTap:       typed(s.v.deleteTap, s.deleteTap),
		OpListTaps:        typed(nil, s.listTaps),
		OpEnsureNAT:       typed(s.v.ensureNAT, s.ensureNAT),
		OpResolverRouting: typed(s.v.resolverRouting, s.resolverRouting),
		OpChownToOwner:    typed(nil, s.chownToOwner),
		OpRemoveNetwork:   typed(s.v.removeNetwork, s.removeNetwork),
		OpLoopAttach:      typed(s.v.loopAttachSyntax, s.loopAttach),
		OpLoopDetach:      typed(s.v.loopDetachSyntax, s.loopDetach),
		OpLoopList:        typed(nil, s.loopList),
		OpDMAvailable:     typed(nil, s.dmAvailable),
		OpDMCreate:        typed(s.v.dmCreateCheck, s.dmCreate),
		OpDMRemove:        typed(s.v.dmRemoveCheck, s.dmRemove),
		OpDMList:          typed(nil, s.dmList),
		OpJailLaunch:      typed(s.v.jailLaunchSyntax, s.jailLaunch),
		OpJailSignal:      typed(s.v.jailSignal, s.jailSignal),
		OpJailRemove:      typed(s.v.jailRemove, s.jailRemove),
	}
}

// typed adapts a typed validate+run pair to a handler: strict JSON decoding, then
// validation, then the run. Errors that are not already wire errors become
// CodeFailed.
func typed[Req, Resp any](check func(*Req) *Error, run func(context.Context, *Req) (Resp, error)) handler {
	return func(ctx context.Context, body []byte, rec *auditRecord) (any, *Error) {
		var req Req
		if e := decodeStrict(body, &req); e != nil {
			return nil, e
		}
		rec.args = &req
		if check != nil {
			if e := check(&req); e != nil {
				return nil, e
			}
		}
		resp, err := run(ctx, &req)
		if err != nil {
			var we *Error
			if errors.As(err, &we) {
				return nil, we
			}
			return nil, &Error{Code: CodeFailed, Message: err.Error()}
		}
		return resp, nil
	}
}

// decodeStrict decodes exactly one JSON object with only known fields.
func decodeStrict(body []byte, v any) *Error {
	trimmed := bytes.TrimLeft(body, " \t\r\n")
	if len(trimmed) == 0 || trimmed[0] != '{' {
		return invalidf("request body must be a JSON object (send {} when the op takes no arguments)")
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return invalidf("request body: %v", err)
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return invalidf("request body has data after the JSON object: send exactly one object")
	}
	return nil
}

// The ops. Each runs only after its request passed validation.

func (s *Server) status(ctx context.Context, _ *StatusRequest) (StatusResponse, error) {
	ns, err := s.cfg.Net.Status(ctx, s.cfg.Bridge, s.cfg.BridgePrefix)
	if err != nil {
		return StatusResponse{}, fmt.Errorf("read host network state: %w", err)
	}
	s.mu.Lock()
	rs := s.resolverState
	s.mu.Unlock()
	return StatusResponse{
		Version:         buildinfo.Get(),
		PID:             os.Getpid(),
		OwnerUID:        s.cfg.OwnerUID,
		Bridge:          s.cfg.Bridge,
		BridgeUp:        ns.BridgeUp,
		NFTTable:        ns.NFTTable,
		IPForward:       ns.IPForward,
		ResolverRouting: rs,
	}, nil
}

func (s *Server) ensureBridge(ctx context.Context, r *EnsureBridgeRequest) (EnsureBridgeResponse, error) {
	created, err := s.cfg.Net.EnsureBridge(ctx, r.Name, r.Address, r.MTU)
	if err != nil {
		return EnsureBridgeResponse{}, fmt.Errorf("bridge %q: %w", r.Name, err)
	}
	// The rules first: they hold the guest policy, so no guest traffic is forwarded
	// before it is in place, and the table records whether forwarding was on before
	// banger (RemoveNetwork restores that).
	if err := s.cfg.Net.EnsureBaseRules(ctx, r.Name, r.Address, r.DNSPort); err != nil {
		return EnsureBridgeResponse{}, fmt.Errorf("nftables base rules for %q: %w", r.Name, err)
	}
	if err := s.cfg.Net.SetIPForward(true); err != nil {
		return EnsureBridgeResponse{}, fmt.Errorf("enable IPv4 forwarding: %w", err)
	}
	return EnsureBridgeResponse{Created: created}, nil
}

// createTap gives the tap to the configured owner; the request never names a uid.
func (s *Server) createTap(ctx context.Context, r *CreateTapRequest) (CreateTapResponse, error) {
	if err := s.cfg.Net.CreateTap(ctx, r.Name, r.Bridge, s.cfg.MTU, s.cfg.OwnerUID, s.cfg.OwnerGID); err != nil {
		return CreateTapResponse{}, fmt.Errorf("tap %q: %w", r.Name, err)
	}
	return CreateTapResponse{}, nil
}

// tapScope is whose taps the net ops may touch: the configured owner's, on the
// configured bridge. Requests never name either.
func (s *Server) tapScope() TapScope {
	return TapScope{Bridge: s.cfg.Bridge, OwnerUID: s.cfg.OwnerUID}
}

func (s *Server) deleteTap(ctx context.Context, r *DeleteTapRequest) (DeleteTapResponse, error) {
	if err := s.cfg.Net.DeleteTap(ctx, s.tapScope(), r.Name); err != nil {
		return DeleteTapResponse{}, fmt.Errorf("tap %q: %w", r.Name, err)
	}
	return DeleteTapResponse{}, nil
}

func (s *Server) listTaps(ctx context.Context, _ *ListTapsRequest) (ListTapsResponse, error) {
	taps, err := s.cfg.Net.ListTaps(ctx, s.tapScope())
	if err != nil {
		return ListTapsResponse{}, fmt.Errorf("list taps: %w", err)
	}
	if taps == nil {
		taps = []TapInfo{}
	}
	sort.Slice(taps, func(i, j int) bool { return taps[i].Name < taps[j].Name })
	return ListTapsResponse{Taps: taps}, nil
}

func (s *Server) ensureNAT(ctx context.Context, r *EnsureNATRequest) (EnsureNATResponse, error) {
	g := GuestNAT{Guest: r.GuestIP, Tap: r.Tap}
	if r.MAC != "" {
		mac, err := ParseGuestMAC(r.MAC) // validated already; parsed again for its value
		if err != nil {
			return EnsureNATResponse{}, invalidf("%v", err)
		}
		g.MAC = mac
	}
	if err := s.cfg.Net.EnsureNAT(ctx, s.tapScope(), g, r.Enable); err != nil {
		return EnsureNATResponse{}, fmt.Errorf("NAT for %s on %q: %w", r.GuestIP, r.Tap, err)
	}
	return EnsureNATResponse{}, nil
}

func (s *Server) resolverRouting(ctx context.Context, r *ResolverRoutingRequest) (ResolverRoutingResponse, error) {
	applied, reason, err := s.cfg.Resolver.Route(ctx, r.Bridge, r.Domain, r.DNS, r.Enable)
	if err != nil {
		return ResolverRoutingResponse{}, fmt.Errorf("resolver routing for %q: %w", r.Domain, err)
	}
	state := "removed"
	switch {
	case r.Enable && applied:
		state = fmt.Sprintf("applied: %s to %s on %s", r.Domain, r.DNS, r.Bridge)
	case r.Enable:
		state = "not applied: " + reason
	}
	s.mu.Lock()
	s.resolverState = state
	s.mu.Unlock()
	return ResolverRoutingResponse{Applied: applied, Reason: reason}, nil
}

// chownToOwner validates first (the validation resolves the target), then chowns
// through a descriptor; see chownBeneath.
func (s *Server) chownToOwner(_ context.Context, r *ChownToOwnerRequest) (ChownToOwnerResponse, error) {
	rel, e := s.v.chownToOwner(r)
	if e != nil {
		return ChownToOwnerResponse{}, e
	}
	if err := chownBeneath(s.v.jailBase, rel, s.cfg.OwnerUID, s.cfg.OwnerGID); err != nil {
		var we *Error
		if errors.As(err, &we) {
			return ChownToOwnerResponse{}, we
		}
		return ChownToOwnerResponse{}, fmt.Errorf("chown %s to the owner: %w", r.Path, err)
	}
	return ChownToOwnerResponse{}, nil
}

func (s *Server) removeNetwork(ctx context.Context, r *RemoveNetworkRequest) (RemoveNetworkResponse, error) {
	if err := s.cfg.Net.RemoveNetwork(ctx, s.tapScope()); err != nil {
		return RemoveNetworkResponse{}, fmt.Errorf("remove network %q: %w", r.Bridge, err)
	}
	return RemoveNetworkResponse{}, nil
}
