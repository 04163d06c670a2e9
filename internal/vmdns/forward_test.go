package vmdns

import (
	"context"
	"net"
	"net/netip"
	"slices"
	"testing"
	"time"

	"github.com/miekg/dns"
)

func TestForwardPassesQuestionAndFlags(t *testing.T) {
	up := startUpstream(t, false)
	s := startServer(t, Options{Upstreams: []string{up.addr.String()}})

	tests := []struct {
		name   string
		rd, cd bool
	}{
		{"RD set", true, false},
		{"RD clear", false, false},
		{"CD set", true, true},
	}
	for _, network := range networks {
		for _, tt := range tests {
			t.Run(network+"/"+tt.name, func(t *testing.T) {
				m := new(dns.Msg).SetQuestion("ExAmPlE.TeSt.", dns.TypeA) // 0x20 mixed case must survive
				m.RecursionDesired, m.CheckingDisabled = tt.rd, tt.cd
				r := roundTrip(t, network, s.Addr(), m)
				if r.Rcode != dns.RcodeSuccess {
					t.Fatalf("rcode: got %s, want NOERROR", dns.RcodeToString[r.Rcode])
				}
				if got, want := summary(r.Answer), []string{"A 192.0.2.1"}; !slices.Equal(got, want) {
					t.Errorf("answer: got %q, want %q", got, want)
				}
				if r.Authoritative {
					t.Errorf("AA flag on a forwarded answer: got true, want false")
				}
				if !r.RecursionAvailable {
					t.Errorf("RA flag: got false, want the upstream's true")
				}
				reqs, nets := up.seen()
				got := reqs[len(reqs)-1]
				if q := got.Question[0]; q.Name != "ExAmPlE.TeSt." || q.Qtype != dns.TypeA || q.Qclass != dns.ClassINET {
					t.Errorf("question upstream: got %v, want ExAmPlE.TeSt. IN A unchanged", q)
				}
				if got.RecursionDesired != tt.rd || got.CheckingDisabled != tt.cd {
					t.Errorf("flags upstream: got RD=%v CD=%v, want RD=%v CD=%v", got.RecursionDesired, got.CheckingDisabled, tt.rd, tt.cd)
				}
				if got.Id != m.Id {
					t.Errorf("query ID upstream: got %d, want the client's %d", got.Id, m.Id)
				}
				if n := nets[len(nets)-1]; n != network {
					t.Errorf("transport upstream: got %s, want %s, as the client used", n, network)
				}
			})
		}
	}
}

func TestForwardPassesUpstreamNXDOMAIN(t *testing.T) {
	up := startUpstream(t, false)
	s := startServer(t, Options{Upstreams: []string{up.addr.String()}})
	r := query(t, "udp", s.Addr(), "missing.test.", dns.TypeA)
	if r.Rcode != dns.RcodeNameError {
		t.Errorf("rcode: got %s, want the upstream's NXDOMAIN", dns.RcodeToString[r.Rcode])
	}
}

func TestForwardTriesUpstreamsInOrder(t *testing.T) {
	good := startUpstream(t, false)
	failing := startUpstream(t, true)
	dead := deadAddr(t)
	silent, _ := blackhole(t)

	tests := []struct {
		name      string
		upstreams []netip.AddrPort
		rcode     int
	}{
		{"first answers", []netip.AddrPort{good.addr, dead}, dns.RcodeSuccess},
		{"down, then good", []netip.AddrPort{dead, good.addr}, dns.RcodeSuccess},
		{"silent, then good", []netip.AddrPort{silent, good.addr}, dns.RcodeSuccess},
		{"SERVFAIL, then good", []netip.AddrPort{failing.addr, good.addr}, dns.RcodeSuccess},
		{"only down", []netip.AddrPort{dead}, dns.RcodeServerFailure},
		{"all down", []netip.AddrPort{dead, dead}, dns.RcodeServerFailure},
		{"only silent", []netip.AddrPort{silent}, dns.RcodeServerFailure},
		{"only SERVFAIL", []netip.AddrPort{failing.addr}, dns.RcodeServerFailure},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var ups []string
			for _, u := range tt.upstreams {
				ups = append(ups, u.String())
			}
			s := startServer(t, Options{Upstreams: ups, Timeout: 500 * time.Millisecond})
			for _, network := range networks {
				r := query(t, network, s.Addr(), "example.test.", dns.TypeA)
				if r.Rcode != tt.rcode {
					t.Errorf("%s rcode: got %s, want %s", network, dns.RcodeToString[r.Rcode], dns.RcodeToString[tt.rcode])
				}
				if tt.rcode == dns.RcodeSuccess {
					if got, want := summary(r.Answer), []string{"A 192.0.2.1"}; !slices.Equal(got, want) {
						t.Errorf("%s answer: got %q, want %q", network, got, want)
					}
				}
				if !r.RecursionAvailable {
					t.Errorf("%s RA flag: got false, want true (upstreams are configured)", network)
				}
			}
		})
	}
}

func TestForwardTruncatedUDPRetriesOverTCP(t *testing.T) {
	up := startUpstream(t, false)
	s := startServer(t, Options{Upstreams: []string{up.addr.String()}})

	// The client takes 4 KB over UDP; the upstream truncates every UDP reply, so
	// a full answer proves the server fetched it over TCP.
	m := new(dns.Msg).SetQuestion("big.test.", dns.TypeTXT)
	m.SetEdns0(4096, false)
	r := roundTrip(t, "udp", s.Addr(), m)
	if r.Truncated || len(r.Answer) != 30 {
		t.Errorf("EDNS 4096 client over UDP: got TC=%v with %d answers, want TC=false with all 30", r.Truncated, len(r.Answer))
	}
	_, nets := up.seen()
	if want := []string{"udp", "tcp"}; !slices.Equal(nets, want) {
		t.Errorf("upstream transports: got %v, want %v (UDP, then the TCP retry)", nets, want)
	}

	// A client without EDNS takes 512 bytes: the server truncates the full answer
	// for it, and the client's own TCP retry gets everything.
	r = query(t, "udp", s.Addr(), "big.test.", dns.TypeTXT)
	if !r.Truncated {
		t.Errorf("512-byte client over UDP: got TC=false with %d answers, want TC=true", len(r.Answer))
	}
	if size := r.Len(); size > dns.MinMsgSize {
		t.Errorf("512-byte client over UDP: reply of %d bytes, want at most %d", size, dns.MinMsgSize)
	}
	r = query(t, "tcp", s.Addr(), "big.test.", dns.TypeTXT)
	if r.Truncated || len(r.Answer) != 30 {
		t.Errorf("client over TCP: got TC=%v with %d answers, want TC=false with all 30", r.Truncated, len(r.Answer))
	}
	_, nets = up.seen()
	if want := []string{"udp", "tcp", "udp", "tcp", "tcp"}; !slices.Equal(nets, want) {
		t.Errorf("upstream transports: got %v, want %v (a TCP client is forwarded over TCP directly)", nets, want)
	}
}

func TestForwardWithoutUpstreamsRefuses(t *testing.T) {
	s := startServer(t, Options{})
	for _, network := range networks {
		r := query(t, network, s.Addr(), "example.test.", dns.TypeA)
		if r.Rcode != dns.RcodeRefused {
			t.Errorf("%s rcode: got %s, want REFUSED", network, dns.RcodeToString[r.Rcode])
		}
		if r.RecursionAvailable {
			t.Errorf("%s RA flag: got true, want false", network)
		}
	}
}

// TestStartDropsItselfAsUpstream configures the server's own address as its only
// upstream: the query must be refused at once, not loop.
func TestStartDropsItselfAsUpstream(t *testing.T) {
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	self := ln.Addr().(*net.TCPAddr).AddrPort()
	ln.Close()

	s, err := New(Options{Upstreams: []string{self.String()}, Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Start(context.Background(), self.String()); err != nil {
		t.Skipf("port %s was taken again before the test could use it: %v", self, err)
	}
	t.Cleanup(func() { _ = s.Close(context.Background()) })
	r := query(t, "udp", self, "example.test.", dns.TypeA)
	if r.Rcode != dns.RcodeRefused {
		t.Errorf("rcode: got %s, want REFUSED (the only upstream, itself, dropped)", dns.RcodeToString[r.Rcode])
	}
}

func TestIsSelf(t *testing.T) {
	local := map[netip.Addr]bool{netip.MustParseAddr("172.30.77.1"): true}
	tests := []struct {
		up, self string
		want     bool
	}{
		{"172.30.77.1:5353", "172.30.77.1:5353", true},
		{"172.30.77.1:53", "172.30.77.1:5353", false},
		{"192.0.2.1:5353", "172.30.77.1:5353", false},
		{"127.0.0.1:5353", "172.30.77.1:5353", false},
		{"127.0.0.1:5353", "0.0.0.0:5353", true},
		{"127.0.0.53:5353", "0.0.0.0:5353", true},
		{"172.30.77.1:5353", "0.0.0.0:5353", true},
		{"192.0.2.1:5353", "0.0.0.0:5353", false},
		{"127.0.0.1:53", "0.0.0.0:5353", false},
		{"[::1]:5353", "[::]:5353", true},
		{"[fe80::1%eth0]:5353", "[fe80::1%eth1]:5353", true},
	}
	for _, tt := range tests {
		up, self := netip.MustParseAddrPort(tt.up), netip.MustParseAddrPort(tt.self)
		if got := isSelf(up, self, local); got != tt.want {
			t.Errorf("isSelf(%s, %s): got %v, want %v", up, self, got, tt.want)
		}
	}
}

// TestCloseAbortsForwardInFlight closes the server while it waits on an upstream
// that never answers (with a one-minute timeout): Close must not wait that out,
// and the waiting client gets SERVFAIL.
func TestCloseAbortsForwardInFlight(t *testing.T) {
	silent, arrived := blackhole(t)
	s, err := New(Options{Upstreams: []string{silent.String()}, Timeout: time.Minute, Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Start(context.Background(), "127.0.0.1:0"); err != nil {
		t.Fatal(err)
	}
	type result struct {
		r   *dns.Msg
		err error
	}
	got := make(chan result, 1)
	go func() {
		c := &dns.Client{Net: "udp", Timeout: 30 * time.Second}
		r, _, err := c.Exchange(new(dns.Msg).SetQuestion("example.test.", dns.TypeA), s.Addr().String())
		got <- result{r, err}
	}()
	select {
	case <-arrived:
	case <-time.After(10 * time.Second):
		t.Fatal("the query never reached the upstream")
	}

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := s.Close(ctx); err != nil {
		t.Fatalf("Close with a forward in flight: %v", err)
	}
	res := <-got
	if res.err != nil {
		t.Fatalf("client: %v", res.err)
	}
	if res.r.Rcode != dns.RcodeServerFailure {
		t.Errorf("client rcode: got %s, want SERVFAIL", dns.RcodeToString[res.r.Rcode])
	}
}

func TestSameQuestion(t *testing.T) {
	req := new(dns.Msg).SetQuestion("Example.test.", dns.TypeA)
	tests := []struct {
		name string
		r    *dns.Msg
		want bool
	}{
		{"same", new(dns.Msg).SetQuestion("Example.test.", dns.TypeA), true},
		{"case differs", new(dns.Msg).SetQuestion("EXAMPLE.TEST.", dns.TypeA), true},
		{"other name", new(dns.Msg).SetQuestion("evil.test.", dns.TypeA), false},
		{"other type", new(dns.Msg).SetQuestion("example.test.", dns.TypeAAAA), false},
		{"no question", new(dns.Msg), false},
	}
	for _, tt := range tests {
		if got := sameQuestion(req, tt.r); got != tt.want {
			t.Errorf("%s: got %v, want %v", tt.name, got, tt.want)
		}
	}
}
