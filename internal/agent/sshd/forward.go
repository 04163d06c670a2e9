package sshd

import (
	"context"
	"io"
	"net"
	"strconv"
	"sync"
	"time"

	"banger/internal/agent/users"

	"golang.org/x/crypto/ssh"
)

// directTCPIP is the RFC 4254 7.2 payload of a "direct-tcpip" channel (ssh -L).
type directTCPIP struct {
	Host     string
	Port     uint32
	OrigHost string
	OrigPort uint32
}

// serveDirectTCPIP connects to the requested address from inside the guest and
// relays the channel to it, half-closes included (an HTTP client that closes its
// write side still gets the response).
func (s *Server) serveDirectTCPIP(ctx context.Context, u users.User, nc ssh.NewChannel) {
	var req directTCPIP
	if err := ssh.Unmarshal(nc.ExtraData(), &req); err != nil {
		_ = nc.Reject(ssh.ConnectionFailed, "malformed direct-tcpip request")
		return
	}
	addr := net.JoinHostPort(req.Host, strconv.Itoa(int(req.Port)))
	d := net.Dialer{Timeout: 10 * time.Second}
	c, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		s.log.Info("ssh forward refused", "user", u.Name, "to", addr, "err", err)
		_ = nc.Reject(ssh.ConnectionFailed, "connect "+addr+": "+err.Error())
		return
	}
	defer c.Close()
	ch, reqs, err := nc.Accept()
	if err != nil {
		return
	}
	defer ch.Close()
	go ssh.DiscardRequests(reqs)
	stop := context.AfterFunc(ctx, func() { c.Close(); ch.Close() })
	defer stop()
	var wg sync.WaitGroup
	wg.Add(2)
	go func() {
		defer wg.Done()
		_, _ = io.Copy(ch, c)
		_ = ch.CloseWrite()
	}()
	go func() {
		defer wg.Done()
		_, _ = io.Copy(c, ch)
		if tc, ok := c.(*net.TCPConn); ok {
			_ = tc.CloseWrite()
		}
	}()
	wg.Wait()
}
