package vmdns

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"
)

var networks = []string{"udp", "tcp"}

func TestAuthoritativeAnswers(t *testing.T) {
	s := startServer(t, Options{})
	for name, ip := range map[string]string{"dev": "10.0.0.5", "web": "10.0.0.6", "dns": "10.0.0.7"} {
		if err := s.Set(name, netip.MustParseAddr(ip)); err != nil {
			t.Fatalf("Set(%q): %v", name, err)
		}
	}
	soa := "SOA vm. ns.dns.vm. hostmaster.vm."
	tests := []struct {
		name      string
		qname     string
		qtype     uint16
		rcode     int
		answer    []string
		authority []string
		extra     []string
	}{
		{"A record", "dev.vm.", dns.TypeA, dns.RcodeSuccess, []string{"A 10.0.0.5"}, nil, nil},
		{"case-insensitive name", "DeV.Vm.", dns.TypeA, dns.RcodeSuccess, []string{"A 10.0.0.5"}, nil, nil},
		{"ANY on a VM", "web.vm.", dns.TypeANY, dns.RcodeSuccess, []string{"A 10.0.0.6"}, nil, nil},
		{"VM named like the NS parent", "dns.vm.", dns.TypeA, dns.RcodeSuccess, []string{"A 10.0.0.7"}, nil, nil},
		{"unknown name is NXDOMAIN", "nope.vm.", dns.TypeA, dns.RcodeNameError, nil, []string{soa}, nil},
		{"name below a VM is NXDOMAIN", "x.dev.vm.", dns.TypeA, dns.RcodeNameError, nil, []string{soa}, nil},
		{"AAAA on a VM is NODATA", "dev.vm.", dns.TypeAAAA, dns.RcodeSuccess, nil, []string{soa}, nil},
		{"MX on a VM is NODATA", "dev.vm.", dns.TypeMX, dns.RcodeSuccess, nil, []string{soa}, nil},
		{"apex SOA", "vm.", dns.TypeSOA, dns.RcodeSuccess, []string{soa}, nil, nil},
		{"apex SOA, upper case", "VM.", dns.TypeSOA, dns.RcodeSuccess, []string{"SOA VM. ns.dns.vm. hostmaster.vm."}, nil, nil},
		{"apex NS with glue", "vm.", dns.TypeNS, dns.RcodeSuccess, []string{"NS ns.dns.vm."}, nil, []string{"A 127.0.0.1"}},
		{"apex A is NODATA", "vm.", dns.TypeA, dns.RcodeSuccess, nil, []string{soa}, nil},
		{"NS host address", "ns.dns.vm.", dns.TypeA, dns.RcodeSuccess, []string{"A 127.0.0.1"}, nil, nil},
		{"NS host AAAA is NODATA", "ns.dns.vm.", dns.TypeAAAA, dns.RcodeSuccess, nil, []string{soa}, nil},
	}
	for _, network := range networks {
		for _, tt := range tests {
			t.Run(network+"/"+tt.name, func(t *testing.T) {
				r := query(t, network, s.Addr(), tt.qname, tt.qtype)
				if r.Rcode != tt.rcode {
					t.Errorf("rcode: got %s, want %s", dns.RcodeToString[r.Rcode], dns.RcodeToString[tt.rcode])
				}
				if !r.Authoritative {
					t.Errorf("AA flag: got false, want true")
				}
				if r.RecursionAvailable {
					t.Errorf("RA flag: got true, want false (no upstreams configured)")
				}
				if got := r.Question[0].Name; got != tt.qname {
					t.Errorf("question name: got %q, want %q echoed", got, tt.qname)
				}
				if got := summary(r.Answer); !slices.Equal(got, tt.answer) {
					t.Errorf("answer: got %q, want %q", got, tt.answer)
				}
				if got := summary(r.Ns); !slices.Equal(got, tt.authority) {
					t.Errorf("authority: got %q, want %q", got, tt.authority)
				}
				if got := summary(r.Extra); !slices.Equal(got, tt.extra) {
					t.Errorf("additional: got %q, want %q", got, tt.extra)
				}
				for _, rr := range append(append(slices.Clone(r.Answer), r.Ns...), r.Extra...) {
					if got := rr.Header().Ttl; got != TTL {
						t.Errorf("%s TTL: got %d, want %d", rr.Header().Name, got, TTL)
					}
				}
				for _, rr := range r.Ns {
					if soa, ok := rr.(*dns.SOA); ok && soa.Minttl != TTL {
						t.Errorf("SOA minimum (negative TTL): got %d, want %d", soa.Minttl, TTL)
					}
				}
			})
		}
	}
}

func TestRecordChangesAreServed(t *testing.T) {
	s := startServer(t, Options{})
	addr := s.Addr()
	wantA := func(t *testing.T, name, want string) {
		t.Helper()
		for _, network := range networks {
			r := query(t, network, addr, name, dns.TypeA)
			var got []string
			if r.Rcode != dns.RcodeSuccess {
				got = []string{dns.RcodeToString[r.Rcode]}
			} else {
				got = summary(r.Answer)
			}
			wantS := []string{want}
			if want != "NXDOMAIN" {
				wantS = []string{"A " + want}
			}
			if !slices.Equal(got, wantS) {
				t.Errorf("%s %s: got %q, want %q", network, name, got, wantS)
			}
		}
	}

	wantA(t, "dev.vm.", "NXDOMAIN")
	if err := s.Set("dev", netip.MustParseAddr("10.0.0.5")); err != nil {
		t.Fatal(err)
	}
	wantA(t, "dev.vm.", "10.0.0.5")
	if err := s.Set("DEV", netip.MustParseAddr("10.0.0.9")); err != nil {
		t.Fatal(err)
	}
	wantA(t, "dev.vm.", "10.0.0.9")
	s.Remove("Dev")
	wantA(t, "dev.vm.", "NXDOMAIN")
	s.Remove("never-there") // a no-op, not a panic

	if err := s.Set("old", netip.MustParseAddr("10.0.0.1")); err != nil {
		t.Fatal(err)
	}
	err := s.Replace(map[string]netip.Addr{
		"a": netip.MustParseAddr("10.0.1.1"),
		"b": netip.MustParseAddr("::ffff:10.0.1.2"), // IPv4-mapped is taken as IPv4
	})
	if err != nil {
		t.Fatalf("Replace: %v", err)
	}
	wantA(t, "a.vm.", "10.0.1.1")
	wantA(t, "b.vm.", "10.0.1.2")
	wantA(t, "old.vm.", "NXDOMAIN")

	err = s.Replace(map[string]netip.Addr{"good": netip.MustParseAddr("10.0.2.1"), "bad_name": netip.MustParseAddr("10.0.2.2")})
	if !errors.Is(err, ErrInvalidName) {
		t.Fatalf("Replace with a bad name: got %v, want ErrInvalidName", err)
	}
	wantA(t, "a.vm.", "10.0.1.1") // the failed Replace left the set alone
	wantA(t, "good.vm.", "NXDOMAIN")

	if err := s.Replace(nil); err != nil {
		t.Fatalf("Replace(nil): %v", err)
	}
	wantA(t, "a.vm.", "NXDOMAIN")
}

func TestMultiLabelDomain(t *testing.T) {
	s := startServer(t, Options{Domain: "Dev.Local."})
	if got, want := s.Domain(), "dev.local"; got != want {
		t.Errorf("Domain(): got %q, want %q", got, want)
	}
	if err := s.Set("box", netip.MustParseAddr("10.9.0.2")); err != nil {
		t.Fatal(err)
	}
	for _, network := range networks {
		r := query(t, network, s.Addr(), "box.dev.local.", dns.TypeA)
		if got, want := summary(r.Answer), []string{"A 10.9.0.2"}; !slices.Equal(got, want) {
			t.Errorf("%s box.dev.local: got %q, want %q", network, got, want)
		}
		r = query(t, network, s.Addr(), "dev.local.", dns.TypeSOA)
		if got, want := summary(r.Answer), []string{"SOA dev.local. ns.dns.dev.local. hostmaster.dev.local."}; !slices.Equal(got, want) {
			t.Errorf("%s apex SOA: got %q, want %q", network, got, want)
		}
		r = query(t, network, s.Addr(), "local.", dns.TypeSOA)
		if r.Rcode != dns.RcodeRefused || r.Authoritative {
			t.Errorf("%s parent of the zone: got rcode %s AA=%v, want REFUSED (forwarded; no upstreams) without AA",
				network, dns.RcodeToString[r.Rcode], r.Authoritative)
		}
		r = query(t, network, s.Addr(), "box.vm.", dns.TypeA)
		if r.Rcode != dns.RcodeRefused {
			t.Errorf("%s box.vm outside the zone: got %s, want REFUSED", network, dns.RcodeToString[r.Rcode])
		}
	}
}

func TestEDNS(t *testing.T) {
	s := startServer(t, Options{})
	if err := s.Set("dev", netip.MustParseAddr("10.0.0.5")); err != nil {
		t.Fatal(err)
	}
	for _, network := range networks {
		m := new(dns.Msg).SetQuestion("dev.vm.", dns.TypeA)
		m.SetEdns0(4096, true)
		r := roundTrip(t, network, s.Addr(), m)
		opt := r.IsEdns0()
		if opt == nil {
			t.Fatalf("%s: reply to an EDNS query has no OPT record", network)
		}
		if got := opt.UDPSize(); got != ednsSize {
			t.Errorf("%s: advertised UDP size: got %d, want %d", network, got, ednsSize)
		}
		if !opt.Do() {
			t.Errorf("%s: DO bit: got false, want it copied from the query", network)
		}

		m = new(dns.Msg).SetQuestion("dev.vm.", dns.TypeA)
		m.SetEdns0(4096, false)
		m.IsEdns0().SetVersion(1)
		r = roundTrip(t, network, s.Addr(), m)
		if r.Rcode != dns.RcodeBadVers || len(r.Answer) != 0 {
			t.Errorf("%s: EDNS version 1: got rcode %d with %d answers, want BADVERS (16) and none", network, r.Rcode, len(r.Answer))
		}
	}
}

func TestNotifyIsNotImplemented(t *testing.T) {
	s := startServer(t, Options{})
	m := new(dns.Msg).SetNotify("vm.")
	r := roundTrip(t, "udp", s.Addr(), m)
	if r.Rcode != dns.RcodeNotImplemented {
		t.Errorf("NOTIFY: got %s, want NOTIMP", dns.RcodeToString[r.Rcode])
	}
}

func TestNewRejectsBadOptions(t *testing.T) {
	tests := []struct {
		name string
		opts Options
		want string
	}{
		{"domain with underscore", Options{Domain: "my_vms"}, "not a valid DNS name"},
		{"domain with empty label", Options{Domain: "dev..local"}, "not a valid DNS name"},
		{"domain only a dot", Options{Domain: "."}, "not a valid DNS name"},
		{"domain too long", Options{Domain: strings.Repeat("a.", 100) + "vm"}, "not a valid DNS name"},
		{"hostname upstream", Options{Upstreams: []string{"dns.google"}}, "hostnames cannot be used"},
		{"upstream port 0", Options{Upstreams: []string{"192.0.2.1:0"}}, "not an IP address or IP:port"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := New(tt.opts)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("New(%+v): got error %v, want one containing %q", tt.opts, err, tt.want)
			}
		})
	}
	s, err := New(Options{Domain: "", Upstreams: []string{"192.0.2.1", "[2001:db8::1]:5353"}})
	if err != nil {
		t.Fatalf("New with defaults: %v", err)
	}
	if got := s.Domain(); got != DefaultDomain {
		t.Errorf("default domain: got %q, want %q", got, DefaultDomain)
	}
	if got, want := s.upstreams, []netip.AddrPort{netip.MustParseAddrPort("192.0.2.1:53"), netip.MustParseAddrPort("[2001:db8::1]:5353")}; !slices.Equal(got, want) {
		t.Errorf("upstreams: got %v, want %v", got, want)
	}
}

func TestLifecycle(t *testing.T) {
	ctx := context.Background()
	s, err := New(Options{Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	if got := s.Addr(); got.IsValid() {
		t.Errorf("Addr before Start: got %v, want the zero AddrPort", got)
	}
	if err := s.Start(ctx, "localhost:53"); err == nil || !strings.Contains(err.Error(), "not ip:port") {
		t.Errorf("Start with a hostname: got %v, want a 'not ip:port' error", err)
	}
	if err := s.Start(ctx, "127.0.0.1:0"); err != nil {
		t.Fatalf("Start: %v", err)
	}
	addr := s.Addr()
	if addr.Addr() != netip.MustParseAddr("127.0.0.1") || addr.Port() == 0 {
		t.Errorf("Addr: got %v, want 127.0.0.1 with the port picked", addr)
	}
	if err := s.Start(ctx, "127.0.0.1:0"); err == nil || !strings.Contains(err.Error(), "already serving") {
		t.Errorf("second Start: got %v, want 'already serving'", err)
	}
	if err := s.Close(ctx); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if got := s.Addr(); got.IsValid() {
		t.Errorf("Addr after Close: got %v, want the zero AddrPort", got)
	}
	if err := s.Close(ctx); err != nil {
		t.Errorf("second Close: got %v, want nil", err)
	}
	if err := s.Start(ctx, "127.0.0.1:0"); !errors.Is(err, ErrClosed) {
		t.Errorf("Start after Close: got %v, want ErrClosed", err)
	}
	// Both ports are free again.
	pc, err := net.ListenPacket("udp4", addr.String())
	if err != nil {
		t.Errorf("UDP port still held after Close: %v", err)
	} else {
		pc.Close()
	}
	ln, err := net.Listen("tcp4", addr.String())
	if err != nil {
		t.Errorf("TCP port still held after Close: %v", err)
	} else {
		ln.Close()
	}

	never, err := New(Options{})
	if err != nil {
		t.Fatal(err)
	}
	if err := never.Close(ctx); err != nil {
		t.Errorf("Close of a server never started: got %v, want nil", err)
	}
}

// TestStartPortTakenReleasesUDP binds a fixed port whose TCP side is taken:
// Start must fail, say so, and not keep the UDP socket it had already bound.
func TestStartPortTakenReleasesUDP(t *testing.T) {
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	addr := ln.Addr().(*net.TCPAddr).AddrPort()

	s, err := New(Options{Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	err = s.Start(context.Background(), addr.String())
	if err == nil {
		_ = s.Close(context.Background())
		t.Fatalf("Start on %s with its TCP port taken: got nil error, want one", addr)
	}
	if !strings.Contains(err.Error(), "/tcp") || !strings.Contains(err.Error(), "pick another dns.listen port") {
		t.Errorf("error: got %q, want it to name the TCP side and the fix", err)
	}
	pc, err := net.ListenPacket("udp4", addr.String())
	if err != nil {
		t.Fatalf("UDP port %s still held after the failed Start: %v", addr, err)
	}
	pc.Close()
}

// TestCloseLeavesNoGoroutines serves UDP, TCP and forwarded queries, closes,
// and checks that every goroutine the server started has returned.
func TestCloseLeavesNoGoroutines(t *testing.T) {
	up := startUpstream(t, false)
	dead := deadAddr(t)
	before := runtime.NumGoroutine()

	s, err := New(Options{Upstreams: []string{dead.String(), up.addr.String()}, Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Start(context.Background(), "127.0.0.1:0"); err != nil {
		t.Fatal(err)
	}
	if err := s.Set("dev", netip.MustParseAddr("10.0.0.5")); err != nil {
		t.Fatal(err)
	}
	for _, network := range networks {
		query(t, network, s.Addr(), "dev.vm.", dns.TypeA)
		query(t, network, s.Addr(), "example.test.", dns.TypeA)
	}
	// A TCP client that connects and stays idle must not hold Close up.
	idle, err := net.Dial("tcp4", s.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer idle.Close()

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := s.Close(ctx); err != nil {
		t.Fatalf("Close: %v", err)
	}
	for runtime.NumGoroutine() > before {
		if ctx.Err() != nil {
			buf := make([]byte, 1<<20)
			t.Fatalf("goroutines after Close: got %d, want at most %d as before Start:\n%s",
				runtime.NumGoroutine(), before, buf[:runtime.Stack(buf, true)])
		}
		runtime.Gosched()
		time.Sleep(10 * time.Millisecond)
	}
}
