package vmdns

import (
	"context"
	"fmt"
	"log/slog"
	"net/netip"
	"strings"
	"sync/atomic"
	"time"

	"github.com/miekg/dns"
)

// warnEvery limits the "all upstreams failed" warning: a guest retrying while the
// host is offline would otherwise write one line per query.
const warnEvery = time.Minute

// forwarder relays queries outside the zone to the host's resolvers, so guests
// can use the VM DNS server as their only resolver. Immutable after
// construction, except lastWarn.
type forwarder struct {
	upstreams []netip.AddrPort // tried in order; empty: nothing is forwarded
	timeout   time.Duration    // for one upstream, UDP and the TCP retry together
	udp, tcp  *dns.Client      // never nil
	log       *slog.Logger     // never nil
	lastWarn  atomic.Int64     // UnixNano of the last "all upstreams failed" warning
	lastOver  atomic.Int64     // UnixNano of the last "over the in-flight budget" warning
}

// enabled reports whether anything is forwarded; when not, queries are refused
// at once and need no budget.
func (f *forwarder) enabled() bool { return len(f.upstreams) > 0 }

// overBudget logs, at most once a minute, that queries are being refused for
// lack of budget: a guest flooding the server, or a silent upstream.
func (f *forwarder) overBudget(src netip.Addr, inFlight int) {
	now := time.Now().UnixNano()
	last := f.lastOver.Load()
	if now-last < int64(warnEvery) || !f.lastOver.CompareAndSwap(last, now) {
		return
	}
	f.log.Warn("vm dns: too many forwarded queries in flight; answering SERVFAIL (a guest flooding the server, or slow upstreams; raise dns.max_inflight or dns.max_inflight_per_source if this is expected; repeats are not logged for a minute)",
		"client", src, "in_flight", inFlight)
}

func newForwarder(upstreams []netip.AddrPort, timeout time.Duration, log *slog.Logger) *forwarder {
	return &forwarder{
		upstreams: upstreams,
		timeout:   timeout,
		// UDPSize only sizes the read buffer when the query carries no EDNS OPT
		// (with one, the client's advertised size is used); it never changes the
		// query. Such replies should fit in 512 bytes; 4096 tolerates sloppy
		// upstreams without a 64 KB buffer per query.
		udp: &dns.Client{Net: "udp", Timeout: timeout, UDPSize: 4096},
		tcp: &dns.Client{Net: "tcp", Timeout: timeout},
		log: log,
	}
}

// forward relays req unchanged (ID, question with its case, RD, CD, AD, EDNS
// options) and returns the upstream's reply. Upstreams are tried in order; one
// that times out, fails, or answers SERVFAIL or REFUSED (a resolver that cannot or
// will not help: the next one may) is skipped.
//
// A query that came over TCP is forwarded over TCP; one that came over UDP is
// forwarded over UDP and retried over TCP with the same upstream when the reply is
// truncated, so the server holds the full answer and truncates it only to what its
// own client can take.
//
// When every upstream fails the reply is SERVFAIL. When no upstream is configured
// the reply is REFUSED with RA clear: the server is then authoritative only, and
// REFUSED is what an authoritative-only server answers for names it does not
// serve, telling the client to ask another resolver rather than retry this one.
func (f *forwarder) forward(ctx context.Context, req *dns.Msg, overTCP bool) *dns.Msg {
	if len(f.upstreams) == 0 {
		return new(dns.Msg).SetRcode(req, dns.RcodeRefused)
	}
	var lastErr error
	for _, up := range f.upstreams {
		r, err := f.ask(ctx, req, up, overTCP)
		if err == nil && (r.Rcode == dns.RcodeServerFailure || r.Rcode == dns.RcodeRefused) {
			err = fmt.Errorf("upstream %s answered %s", up, dns.RcodeToString[r.Rcode])
		}
		if err == nil {
			return r
		}
		lastErr = err
		f.log.Debug("vm dns: upstream failed", "upstream", up, "name", req.Question[0].Name, "err", err)
		if ctx.Err() != nil {
			break // the server is closing
		}
	}
	f.warnRarely(req.Question[0].Name, lastErr)
	m := new(dns.Msg).SetRcode(req, dns.RcodeServerFailure)
	m.RecursionAvailable = true
	return m
}

// ask runs one exchange with one upstream, with the UDP→TCP retry.
func (f *forwarder) ask(ctx context.Context, req *dns.Msg, up netip.AddrPort, overTCP bool) (*dns.Msg, error) {
	ctx, cancel := context.WithTimeout(ctx, f.timeout)
	defer cancel()
	if overTCP {
		return exchange(ctx, f.tcp, req, up)
	}
	r, err := exchange(ctx, f.udp, req, up)
	if err != nil || !r.Truncated {
		return r, err
	}
	full, err := exchange(ctx, f.tcp, req, up)
	if err != nil {
		// The truncated reply is still a valid answer: its TC bit sends the client
		// to us over TCP, which may succeed where this retry did not.
		f.log.Debug("vm dns: TCP retry after truncated UDP reply failed", "upstream", up, "err", err)
		return r, nil
	}
	return full, nil
}

// exchange sends req to up and reads the reply. It dials a fresh socket per query
// (a random source port for UDP) and closes it when ctx ends, so a Close of the
// server does not wait out a silent upstream.
func exchange(ctx context.Context, c *dns.Client, req *dns.Msg, up netip.AddrPort) (*dns.Msg, error) {
	conn, err := c.DialContext(ctx, up.String())
	if err != nil {
		return nil, fmt.Errorf("upstream %s over %s: %w", up, c.Net, err)
	}
	defer conn.Close()
	stop := context.AfterFunc(ctx, func() { conn.Close() })
	defer stop()
	r, _, err := c.ExchangeWithConnContext(ctx, req, conn)
	if err != nil {
		if ctx.Err() != nil {
			err = fmt.Errorf("%w (%w)", ctx.Err(), err)
		}
		return nil, fmt.Errorf("upstream %s over %s: %w", up, c.Net, err)
	}
	if !sameQuestion(req, r) {
		return nil, fmt.Errorf("upstream %s over %s: reply does not match the question", up, c.Net)
	}
	return r, nil
}

// sameQuestion guards against a reply to some other query that happens to share
// the ID (a stray or spoofed packet).
func sameQuestion(req, r *dns.Msg) bool {
	if len(r.Question) != 1 {
		return false
	}
	a, b := req.Question[0], r.Question[0]
	return a.Qtype == b.Qtype && a.Qclass == b.Qclass && strings.EqualFold(a.Name, b.Name)
}

func (f *forwarder) warnRarely(name string, err error) {
	now := time.Now().UnixNano()
	last := f.lastWarn.Load()
	if now-last < int64(warnEvery) || !f.lastWarn.CompareAndSwap(last, now) {
		return
	}
	f.log.Warn("vm dns: every upstream resolver failed; answering SERVFAIL (check the host's network and resolv.conf; repeats are logged at debug level for a minute)",
		"name", name, "upstreams", f.upstreams, "last_err", err)
}
