// Package sshd is the guest agent's SSH server: public-key authentication against
// keys the host provides, sessions (shell, exec, pty, env, signals, exit status),
// the sftp subsystem (so scp and sftp work) and local forwarding (ssh -L). It lets
// any image take `ssh`, even one without an SSH server of its own.
package sshd

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"time"

	"banger/internal/agent/users"

	"golang.org/x/crypto/ssh"
)

// Config holds the server's dependencies.
type Config struct {
	// Logger receives one line per connection and per refusal; nil discards.
	Logger *slog.Logger
	// HostKeys holds the key the host provisioned; never nil. Each connection
	// uses the key current when it arrives; while there is none, connections are
	// closed unanswered (Service listens only once there is one).
	HostKeys *HostKeyStore
	// Keys are the accepted client keys; never nil.
	Keys *KeyStore
	// Users resolves login names (the zero value reads /etc/passwd).
	Users users.DB
	// SFTPHelper is the argv that serves sftp on stdin/stdout, run as the login user
	// when it is not the agent's own user (the agent binary's sftp-server mode).
	// Nil refuses sftp to such users; the agent's own user is served in process.
	SFTPHelper []string
	// Version names the server in the SSH banner.
	Version string
}

// Server accepts SSH connections.
type Server struct {
	cfg     Config
	log     *slog.Logger
	version string // the SSH banner; immutable
}

// handshakeTimeout bounds key exchange and authentication, so a client that stalls
// does not hold a goroutine.
const handshakeTimeout = 30 * time.Second

// New returns a Server.
func New(cfg Config) (*Server, error) {
	if cfg.HostKeys == nil || cfg.Keys == nil {
		return nil, errors.New("sshd: a host key store and a key store are required")
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	version := "SSH-2.0-banger-agent"
	if cfg.Version != "" {
		version += "_" + sanitizeVersion(cfg.Version)
	}
	return &Server{cfg: cfg, log: log, version: version}, nil
}

// serverConfig is the configuration of one connection. It is built per
// connection, so a host key set meanwhile applies to the next connection while
// this one (rekeying included) keeps the key it started with.
func (s *Server) serverConfig(hostKey ssh.Signer) *ssh.ServerConfig {
	conf := &ssh.ServerConfig{
		PublicKeyCallback: s.checkKey,
		ServerVersion:     s.version,
	}
	conf.AddHostKey(hostKey)
	return conf
}

func sanitizeVersion(v string) string {
	b := []byte(v)
	for i, c := range b {
		if c <= ' ' || c > '~' || c == '-' {
			b[i] = '.'
		}
	}
	return string(b)
}

// checkKey accepts a key that is in the store, for a user that exists.
func (s *Server) checkKey(meta ssh.ConnMetadata, key ssh.PublicKey) (*ssh.Permissions, error) {
	fp := ssh.FingerprintSHA256(key)
	if !s.cfg.Keys.Authorized(key) {
		s.log.Info("ssh key refused", "user", meta.User(), "remote", meta.RemoteAddr(), "key", fp)
		return nil, fmt.Errorf("key %s is not authorized", fp)
	}
	if _, err := s.cfg.Users.Lookup(meta.User()); err != nil {
		s.log.Info("ssh login refused", "user", meta.User(), "remote", meta.RemoteAddr(), "err", err)
		return nil, fmt.Errorf("user %q: %w", meta.User(), err)
	}
	return &ssh.Permissions{Extensions: map[string]string{"key": fp}}, nil
}

// Serve accepts connections on ln until ctx ends (then it closes ln and every
// connection) or ln fails.
func (s *Server) Serve(ctx context.Context, ln net.Listener) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stop := context.AfterFunc(ctx, func() { ln.Close() })
	defer stop()
	var wg sync.WaitGroup
	defer wg.Wait()
	for {
		c, err := ln.Accept()
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				continue
			}
			return fmt.Errorf("ssh accept on %s: %w", ln.Addr(), err)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			s.serveConn(ctx, c)
		}()
	}
}

func (s *Server) serveConn(ctx context.Context, c net.Conn) {
	defer c.Close()
	stop := context.AfterFunc(ctx, func() { c.Close() })
	defer stop()
	hostKey := s.cfg.HostKeys.Signer()
	if hostKey == nil {
		s.log.Info("ssh connection closed: no host key provisioned yet", "remote", c.RemoteAddr())
		return
	}
	_ = c.SetDeadline(time.Now().Add(handshakeTimeout))
	conn, chans, reqs, err := ssh.NewServerConn(c, s.serverConfig(hostKey))
	if err != nil {
		s.log.Info("ssh handshake failed", "remote", c.RemoteAddr(), "err", err)
		return
	}
	defer conn.Close()
	_ = c.SetDeadline(time.Time{})
	u, err := s.cfg.Users.Lookup(conn.User())
	if err != nil {
		s.log.Info("ssh user vanished after login", "user", conn.User(), "err", err)
		return
	}
	s.log.Info("ssh login", "user", u.Name, "remote", c.RemoteAddr(), "key", conn.Permissions.Extensions["key"])
	go ssh.DiscardRequests(reqs) // keepalives and the like: answered "no"
	var wg sync.WaitGroup
	defer wg.Wait()
	for nc := range chans {
		switch nc.ChannelType() {
		case "session":
			wg.Add(1)
			go func() {
				defer wg.Done()
				s.serveSession(ctx, conn, u, nc)
			}()
		case "direct-tcpip":
			wg.Add(1)
			go func() {
				defer wg.Done()
				s.serveDirectTCPIP(ctx, u, nc)
			}()
		default:
			_ = nc.Reject(ssh.UnknownChannelType, "channel type "+nc.ChannelType()+" is not supported")
		}
	}
}
