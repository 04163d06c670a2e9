package vmdns

import (
	"fmt"
	"log/slog"
	"net/netip"
	"testing"
	"time"

	"github.com/miekg/dns"
)

// benchQuery measures one UDP query and its answer over a single client socket,
// so the figure is the server's latency rather than socket setup.
func benchQuery(b *testing.B, addr netip.AddrPort, name string, wantRcode int) {
	b.Helper()
	c := &dns.Client{Net: "udp", Timeout: 5 * time.Second}
	conn, err := c.Dial(addr.String())
	if err != nil {
		b.Fatal(err)
	}
	defer conn.Close()
	m := new(dns.Msg).SetQuestion(name, dns.TypeA)
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		m.Id = dns.Id()
		r, _, err := c.ExchangeWithConn(m, conn)
		if err != nil {
			b.Fatal(err)
		}
		if r.Rcode != wantRcode {
			b.Fatalf("rcode: got %s, want %s", dns.RcodeToString[r.Rcode], dns.RcodeToString[wantRcode])
		}
	}
}

func quietServer(b *testing.B, opts Options) *Server {
	b.Helper()
	opts.Logger = slog.New(slog.DiscardHandler)
	return startServer(b, opts)
}

func BenchmarkQueryLocalA(b *testing.B) {
	s := quietServer(b, Options{})
	for i := range 64 {
		if err := s.Set(fmt.Sprintf("vm%d", i), netip.AddrFrom4([4]byte{10, 0, 0, byte(i + 2)})); err != nil {
			b.Fatal(err)
		}
	}
	if err := s.Set("dev", netip.MustParseAddr("10.0.0.1")); err != nil {
		b.Fatal(err)
	}
	benchQuery(b, s.Addr(), "dev.vm.", dns.RcodeSuccess)
}

func BenchmarkQueryForwarded(b *testing.B) {
	up := startUpstream(b, false)
	up.forget = true // keep the upstream's memory flat over b.N queries
	s := quietServer(b, Options{Upstreams: []string{up.addr.String()}})
	benchQuery(b, s.Addr(), "example.test.", dns.RcodeSuccess)
}
