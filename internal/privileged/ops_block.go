package privileged

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
)

// The loop and device-mapper ops. Each runs after its request passed the checks that
// need nothing but the request (its table entry's check function); those that must
// check arguments against the kernel's state (which loops are banger's, which dm
// devices exist) do so under blockMu, through BlockOps' read methods, right before
// acting, so no other call through the helper changes that state in between.

func (s *Server) loopAttach(ctx context.Context, r *LoopAttachRequest) (LoopAttachResponse, error) {
	s.blockMu.Lock()
	defer s.blockMu.Unlock()
	t, e := s.v.loopAttach(r)
	if e != nil {
		return LoopAttachResponse{}, e
	}
	f, err := openLoopFile(s.v, t, r.Path)
	if err != nil {
		return LoopAttachResponse{}, err
	}
	defer f.Close()
	dev, err := s.cfg.Block.LoopAttach(ctx, "/proc/self/fd/"+strconv.Itoa(int(f.Fd())), r.ReadOnly)
	if err != nil {
		return LoopAttachResponse{}, fmt.Errorf("bind %s: %w", r.Path, err)
	}
	return LoopAttachResponse{Device: dev}, nil
}

func (s *Server) loopDetach(ctx context.Context, r *LoopDetachRequest) (LoopDetachResponse, error) {
	s.blockMu.Lock()
	defer s.blockMu.Unlock()
	realRoot, e := s.v.realRoot()
	if e != nil {
		return LoopDetachResponse{}, e
	}
	loops, err := s.cfg.Block.LoopList(ctx)
	if err != nil {
		return LoopDetachResponse{}, fmt.Errorf("loop detach %s: %w", r.Device, err)
	}
	bound, e := s.v.loopDetach(r, loops, realRoot)
	if e != nil {
		return LoopDetachResponse{}, e
	}
	if !bound {
		return LoopDetachResponse{}, nil // nothing to detach, and nothing of ours
	}
	if err := s.cfg.Block.LoopDetach(ctx, r.Device); err != nil {
		return LoopDetachResponse{}, fmt.Errorf("loop detach %s: %w", r.Device, err)
	}
	return LoopDetachResponse{}, nil
}

func (s *Server) loopList(ctx context.Context, _ *LoopListRequest) (LoopListResponse, error) {
	realRoot, e := s.v.realRoot()
	if e != nil {
		return LoopListResponse{}, e
	}
	loops, err := s.cfg.Block.LoopList(ctx)
	if err != nil {
		return LoopListResponse{}, err
	}
	return LoopListResponse{Loops: s.v.bangerLoops(loops, realRoot)}, nil
}

func (s *Server) dmAvailable(ctx context.Context, _ *DMAvailableRequest) (DMAvailableResponse, error) {
	if err := s.cfg.Block.DMAvailable(ctx); err != nil {
		return DMAvailableResponse{Available: false, Reason: err.Error()}, nil
	}
	return DMAvailableResponse{Available: true}, nil
}

// dmCreateCheck is DMCreate's table entry check: the name and the table's shape.
func (v validator) dmCreateCheck(r *DMCreateRequest) *Error {
	_, e := v.dmCreateSyntax(r)
	return e
}

// dmCreate checks the table's devices against the kernel's state, creates the device
// from the canonical text of the parsed table and, for a VM's snapshot, hands its
// nodes to the owner; if that fails the device is removed again.
func (s *Server) dmCreate(ctx context.Context, r *DMCreateRequest) (DMCreateResponse, error) {
	t, e := s.v.dmCreateSyntax(r)
	if e != nil {
		return DMCreateResponse{}, e
	}
	s.blockMu.Lock()
	defer s.blockMu.Unlock()
	realRoot, e := s.v.realRoot()
	if e != nil {
		return DMCreateResponse{}, e
	}
	loops, err := s.cfg.Block.LoopList(ctx)
	if err != nil {
		return DMCreateResponse{}, fmt.Errorf("device-mapper create %s: %w", r.Name, err)
	}
	var names []string
	if t.originDev != "" {
		if names, err = s.cfg.Block.DMList(ctx); err != nil {
			return DMCreateResponse{}, fmt.Errorf("device-mapper create %s: %w", r.Name, err)
		}
	}
	if e := s.v.dmCreateDevices(t, loops, names, realRoot); e != nil {
		return DMCreateResponse{}, e
	}
	dev, err := s.cfg.Block.DMCreate(ctx, r.Name, formatDMTable(t.targets))
	if err != nil {
		return DMCreateResponse{}, fmt.Errorf("device-mapper create %s: %w", r.Name, err)
	}
	if t.name.origin {
		return DMCreateResponse{Device: dev}, nil // only the helper's tables open it
	}
	if err := chownDMNode(s.cfg.devices.withDefaults(), r.Name, s.cfg.OwnerUID, s.cfg.OwnerGID); err != nil {
		err = fmt.Errorf("device-mapper create %s: hand the device to the owner: %w", r.Name, err)
		if rerr := s.cfg.Block.DMRemove(context.WithoutCancel(ctx), r.Name); rerr != nil {
			err = errors.Join(err, fmt.Errorf("and removing it again failed: %w", rerr))
		}
		return DMCreateResponse{}, err
	}
	return DMCreateResponse{Device: dev}, nil
}

func (v validator) dmRemoveCheck(r *DMRemoveRequest) *Error {
	_, e := v.checkDMName("name", r.Name)
	return e
}

func (s *Server) dmRemove(ctx context.Context, r *DMRemoveRequest) (DMRemoveResponse, error) {
	s.blockMu.Lock()
	defer s.blockMu.Unlock()
	if err := s.cfg.Block.DMRemove(ctx, r.Name); err != nil {
		return DMRemoveResponse{}, fmt.Errorf("device-mapper remove %s: %w", r.Name, err)
	}
	return DMRemoveResponse{}, nil
}

func (s *Server) dmList(ctx context.Context, _ *DMListRequest) (DMListResponse, error) {
	all, err := s.cfg.Block.DMList(ctx)
	if err != nil {
		return DMListResponse{}, err
	}
	names := []string{}
	for _, n := range all {
		if strings.HasPrefix(n, s.v.dmPrefix) {
			names = append(names, n)
		}
	}
	return DMListResponse{Names: names}, nil
}
