package vmdns

import (
	"errors"
	"net"
	"net/netip"
	"sync"
	"time"

	"github.com/miekg/dns"
)

// Default bounds on what guests can make the server hold. A guest is trusted by
// nothing on the host: every query it sends to a name outside the zone costs
// bangerd an upstream socket and a goroutine for up to Timeout, and every TCP
// connection it opens costs a descriptor, so both are capped overall and per
// guest address.
const (
	// DefaultMaxInFlight bounds forwarded queries in flight over all clients.
	DefaultMaxInFlight = 256
	// DefaultMaxInFlightPerSource bounds them per client address.
	DefaultMaxInFlightPerSource = 32
)

// TCP connection bounds and timeouts. A guest speaks TCP to the server only for
// replies that did not fit in UDP, so a handful per guest is plenty.
const (
	// tcpReadTimeout bounds the wait for the first query on a new connection.
	tcpReadTimeout = 2 * time.Second
	// tcpWriteTimeout bounds writing one reply.
	tcpWriteTimeout = 2 * time.Second
	// tcpIdleTimeout bounds the wait for each further query on a connection.
	tcpIdleTimeout = 5 * time.Second
	// tcpMaxQueries is how many queries one connection may carry.
	tcpMaxQueries = 32
	// udpSpare is how many UDP packets may be handled at once beyond
	// MaxInFlight: room to answer zone names and refusals while every forward
	// slot waits on a silent upstream.
	udpSpare = 64
)

// limiter counts forwarded queries in flight, overall and per source address.
// take refuses at once past either bound, so a refused query costs neither a
// socket nor a goroutine that waits.
type limiter struct {
	max, perSource int // immutable; > 0

	mu    sync.Mutex // guards all following fields
	total int
	bySrc map[netip.Addr]int // only sources with something in flight
}

func newLimiter(max, perSource int) *limiter {
	return &limiter{max: max, perSource: perSource, bySrc: map[netip.Addr]int{}}
}

// take reserves a slot for src and reports whether it got one; each true must be
// followed by exactly one give(src).
func (l *limiter) take(src netip.Addr) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.total >= l.max || l.bySrc[src] >= l.perSource {
		return false
	}
	l.total++
	l.bySrc[src]++
	return true
}

// give releases a slot taken for src.
func (l *limiter) give(src netip.Addr) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.total--
	if n := l.bySrc[src] - 1; n > 0 {
		l.bySrc[src] = n
	} else {
		delete(l.bySrc, src)
	}
}

// inFlight is the overall count (for tests and logs).
func (l *limiter) inFlight() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.total
}

// sourceOf is the client's address without port or zone: the unit of fairness.
func sourceOf(a net.Addr) netip.Addr {
	switch v := a.(type) {
	case *net.UDPAddr:
		return v.AddrPort().Addr().Unmap().WithZone("")
	case *net.TCPAddr:
		return v.AddrPort().Addr().Unmap().WithZone("")
	}
	return netip.Addr{}
}

// limitListener caps the TCP connections the server holds open, overall and per
// source address. A connection past either bound is closed as soon as it is
// accepted, so the kernel's backlog, not bangerd, absorbs a flood, and one guest
// cannot hold every slot.
type limitListener struct {
	net.Listener
	conns *limiter // counts open connections rather than queries
}

func (l *limitListener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		src := sourceOf(c.RemoteAddr())
		if !l.conns.take(src) {
			c.Close()
			continue
		}
		return &limitConn{Conn: c, release: sync.OnceFunc(func() { l.conns.give(src) })}, nil
	}
}

// limitConn gives its slot back when closed (once, however often Close is called).
type limitConn struct {
	net.Conn
	release func()
}

func (c *limitConn) Close() error {
	err := c.Conn.Close()
	c.release()
	if errors.Is(err, net.ErrClosed) {
		return nil
	}
	return err
}

// throttle bounds the UDP packets being handled at once. The serve loop takes a
// slot before it reads a packet; the slot is given back when the handler returns
// or the packet is dropped as invalid, the only two ends of a packet once read
// (acceptAll sends every well-formed one to the handler).
type throttle struct {
	slots chan struct{} // a token per packet being handled
}

func newThrottle(n int) *throttle { return &throttle{slots: make(chan struct{}, n)} }

func (th *throttle) release() { <-th.slots }

// reader decorates the server's packet reader (dns.Server.DecorateReader).
func (th *throttle) reader(r dns.Reader) dns.Reader { return &throttledReader{Reader: r, th: th} }

// invalid is the server's MsgInvalidFunc: a packet that never reaches the handler.
func (th *throttle) invalid([]byte, error) { th.release() }

// handler wraps h to give the slot back when it returns.
func (th *throttle) handler(h dns.Handler) dns.Handler {
	return dns.HandlerFunc(func(w dns.ResponseWriter, req *dns.Msg) {
		defer th.release()
		h.ServeDNS(w, req)
	})
}

type throttledReader struct {
	dns.Reader
	th *throttle
}

func (r *throttledReader) ReadUDP(conn *net.UDPConn, timeout time.Duration) ([]byte, *dns.SessionUDP, error) {
	r.th.slots <- struct{}{}
	m, s, err := r.Reader.ReadUDP(conn, timeout)
	if err != nil {
		r.th.release() // nothing was read: the serve loop goes round again or ends
	}
	return m, s, err
}

// acceptAll hands every message that parses to the handler, which answers what it
// does not serve (NOTIMP) and ignores responses, so that the throttle sees the
// end of every packet. miekg's default would drop or answer some itself.
func acceptAll(dns.Header) dns.MsgAcceptAction { return dns.MsgAccept }
