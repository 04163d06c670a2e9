package vmdns

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/miekg/dns"
)

// testLogger writes to the test's output, so a failing test shows what the server said.
func testLogger(t testing.TB) *slog.Logger {
	t.Helper()
	return slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelDebug}))
}

// startServer starts a server on 127.0.0.1:0 and closes it when the test ends.
func startServer(t testing.TB, opts Options) *Server {
	t.Helper()
	if opts.Logger == nil {
		opts.Logger = testLogger(t)
	}
	s, err := New(opts)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := s.Start(ctx, "127.0.0.1:0"); err != nil {
		t.Fatalf("Start: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := s.Close(ctx); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return s
}

// roundTrip sends one query with a real client over network ("udp" or "tcp").
func roundTrip(t testing.TB, network string, addr netip.AddrPort, m *dns.Msg) *dns.Msg {
	t.Helper()
	c := &dns.Client{Net: network, Timeout: 10 * time.Second}
	r, _, err := c.Exchange(m, addr.String())
	if err != nil {
		t.Fatalf("%s query %s %s to %s: %v", network, m.Question[0].Name, dns.TypeToString[m.Question[0].Qtype], addr, err)
	}
	return r
}

// query asks name/qtype with RD set, as a stub resolver would.
func query(t testing.TB, network string, addr netip.AddrPort, name string, qtype uint16) *dns.Msg {
	t.Helper()
	m := new(dns.Msg)
	m.SetQuestion(name, qtype)
	return roundTrip(t, network, addr, m)
}

// summary renders the records of a section as "TYPE data" strings, for comparison.
func summary(rrs []dns.RR) []string {
	var out []string
	for _, rr := range rrs {
		switch v := rr.(type) {
		case *dns.A:
			out = append(out, "A "+v.A.String())
		case *dns.NS:
			out = append(out, "NS "+v.Ns)
		case *dns.SOA:
			out = append(out, fmt.Sprintf("SOA %s %s %s", v.Hdr.Name, v.Ns, v.Mbox))
		case *dns.TXT:
			out = append(out, "TXT "+strings.Join(v.Txt, " "))
		case *dns.OPT:
			// EDNS is checked separately.
		default:
			out = append(out, dns.TypeToString[rr.Header().Rrtype])
		}
	}
	return out
}

// upstream is a real miekg server on 127.0.0.1:0 standing in for the host's
// resolver. It answers:
//
//	example.test. A     192.0.2.1
//	big.test.     TXT   30 long strings (about 2 KB); over UDP always truncated, empty, TC set
//	anything else       NXDOMAIN
//
// and answers SERVFAIL to everything when servfail is set.
type upstream struct {
	addr     netip.AddrPort
	servfail bool
	forget   bool // do not record queries (benchmarks); set before use

	mu   sync.Mutex // guards all following fields
	reqs []*dns.Msg // every query received
	nets []string   // the transport of each query
}

func startUpstream(t testing.TB, servfail bool) *upstream {
	t.Helper()
	u := &upstream{servfail: servfail}
	// bind (the server's own) retries when the UDP port it got is taken for TCP.
	pc, ln, addr, err := bind(context.Background(), netip.MustParseAddrPort("127.0.0.1:0"))
	if err != nil {
		t.Fatalf("upstream: %v", err)
	}
	u.addr = addr
	for _, srv := range []*dns.Server{{PacketConn: pc, Handler: u}, {Listener: ln, Handler: u}} {
		started := make(chan struct{})
		srv.NotifyStartedFunc = func() { close(started) }
		done := make(chan struct{})
		go func() {
			defer close(done)
			if err := srv.ActivateAndServe(); err != nil {
				t.Errorf("upstream serve: %v", err)
			}
		}()
		<-started
		t.Cleanup(func() {
			if err := srv.Shutdown(); err != nil {
				t.Errorf("upstream shutdown: %v", err)
			}
			<-done
		})
	}
	return u
}

func (u *upstream) ServeDNS(w dns.ResponseWriter, req *dns.Msg) {
	_, overTCP := w.LocalAddr().(*net.TCPAddr)
	if !u.forget {
		u.mu.Lock()
		u.reqs = append(u.reqs, req.Copy())
		u.nets = append(u.nets, map[bool]string{true: "tcp", false: "udp"}[overTCP])
		u.mu.Unlock()
	}

	m := new(dns.Msg)
	m.SetReply(req)
	m.RecursionAvailable = true
	q := req.Question[0]
	switch name := dns.CanonicalName(q.Name); {
	case u.servfail:
		m.Rcode = dns.RcodeServerFailure
	case name == "example.test." && q.Qtype == dns.TypeA:
		m.Answer = append(m.Answer, &dns.A{
			Hdr: dns.RR_Header{Name: q.Name, Rrtype: dns.TypeA, Class: dns.ClassINET, Ttl: 60},
			A:   net.IPv4(192, 0, 2, 1),
		})
	case name == "big.test." && q.Qtype == dns.TypeTXT:
		if !overTCP {
			m.Truncated = true
			break
		}
		for i := range 30 {
			m.Answer = append(m.Answer, &dns.TXT{
				Hdr: dns.RR_Header{Name: q.Name, Rrtype: dns.TypeTXT, Class: dns.ClassINET, Ttl: 60},
				Txt: []string{fmt.Sprintf("record-%02d-%s", i, strings.Repeat("x", 50))},
			})
		}
	default:
		m.Rcode = dns.RcodeNameError
	}
	if opt := req.IsEdns0(); opt != nil {
		m.SetEdns0(4096, opt.Do())
	}
	_ = w.WriteMsg(m)
}

// seen returns copies of the queries received and their transports.
func (u *upstream) seen() ([]*dns.Msg, []string) {
	u.mu.Lock()
	defer u.mu.Unlock()
	return slices.Clone(u.reqs), slices.Clone(u.nets)
}

// deadAddr returns a loopback address where nothing listens: UDP queries get
// ICMP port unreachable, TCP connections a reset.
func deadAddr(t testing.TB) netip.AddrPort {
	t.Helper()
	pc, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("listen: %v", err)
	}
	addr := pc.LocalAddr().(*net.UDPAddr).AddrPort()
	pc.Close()
	return addr
}

// blackhole returns a loopback UDP address that reads queries and never answers,
// and a channel that receives each query's arrival.
func blackhole(t testing.TB) (netip.AddrPort, <-chan struct{}) {
	t.Helper()
	pc, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("listen: %v", err)
	}
	got := make(chan struct{}, 16)
	done := make(chan struct{})
	go func() {
		defer close(done)
		buf := make([]byte, 4096)
		for {
			if _, _, err := pc.ReadFrom(buf); err != nil {
				return
			}
			select {
			case got <- struct{}{}:
			default:
			}
		}
	}()
	t.Cleanup(func() { pc.Close(); <-done })
	return pc.LocalAddr().(*net.UDPAddr).AddrPort(), got
}
