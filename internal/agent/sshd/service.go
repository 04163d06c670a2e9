package sshd

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"sync"

	"banger/internal/agent/proto"

	"golang.org/x/crypto/ssh"
)

// Service is the SSH server as the agent runs it: it listens only once there is a
// host key, and takes its keys from the host (the control API's provision and
// authorized_keys calls). An agent booted without a host key does not listen at
// all, so a client never meets a key it cannot verify; the host's provision call
// then starts the listener. Run must be running for Provision to complete.
type Service struct {
	srv  *Server
	addr string
	log  *slog.Logger
	// kick carries Provision's request to Run: a host key is in place, listen if
	// not yet, and answer with the error. Run owns the listener.
	kick chan chan error

	provisionMu sync.Mutex // serializes Provision: validate everything, then apply

	mu       sync.Mutex // guards listenAt
	listenAt net.Addr   // where SSH listens; nil while it does not
}

// NewService returns a Service that serves srv on the TCP address addr (":22").
func NewService(srv *Server, addr string) *Service {
	return &Service{srv: srv, addr: addr, log: srv.log, kick: make(chan chan error)}
}

// Run listens as soon as there is a host key (at once if one was loaded) and
// serves until ctx ends; it then closes the listener and every connection. A
// listener that fails is logged, and the next Provision with a host key listens
// again. Run returns nil when ctx ends.
func (s *Service) Run(ctx context.Context) error {
	ctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	defer wg.Wait() // runs after cancel: Serve returns once ctx ends
	defer cancel()
	defer s.setAddr(nil)

	served := make(chan error, 1)
	listening := false
	start := func() error {
		if listening || s.srv.cfg.HostKeys.Signer() == nil {
			return nil
		}
		ln, err := net.Listen("tcp", s.addr)
		if err != nil {
			return fmt.Errorf("ssh listen on %s: %w", s.addr, err)
		}
		listening = true
		s.setAddr(ln.Addr())
		s.log.Info("ssh listening", "addr", ln.Addr().String())
		wg.Add(1)
		go func() {
			defer wg.Done()
			served <- s.srv.Serve(ctx, ln)
		}()
		return nil
	}

	if s.srv.cfg.HostKeys.Signer() == nil {
		s.log.Info("ssh not listening until the host provisions a host key")
	} else if err := start(); err != nil {
		s.log.Error("ssh not listening", "err", err)
	}
	for {
		select {
		case <-ctx.Done():
			return nil
		case reply := <-s.kick:
			reply <- start()
		case err := <-served:
			listening = false
			s.setAddr(nil)
			if ctx.Err() != nil {
				return nil
			}
			s.log.Error("ssh stopped serving; it listens again at the host's next provision", "err", err)
		}
	}
}

// Provision applies the SSH material the host sends. Both parts are validated
// before either is applied (invalid material is a proto.ErrBadRequest and changes
// nothing), the authorized keys are applied before the host key, and a host key
// makes SSH listen if it did not. It returns the state after the call.
func (s *Service) Provision(ctx context.Context, m proto.ProvisionArgs) (proto.ProvisionResult, error) {
	s.provisionMu.Lock()
	defer s.provisionMu.Unlock()
	if m.HostKey != "" {
		if _, err := ParseHostKey([]byte(m.HostKey)); err != nil {
			return proto.ProvisionResult{}, proto.Errorf(proto.CodeBadRequest, "ssh host key: %v", err)
		}
	}
	if m.AuthorizedKeys != nil {
		if _, err := parseKeys(*m.AuthorizedKeys); err != nil {
			return proto.ProvisionResult{}, proto.Errorf(proto.CodeBadRequest, "authorized keys: %v", err)
		}
		n, err := s.srv.cfg.Keys.SetAuthorizedKeys(*m.AuthorizedKeys)
		if err != nil {
			return proto.ProvisionResult{}, err
		}
		s.log.Info("ssh authorized keys provisioned", "count", n)
	}
	if m.HostKey != "" {
		signer, err := s.srv.cfg.HostKeys.Set([]byte(m.HostKey))
		if err != nil {
			return proto.ProvisionResult{}, err
		}
		s.log.Info("ssh host key provisioned", "key", ssh.FingerprintSHA256(signer.PublicKey()))
		if err := s.listenNow(ctx); err != nil {
			return proto.ProvisionResult{}, fmt.Errorf("the host key is installed, but: %w", err)
		}
	}
	return s.state(), nil
}

// listenNow asks Run to listen (a no-op when it does already).
func (s *Service) listenNow(ctx context.Context) error {
	reply := make(chan error, 1) // Run never blocks on the answer
	select {
	case s.kick <- reply:
	case <-ctx.Done():
		return fmt.Errorf("start ssh: %w", ctx.Err())
	}
	select {
	case err := <-reply:
		return err
	case <-ctx.Done():
		return fmt.Errorf("start ssh: %w", ctx.Err())
	}
}

func (s *Service) state() proto.ProvisionResult {
	r := proto.ProvisionResult{AuthorizedKeys: s.srv.cfg.Keys.Count()}
	if k := s.srv.cfg.HostKeys.Signer(); k != nil {
		r.HostKey = ssh.FingerprintSHA256(k.PublicKey())
	}
	if a := s.Addr(); a != nil {
		r.Listen = a.String()
	}
	return r
}

// Addr is where SSH listens, nil while it does not.
func (s *Service) Addr() net.Addr {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.listenAt
}

func (s *Service) setAddr(a net.Addr) {
	s.mu.Lock()
	s.listenAt = a
	s.mu.Unlock()
}
