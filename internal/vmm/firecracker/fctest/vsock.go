package fctest

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"strings"
	"sync"
	"time"
)

// hybridHostPortBase is where Firecracker numbers the host side of
// host-initiated connections (the n of "OK <n>"): local ports from 2^30 up.
const hybridHostPortBase = 1 << 30

// connectTimeout bounds how long a host connection may take to send its
// CONNECT line; a client that never does is dropped.
const connectTimeout = 10 * time.Second

// vsockConns tracks the hybrid vsock connections a Server serves, so Close
// can end them. Its own mutex: connections come and go outside the request
// lock.
type vsockConns struct {
	mu    sync.Mutex // guards all following fields
	conns map[net.Conn]bool
	next  uint32 // host port counter
}

func (v *vsockConns) add(c net.Conn) uint32 {
	v.mu.Lock()
	defer v.mu.Unlock()
	if v.conns == nil {
		v.conns = map[net.Conn]bool{}
	}
	v.conns[c] = true
	v.next++
	return hybridHostPortBase + v.next
}

func (v *vsockConns) remove(c net.Conn) {
	v.mu.Lock()
	defer v.mu.Unlock()
	delete(v.conns, c)
}

func (v *vsockConns) closeAll() {
	v.mu.Lock()
	defer v.mu.Unlock()
	for c := range v.conns {
		_ = c.Close()
	}
	v.conns = nil
}

// serveVsock accepts host connections on a bound vsock socket until it is
// closed, and speaks Firecracker's hybrid vsock protocol on each.
func (s *Server) serveVsock(ln net.Listener) {
	for {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		go s.hybrid(c)
	}
}

// hybrid is the host side of one hybrid vsock connection, as Firecracker
// runs it: the host writes "CONNECT <port>\n"; if something in the guest
// listens on that port the answer is "OK <host port>\n" and from then on the
// connection is a raw stream to it; if nothing listens the connection is
// closed without an answer (the client sees EOF). A malformed first line
// closes the connection too.
func (s *Server) hybrid(c net.Conn) {
	hostPort := s.vconns.add(c)
	defer s.vconns.remove(c)
	defer c.Close()
	_ = c.SetReadDeadline(time.Now().Add(connectTimeout))
	br := bufio.NewReaderSize(c, 64)
	port, err := readConnect(br)
	if err != nil {
		s.opts.Logger.Debug("fctest vsock: bad CONNECT", "err", err)
		return
	}
	_ = c.SetReadDeadline(time.Time{})
	if s.opts.VsockDial == nil {
		return // nothing listens in the guest
	}
	g, err := s.opts.VsockDial(port)
	if err != nil {
		s.opts.Logger.Debug("fctest vsock: nothing listens", "port", port, "err", err)
		return
	}
	defer g.Close()
	if _, err := fmt.Fprintf(c, "OK %d\n", hostPort); err != nil {
		return
	}
	splice(c, br, g)
}

// readConnect reads "CONNECT <port>\n" byte by byte (a reader of at most 64
// bytes buffered: what follows the line stays for the guest).
func readConnect(br *bufio.Reader) (uint32, error) {
	var sb strings.Builder
	for {
		b, err := br.ReadByte()
		if err != nil {
			return 0, err
		}
		if b == '\n' {
			break
		}
		if sb.Len() > 32 {
			return 0, errors.New("the CONNECT line is too long")
		}
		sb.WriteByte(b)
	}
	arg, ok := strings.CutPrefix(sb.String(), "CONNECT ")
	if !ok {
		return 0, fmt.Errorf("want \"CONNECT <port>\", got %q", sb.String())
	}
	port, err := strconv.ParseUint(arg, 10, 32)
	if err != nil {
		return 0, fmt.Errorf("CONNECT port %q: %w", arg, err)
	}
	return uint32(port), nil
}

// splice copies host ⇄ guest. The host's end of writing is passed on as a
// half-close, so the guest sees EOF and can still answer; the guest's end
// ends the whole connection, as a guest socket's close resets the host's.
func splice(host net.Conn, hostR io.Reader, guest net.Conn) {
	done := make(chan struct{})
	go func() {
		defer close(done)
		_, _ = io.Copy(guest, hostR)
		if cw, ok := guest.(interface{ CloseWrite() error }); ok {
			_ = cw.CloseWrite()
		}
	}()
	_, _ = io.Copy(host, guest)
	_ = host.Close()
	_ = guest.Close()
	<-done
}
