package portfwd

import (
	"context"
	"errors"
	"io"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"
)

// forward is one published port: its listener, its accept loop and the connections
// it forwards.
type forward struct {
	f     *Forwarder     // for the logger and limits; never nil
	vmID  string         // immutable
	spec  Spec           // immutable; HostPort is the bound port
	guest netip.AddrPort // immutable
	ln    net.Listener   // closed by close

	slots  chan struct{}      // a token per connection being forwarded (bounded concurrency)
	ctx    context.Context    // cancelled by close: ends the accept loop and pending dials
	cancel context.CancelFunc //
	wg     sync.WaitGroup     // the accept loop and every connection handler
	active atomic.Int32       // connections being forwarded now

	mu      sync.Mutex            // guards the fields below
	conns   map[net.Conn]struct{} // both sides of every connection, closed by close
	closing bool                  // set by close: no connection may be added after it
}

func newForward(f *Forwarder, vmID string, spec Spec, guest netip.AddrPort, ln net.Listener) *forward {
	ctx, cancel := context.WithCancel(context.Background())
	fw := &forward{
		f: f, vmID: vmID, spec: spec, guest: guest, ln: ln,
		slots: make(chan struct{}, f.maxConns),
		ctx:   ctx, cancel: cancel,
		conns: map[net.Conn]struct{}{},
	}
	fw.wg.Add(1)
	go fw.serve()
	return fw
}

// serve accepts connections while a slot is free, so that past the limit clients wait
// in the kernel's backlog instead of being accepted and dropped.
func (fw *forward) serve() {
	defer fw.wg.Done()
	backoff := time.Duration(0)
	for {
		select {
		case fw.slots <- struct{}{}:
		case <-fw.ctx.Done():
			return
		}
		c, err := fw.ln.Accept()
		if err != nil {
			<-fw.slots
			if fw.ctx.Err() != nil || errors.Is(err, net.ErrClosed) {
				return
			}
			// Out of file descriptors or similar: wait and retry rather than spin or give up.
			backoff = min(max(2*backoff, 5*time.Millisecond), time.Second)
			fw.f.log.Warn("accept failed; retrying", "vm", fw.vmID, "host", fw.spec.HostAddr(), "err", err, "retry_in", backoff)
			select {
			case <-time.After(backoff):
			case <-fw.ctx.Done():
				return
			}
			continue
		}
		backoff = 0
		if !fw.track(c) {
			c.Close()
			<-fw.slots
			return
		}
		fw.wg.Add(1) // the accept loop's own count keeps the group above zero here
		go fw.handle(c.(*net.TCPConn))
	}
}

// handle forwards one client connection to the guest.
func (fw *forward) handle(client *net.TCPConn) {
	defer fw.wg.Done()
	defer func() { <-fw.slots }()
	fw.active.Add(1)
	defer fw.active.Add(-1)
	defer fw.untrackClose(client)

	d := net.Dialer{Timeout: fw.f.dialTimeout}
	g, err := d.DialContext(fw.ctx, "tcp", fw.guest.String())
	if err != nil {
		fw.f.log.Debug("guest unreachable", "vm", fw.vmID, "guest", fw.guest, "client", client.RemoteAddr(), "err", err)
		// A reset rather than a clean close: the client sees the guest refused, not an
		// empty answer from a service that does not exist.
		_ = client.SetLinger(0)
		return
	}
	guest := g.(*net.TCPConn)
	if !fw.track(guest) {
		guest.Close()
		return
	}
	defer fw.untrackClose(guest)
	up, down, err := pipe(client, guest)
	fw.f.log.Debug("connection done", "vm", fw.vmID, "guest", fw.guest, "client", client.RemoteAddr(), "bytes_to_guest", up, "bytes_from_guest", down, "err", err)
}

// pipe copies a to b and b to a until both directions end. The end of one direction
// is passed on as a half-close (the other keeps flowing, as TCP allows); an error in
// either aborts both.
func pipe(a, b *net.TCPConn) (aToB, bToA int64, err error) {
	type result struct {
		n   int64
		err error
	}
	half := func(dst, src *net.TCPConn, out chan<- result) {
		n, err := io.Copy(dst, src) // splice(2) between the sockets on Linux
		if err == nil {
			err = dst.CloseWrite()
		}
		if err != nil {
			dst.Close()
			src.Close()
		}
		out <- result{n, err}
	}
	ab, ba := make(chan result, 1), make(chan result, 1)
	go half(b, a, ab)
	go half(a, b, ba)
	r1, r2 := <-ab, <-ba
	return r1.n, r2.n, errors.Join(r1.err, r2.err)
}

// track records c so close can cut it; false once closing has begun.
func (fw *forward) track(c net.Conn) bool {
	fw.mu.Lock()
	defer fw.mu.Unlock()
	if fw.closing {
		return false
	}
	fw.conns[c] = struct{}{}
	return true
}

func (fw *forward) untrackClose(c net.Conn) {
	fw.mu.Lock()
	delete(fw.conns, c)
	fw.mu.Unlock()
	c.Close()
}

// close stops accepting, cuts every connection and waits for all handlers to return.
func (fw *forward) close() {
	fw.mu.Lock()
	fw.closing = true
	conns := make([]net.Conn, 0, len(fw.conns))
	for c := range fw.conns {
		conns = append(conns, c)
	}
	fw.mu.Unlock()
	fw.cancel()
	fw.ln.Close()
	for _, c := range conns {
		c.Close()
	}
	fw.wg.Wait()
}

// activeCount is the number of connections being forwarded now.
func (fw *forward) activeCount() int { return int(fw.active.Load()) }
