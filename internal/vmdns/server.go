// Package vmdns is bangerd's DNS server for VM names.
//
// It holds one A record per live VM, <name>.<domain> (domain "vm" by default),
// answers for that zone authoritatively, and forwards every other query to the
// host's real resolvers, so that the host can route the domain to it (through
// systemd-resolved) and guests can use it as their only resolver.
//
// A Server is built with New, serves from Start until Close, and takes record
// changes (Set, Remove, Replace) at any time, before Start included.
package vmdns

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/miekg/dns"
)

// DefaultDomain is the zone VM names live in when Options.Domain is empty.
const DefaultDomain = "vm"

// DefaultTimeout bounds one upstream exchange when Options.Timeout is zero.
const DefaultTimeout = 2 * time.Second

// bindAttempts is how often Start tries a fresh port pair when asked for port 0
// and the UDP port it got is taken for TCP.
const bindAttempts = 8

// ErrClosed is returned by Start on a server that was closed: a Server is not reusable.
var ErrClosed = errors.New("vmdns: server closed")

// Options configure New. The zero value serves "vm" and forwards nothing.
type Options struct {
	// Domain is the zone, e.g. "vm" or "dev.local": one or more DNS labels,
	// case-insensitive, with or without the trailing dot. "" means DefaultDomain.
	Domain string
	// Upstreams are the resolvers for names outside the zone ("ip", "ip:port",
	// "[ipv6]:port"), tried in order; see HostUpstreams. With none, such queries
	// are answered REFUSED. An upstream that is the server's own address is
	// dropped at Start, so that a query never loops back.
	Upstreams []string
	// Timeout bounds one exchange with one upstream (a UDP query and its TCP
	// retry together). 0 means DefaultTimeout.
	Timeout time.Duration
	// MaxInFlight bounds forwarded queries in flight at once over all clients,
	// and TCP connections open at once; past it a query is answered SERVFAIL at
	// once (a connection is closed) instead of costing another upstream socket.
	// 0 means DefaultMaxInFlight.
	MaxInFlight int
	// MaxInFlightPerSource is the same bound per client address, so that one
	// guest cannot take the whole budget from the others. 0 means
	// DefaultMaxInFlightPerSource (or MaxInFlight, when that is smaller).
	MaxInFlightPerSource int
	// Logger receives the server's few log lines; nil discards them.
	Logger *slog.Logger
}

// Server is the VM DNS server. Its methods are safe for concurrent use.
type Server struct {
	domain    string           // immutable: lower case, no trailing dot, e.g. "vm"
	upstreams []netip.AddrPort // immutable: as configured, before self-filtering
	timeout   time.Duration    // immutable
	maxFlight int              // immutable; > 0
	maxPerSrc int              // immutable; > 0, <= maxFlight
	log       *slog.Logger     // immutable; never nil
	records   *records         // never nil; has its own lock

	mu      sync.Mutex // guards all following fields; held across Start and the first half of Close
	running bool
	closed  bool
	addr    netip.AddrPort     // bound address; valid while running
	udp     *dns.Server        // non-nil while running
	tcp     *dns.Server        // non-nil while running
	cancel  context.CancelFunc // aborts in-flight forwards; non-nil while running
	done    chan struct{}      // closed when both serve loops have returned
}

// New validates opts and returns a server that is not yet listening.
func New(opts Options) (*Server, error) {
	domain, err := normalizeDomain(opts.Domain)
	if err != nil {
		return nil, err
	}
	var ups []netip.AddrPort
	for _, u := range opts.Upstreams {
		ap, err := ParseUpstream(u)
		if err != nil {
			return nil, err
		}
		ups = append(ups, ap)
	}
	timeout := opts.Timeout
	if timeout <= 0 {
		timeout = DefaultTimeout
	}
	maxFlight, maxPerSrc := opts.MaxInFlight, opts.MaxInFlightPerSource
	if maxFlight < 0 || maxPerSrc < 0 {
		return nil, fmt.Errorf("vm dns: in-flight limits must not be negative (got %d overall, %d per source): use 0 for the defaults", maxFlight, maxPerSrc)
	}
	if maxFlight == 0 {
		maxFlight = DefaultMaxInFlight
	}
	if maxPerSrc == 0 {
		maxPerSrc = min(DefaultMaxInFlightPerSource, maxFlight)
	}
	if maxPerSrc > maxFlight {
		return nil, fmt.Errorf("vm dns: the per-source in-flight limit %d is above the overall limit %d: lower it", maxPerSrc, maxFlight)
	}
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Server{
		domain:    domain,
		upstreams: ups,
		timeout:   timeout,
		maxFlight: maxFlight,
		maxPerSrc: maxPerSrc,
		log:       log,
		records:   newRecords(time.Now()),
	}, nil
}

// normalizeDomain returns d in lower case without the trailing dot, or an error
// saying how to fix it.
func normalizeDomain(d string) (string, error) {
	if d == "" {
		return DefaultDomain, nil
	}
	norm := strings.ToLower(strings.TrimSuffix(d, "."))
	// Leave room for a 63-byte VM label within the 253-byte name limit.
	ok := norm != "" && len(norm) <= 253-64
	for _, l := range strings.Split(norm, ".") {
		ok = ok && isLabel(l)
	}
	if !ok {
		return "", fmt.Errorf("vm dns domain %q is not a valid DNS name: use one or more labels of letters, digits and '-' such as %q or \"dev.local\"", d, DefaultDomain)
	}
	return norm, nil
}

// Domain returns the zone without the trailing dot, in lower case, e.g. "vm".
func (s *Server) Domain() string { return s.domain }

// Set publishes name.<domain> → ip, replacing any address name had. name must
// be a DNS label (see ValidateName) and is folded to lower case; ip must be IPv4.
func (s *Server) Set(name string, ip netip.Addr) error { return s.records.set(name, ip) }

// Remove withdraws name.<domain>; removing a name that is not there does nothing.
func (s *Server) Remove(name string) { s.records.remove(name) }

// Replace makes records the whole set, for the daemon rebuilding it from the VMs
// that are alive when it opens. Every record is validated first: on error,
// nothing changes. Queries never see a half-replaced set.
func (s *Server) Replace(records map[string]netip.Addr) error { return s.records.replace(records) }

// Records returns a copy of the current set, keyed by lower-case name.
func (s *Server) Records() map[string]netip.Addr { return s.records.all() }

// Lookup returns the address of VM name (a label, not a full name; any case).
func (s *Server) Lookup(name string) (netip.Addr, bool) { return s.records.lookup(name) }

// Start binds listen ("ip:port"; port 0 picks a free one) over both UDP and TCP
// on the same port and serves until Close. ctx bounds only the start; the
// server's lifetime is ended by Close. Upstreams equal to the bound address
// (or reaching it through a wildcard listener) are dropped with a warning.
// Start fails if the server is already running or was closed.
func (s *Server) Start(ctx context.Context, listen string) error {
	ap, err := netip.ParseAddrPort(listen)
	if err != nil {
		return fmt.Errorf("vm dns listen address %q is not ip:port: write it like \"172.30.77.1:5353\" (port 0 picks a free port)", listen)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	switch {
	case s.closed:
		return ErrClosed
	case s.running:
		return fmt.Errorf("vm dns: already serving on %s: Close it first", s.addr)
	}

	pc, ln, bound, err := bind(ctx, ap)
	if err != nil {
		return err
	}
	ups := s.usableUpstreams(bound)
	nsAddr := netip.Addr{}
	if a := bound.Addr(); a.Is4() && !a.IsUnspecified() {
		nsAddr = a
	}
	fwdCtx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	h := &handler{
		zone: newZone(s.domain+".", nsAddr, s.records, len(ups) > 0),
		fwd:  newForwarder(ups, s.timeout, s.log),
		lim:  newLimiter(s.maxFlight, s.maxPerSrc),
		ctx:  fwdCtx,
		log:  s.log,
	}
	// A guest controls how many TCP connections it opens and how slowly it
	// speaks on them: both are bounded (see limitListener and the timeouts).
	ln = &limitListener{Listener: ln, conns: newLimiter(s.maxFlight, s.maxPerSrc)}

	started := make(chan struct{}, 2)
	failed := make(chan error, 2)
	notify := func() { started <- struct{}{} }
	// miekg/dns runs every UDP packet in a goroutine of its own; throttle bounds
	// how many exist at once, so that a flood waits in the socket's receive
	// buffer (and overflows it) instead of piling up goroutines in bangerd.
	th := newThrottle(s.maxFlight + udpSpare)
	udpSrv := &dns.Server{
		PacketConn: pc, Handler: th.handler(h), NotifyStartedFunc: notify,
		DecorateReader: th.reader, MsgInvalidFunc: th.invalid, MsgAcceptFunc: acceptAll,
	}
	tcpSrv := &dns.Server{
		Listener: ln, Handler: h, NotifyStartedFunc: notify,
		ReadTimeout: tcpReadTimeout, WriteTimeout: tcpWriteTimeout,
		IdleTimeout: func() time.Duration { return tcpIdleTimeout }, MaxTCPQueries: tcpMaxQueries,
	}
	done := make(chan struct{})
	var wg sync.WaitGroup
	for _, srv := range []*dns.Server{udpSrv, tcpSrv} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := srv.ActivateAndServe(); err != nil {
				s.log.Error("vm dns: serving stopped", "addr", bound, "err", err)
				failed <- err
			}
		}()
	}
	go func() { wg.Wait(); close(done) }()

	for n := 0; n < 2; {
		select {
		case <-started:
			n++
		case err := <-failed:
			// Closing the sockets ends whichever loop is running, started or not.
			cancel()
			pc.Close()
			ln.Close()
			<-done
			return fmt.Errorf("vm dns on %s: %w", bound, err)
		}
	}
	s.running, s.addr, s.udp, s.tcp, s.cancel, s.done = true, bound, udpSrv, tcpSrv, cancel, done
	s.log.Info("vm dns: serving", "addr", bound, "domain", s.domain, "upstreams", ups)
	return nil
}

// usableUpstreams drops the upstreams that are the server itself.
func (s *Server) usableUpstreams(self netip.AddrPort) []netip.AddrPort {
	var local map[netip.Addr]bool
	if self.Addr().IsUnspecified() {
		local = localAddrs()
	}
	var out []netip.AddrPort
	for _, u := range s.upstreams {
		if isSelf(u, self, local) {
			s.log.Warn("vm dns: ignoring upstream that is this server, to avoid a forwarding loop", "upstream", u, "addr", self)
			continue
		}
		out = append(out, u)
	}
	return out
}

// bind listens on ap over UDP and TCP with the same port. For port 0 it binds UDP
// first, then TCP on the port UDP got, and tries again when that TCP port is taken.
func bind(ctx context.Context, ap netip.AddrPort) (net.PacketConn, net.Listener, netip.AddrPort, error) {
	// Pin the family: "udp" on 0.0.0.0 would be a dual-stack socket.
	udpNet, tcpNet := "udp4", "tcp4"
	if ap.Addr().Is6() {
		udpNet, tcpNet = "udp6", "tcp6"
	}
	var lc net.ListenConfig
	for attempt := 1; ; attempt++ {
		pc, err := lc.ListenPacket(ctx, udpNet, ap.String())
		if err != nil {
			return nil, nil, netip.AddrPort{}, fmt.Errorf("vm dns: listen on %s/udp: %w (is another DNS server using the port? pick another dns.listen port)", ap, err)
		}
		bound := netip.AddrPortFrom(ap.Addr(), pc.LocalAddr().(*net.UDPAddr).AddrPort().Port())
		ln, err := lc.Listen(ctx, tcpNet, bound.String())
		if err == nil {
			return pc, ln, bound, nil
		}
		pc.Close()
		if ap.Port() != 0 || !errors.Is(err, syscall.EADDRINUSE) || attempt == bindAttempts {
			return nil, nil, netip.AddrPort{}, fmt.Errorf("vm dns: listen on %s/tcp: %w (is another DNS server using the port? pick another dns.listen port)", bound, err)
		}
	}
}

// Addr returns the address the server is bound to, with the port Start picked;
// the zero AddrPort when it is not running.
func (s *Server) Addr() netip.AddrPort {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.addr
}

// Close stops both listeners, aborts forwards in flight, and waits until every
// serving goroutine has returned or ctx ends (then it returns ctx's error, and
// the goroutines finish on their own shortly). Closing a server that never
// started, or closing twice, returns nil. A closed server cannot be restarted.
func (s *Server) Close(ctx context.Context) error {
	s.mu.Lock()
	if !s.running {
		s.closed = true
		s.mu.Unlock()
		return nil
	}
	udpSrv, tcpSrv, cancel, done := s.udp, s.tcp, s.cancel, s.done
	s.running, s.closed, s.addr, s.udp, s.tcp, s.cancel = false, true, netip.AddrPort{}, nil, nil, nil
	s.mu.Unlock()

	cancel()
	err := errors.Join(udpSrv.ShutdownContext(ctx), tcpSrv.ShutdownContext(ctx))
	select {
	case <-done:
	case <-ctx.Done():
		return fmt.Errorf("close vm dns: %w", ctx.Err())
	}
	if err != nil {
		return fmt.Errorf("close vm dns: %w", err)
	}
	return nil
}

// handler routes each query to the zone or to the upstreams. Immutable.
type handler struct {
	zone *zone           // never nil
	fwd  *forwarder      // never nil
	lim  *limiter        // never nil: bounds forwards in flight
	ctx  context.Context // cancelled by Close: ends forwards in flight
	log  *slog.Logger    // never nil
}

func (h *handler) ServeDNS(w dns.ResponseWriter, req *dns.Msg) {
	_, overTCP := w.LocalAddr().(*net.TCPAddr)
	if req.Response {
		return // never answer an answer: that could loop between two servers
	}
	var resp *dns.Msg
	if req.Opcode != dns.OpcodeQuery || len(req.Question) != 1 {
		resp = new(dns.Msg).SetRcode(req, dns.RcodeNotImplemented)
	} else if name := dns.CanonicalName(req.Question[0].Name); h.zone.contains(name) {
		resp = h.zone.answer(req, name)
	} else if src := sourceOf(w.RemoteAddr()); !h.fwd.enabled() || h.lim.take(src) {
		resp = h.fwd.forward(h.ctx, req, overTCP)
		if h.fwd.enabled() {
			h.lim.give(src)
		}
	} else {
		// Over the budget: answer at once rather than queue, so a flood costs
		// neither sockets nor waiting goroutines. SERVFAIL tells a stub resolver
		// to retry later or ask another server.
		resp = new(dns.Msg).SetRcode(req, dns.RcodeServerFailure)
		resp.RecursionAvailable = true
		h.fwd.overBudget(src, h.lim.inFlight())
	}
	resp.Id = req.Id
	if !overTCP {
		resp.Truncate(udpSize(req))
	}
	if err := w.WriteMsg(resp); err != nil {
		h.log.Debug("vm dns: writing reply failed", "client", w.RemoteAddr(), "err", err)
	}
}

// udpSize is the largest UDP reply the client said it takes.
func udpSize(req *dns.Msg) int {
	if opt := req.IsEdns0(); opt != nil && opt.UDPSize() > dns.MinMsgSize {
		return int(opt.UDPSize())
	}
	return dns.MinMsgSize
}
