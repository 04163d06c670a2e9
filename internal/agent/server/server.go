package server

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"slices"
	"strings"
	"sync"
	"time"

	"banger/internal/agent/proto"
	"banger/internal/agent/users"

	"github.com/hashicorp/yamux"
)

// SSH takes the SSH material the host provisions (sshd.Service implements it).
// Provision reports invalid material as a *proto.Error with CodeBadRequest;
// any other error is answered as internal.
type SSH interface {
	Provision(ctx context.Context, m proto.ProvisionArgs) (proto.ProvisionResult, error)
}

// Config holds the Server's dependencies.
type Config struct {
	// Logger receives one line per failed call and per session. Nil discards.
	Logger *slog.Logger
	// Version is reported by health and the handshake (buildinfo.Get()).
	Version string
	// PID1 is reported by health: true when the agent is the guest's init.
	PID1 bool
	// BootPhases returns init's timed phases for health; nil means none.
	BootPhases func() []proto.BootPhase
	// Users resolves the user of exec and put calls (the zero value reads /etc/passwd).
	Users users.DB
	// Shutdown performs a shutdown or reboot; it is called after the host has been
	// answered. Nil makes CallShutdown unsupported.
	Shutdown func(action string) error
	// SSH receives the host key and authorized keys; nil (an agent without SSH)
	// makes CallProvision and CallAuthorizedKeys unsupported.
	SSH SSH
	// HandshakeTimeout bounds the handshake on connection transports (unix, vsock),
	// so that a peer that connects and says nothing does not hold a goroutine.
	// Serial ports wait forever: the host may open its end at any time. Default 10s.
	HandshakeTimeout time.Duration
}

// Server serves the control API. One Server serves any number of sessions on any
// number of transports at once.
type Server struct {
	cfg     Config
	log     *slog.Logger
	started time.Time
	calls   map[string]handler // immutable after New
}

// handler serves one call. It answers with c.respond/c.fail; returning an error
// before answering makes the server answer with that error.
type handler func(ctx context.Context, c *call) error

// New returns a Server.
func New(cfg Config) *Server {
	if cfg.HandshakeTimeout == 0 {
		cfg.HandshakeTimeout = 10 * time.Second
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	s := &Server{cfg: cfg, log: log, started: time.Now()}
	s.calls = map[string]handler{
		proto.CallHealth:         s.health,
		proto.CallExec:           s.exec,
		proto.CallPut:            s.put,
		proto.CallGet:            s.get,
		proto.CallShutdown:       s.shutdown,
		proto.CallAuthorizedKeys: s.authorizedKeys,
		proto.CallProvision:      s.provision,
	}
	return s
}

// Serve accepts connections on ln (a unix or vsock listener) and serves a session
// on each until ctx ends or ln fails. It closes ln when ctx ends.
func (s *Server) Serve(ctx context.Context, ln net.Listener) error {
	stop := context.AfterFunc(ctx, func() { ln.Close() })
	defer stop()
	var wg sync.WaitGroup
	defer wg.Wait()
	for {
		conn, err := ln.Accept()
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				continue
			}
			return fmt.Errorf("accept on %s: %w", ln.Addr(), err)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := s.serveStreamConn(ctx, conn); err != nil {
				s.log.Info("control session ended", "remote", conn.RemoteAddr(), "err", err)
			}
		}()
	}
}

// serveStreamConn runs one session on a connection that belongs to one host peer.
func (s *Server) serveStreamConn(ctx context.Context, conn net.Conn) error {
	defer conn.Close()
	if err := conn.SetReadDeadline(time.Now().Add(s.cfg.HandshakeTimeout)); err != nil {
		return fmt.Errorf("set handshake deadline: %w", err)
	}
	stop := context.AfterFunc(ctx, func() { conn.Close() })
	defer stop()
	r, err := proto.GuestHandshake(conn, s.cfg.Version)
	if err != nil {
		return fmt.Errorf("handshake: %w", err)
	}
	if err := conn.SetReadDeadline(time.Time{}); err != nil {
		return fmt.Errorf("clear handshake deadline: %w", err)
	}
	return s.ServeSession(ctx, proto.LinkConn{Reader: r, Writer: conn, Closer: conn})
}

// ServeSession runs the multiplexer on a link that has completed the handshake and
// serves every stream the host opens, until the link fails or ctx ends. It returns
// the reason the session ended; a session ending is normal (the host went away).
// Calls still running are cancelled.
func (s *Server) ServeSession(ctx context.Context, link io.ReadWriteCloser) error {
	sess, err := yamux.Server(link, proto.YamuxConfig(s.log))
	if err != nil {
		return fmt.Errorf("start multiplexer: %w", err)
	}
	defer sess.Close()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stop := context.AfterFunc(ctx, func() { sess.Close() })
	defer stop()
	var wg sync.WaitGroup
	defer wg.Wait()
	s.log.Debug("control session started")
	for {
		st, err := sess.AcceptStream()
		if err != nil {
			cancel()
			if ctx.Err() != nil && !errors.Is(err, yamux.ErrSessionShutdown) {
				return ctx.Err()
			}
			return fmt.Errorf("session: %w", err)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			s.serveStream(ctx, st)
		}()
	}
}

// call is one stream's call: the framed connection and the decoded request.
type call struct {
	stream    *yamux.Stream
	conn      *proto.Conn
	name      string
	args      json.RawMessage
	responded bool
}

// decode decodes the call's arguments into v, refusing unknown fields.
func (c *call) decode(v any) error {
	if len(c.args) == 0 {
		return proto.Errorf(proto.CodeBadRequest, "%s: missing arguments", c.name)
	}
	return proto.DecodeJSON(proto.Frame{Type: proto.FrameRequest, Payload: c.args}, v)
}

func (c *call) respond(result any) error {
	resp, err := proto.ResultResponse(result)
	if err != nil {
		return err
	}
	c.responded = true
	return c.conn.WriteJSON(proto.FrameResponse, resp)
}

func (c *call) fail(err error) error {
	c.responded = true
	return c.conn.WriteJSON(proto.FrameResponse, proto.ErrorResponse(err))
}

// serveStream reads the request that opens st and dispatches it. Whatever goes
// wrong stays inside this stream: the session and other streams carry on.
func (s *Server) serveStream(ctx context.Context, st *yamux.Stream) {
	defer st.Close()
	c := &call{stream: st, conn: proto.NewConn(st)}
	err := s.dispatch(ctx, c)
	if err == nil {
		return
	}
	s.log.Info("control call failed", "call", c.name, "err", err)
	if !c.responded {
		if werr := c.fail(err); werr != nil {
			s.log.Debug("answer failed call", "call", c.name, "err", werr)
		}
	}
}

func (s *Server) dispatch(ctx context.Context, c *call) error {
	f, err := c.conn.ReadFrame()
	if err != nil {
		if errors.Is(err, io.EOF) {
			return nil // opened and closed without a request: nothing to answer
		}
		return err
	}
	if f.Type != proto.FrameRequest {
		return proto.Errorf(proto.CodeBadRequest, "a stream must start with a request frame, got a %s frame", f.Type)
	}
	var req proto.Request
	if err := proto.DecodeJSON(f, &req); err != nil {
		return err
	}
	c.name, c.args = req.Call, req.Args
	h, ok := s.calls[req.Call]
	if !ok {
		return proto.Errorf(proto.CodeUnknownCall, "unknown call %q (this agent, version %s, knows %s)", req.Call, s.cfg.Version, s.knownCalls())
	}
	return h(ctx, c)
}

func (s *Server) knownCalls() string {
	names := make([]string, 0, len(s.calls))
	for name := range s.calls {
		names = append(names, name)
	}
	slices.Sort(names)
	return strings.Join(names, ", ")
}

func (s *Server) health(_ context.Context, c *call) error {
	h := proto.Health{Version: s.cfg.Version, PID1: s.cfg.PID1, Uptime: time.Since(s.started)}
	if s.cfg.BootPhases != nil {
		h.Boot = s.cfg.BootPhases()
	}
	return c.respond(h)
}

// shutdownAnswerWait bounds how long a shutdown waits for the host to read the
// answer.
const shutdownAnswerWait = 2 * time.Second

func (s *Server) shutdown(_ context.Context, c *call) error {
	var a proto.ShutdownArgs
	if err := c.decode(&a); err != nil {
		return err
	}
	if a.Action != proto.ActionPoweroff && a.Action != proto.ActionReboot {
		return proto.Errorf(proto.CodeBadRequest, "shutdown action %q: want %q or %q", a.Action, proto.ActionPoweroff, proto.ActionReboot)
	}
	if s.cfg.Shutdown == nil {
		return proto.Errorf(proto.CodeUnsupported, "this agent cannot %s the guest (it runs in service mode without a shutdown command)", a.Action)
	}
	// The request is valid and was received: honour it even when the answer cannot
	// be written (a host that hangs up right after reading it makes yamux report
	// "session shutdown" although the bytes went out).
	if err := c.respond(struct{}{}); err != nil {
		s.log.Warn("shutdown: could not confirm to the host; shutting down anyway", "err", err)
	}
	s.log.Info("shutdown requested by the host", "action", a.Action)
	// Start only once the host has closed its end (it has read the answer), or
	// after shutdownAnswerWait: the session goes down with the guest, and a host
	// whose session ends mid-call cannot tell "accepted" from "lost".
	_ = c.stream.SetReadDeadline(time.Now().Add(shutdownAnswerWait))
	_, _ = io.Copy(io.Discard, c.stream)
	// the shutdown runs apart so this stream can close cleanly
	go func() {
		if err := s.cfg.Shutdown(a.Action); err != nil {
			s.log.Error("shutdown failed", "action", a.Action, "err", err)
		}
	}()
	return nil
}

func (s *Server) authorizedKeys(ctx context.Context, c *call) error {
	var a proto.AuthorizedKeysArgs
	if err := c.decode(&a); err != nil {
		return err
	}
	if s.cfg.SSH == nil {
		return proto.Errorf(proto.CodeUnsupported, "this agent runs no SSH server: authorized keys cannot be set")
	}
	r, err := s.cfg.SSH.Provision(ctx, proto.ProvisionArgs{AuthorizedKeys: &a.Keys})
	if err != nil {
		return err
	}
	return c.respond(proto.AuthorizedKeysResult{Count: r.AuthorizedKeys})
}

// provision installs the SSH host key and authorized keys the host made for this
// guest. It comes right after the handshake, before anyone uses SSH.
func (s *Server) provision(ctx context.Context, c *call) error {
	var a proto.ProvisionArgs
	if err := c.decode(&a); err != nil {
		return err
	}
	if s.cfg.SSH == nil {
		return proto.Errorf(proto.CodeUnsupported, "this agent runs no SSH server (started with -ssh-listen ''): nothing to provision")
	}
	r, err := s.cfg.SSH.Provision(ctx, a)
	if err != nil {
		return err
	}
	return c.respond(r)
}
