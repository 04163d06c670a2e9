package vmdns

import (
	"errors"
	"io"
	"maps"
	"net"
	"net/netip"
	"os"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/miekg/dns"
)

// silentUpstream is a UDP resolver that reads every query and never answers, as
// an unreachable or overloaded upstream looks to the forwarder. It records the
// names it was asked.
type silentUpstream struct {
	addr netip.AddrPort

	mu    sync.Mutex // guards names
	names map[string]int
}

func startSilent(t testing.TB) *silentUpstream {
	t.Helper()
	pc, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("listen: %v", err)
	}
	u := &silentUpstream{addr: pc.LocalAddr().(*net.UDPAddr).AddrPort(), names: map[string]int{}}
	done := make(chan struct{})
	go func() {
		defer close(done)
		buf := make([]byte, 4096)
		for {
			n, _, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			m := new(dns.Msg)
			if m.Unpack(buf[:n]) == nil && len(m.Question) == 1 {
				u.mu.Lock()
				u.names[m.Question[0].Name]++
				u.mu.Unlock()
			}
		}
	}()
	t.Cleanup(func() { pc.Close(); <-done })
	return u
}

func (u *silentUpstream) asked(name string) int {
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.names[name]
}

// openFDs is this process's open descriptor count: the server runs in it.
func openFDs(t testing.TB) int {
	t.Helper()
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatalf("count fds: %v", err)
	}
	return len(ents)
}

// peak samples the fd and goroutine counts until stop is closed and returns
// their maxima.
func peak(t testing.TB, stop <-chan struct{}) (fds, goroutines func() int) {
	t.Helper()
	var maxFD, maxG atomic.Int64
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			if n := int64(openFDs(t)); n > maxFD.Load() {
				maxFD.Store(n)
			}
			if n := int64(runtime.NumGoroutine()); n > maxG.Load() {
				maxG.Store(n)
			}
			select {
			case <-stop:
				return
			case <-time.After(2 * time.Millisecond):
			}
		}
	}()
	wait := func() { <-done }
	return func() int { wait(); return int(maxFD.Load()) }, func() int { wait(); return int(maxG.Load()) }
}

// flood sends n queries for distinct names outside the zone from one UDP socket
// bound to src, keeping at most window of them unanswered (as a resolver
// retrying at full speed would, without overrunning socket buffers), and gives up
// after wait. It returns how many replies of each rcode arrived and how long the
// whole flood took.
func flood(t testing.TB, src netip.Addr, server netip.AddrPort, n, window int, wait time.Duration) (map[int]int, time.Duration) {
	t.Helper()
	conn, err := net.ListenUDP("udp4", net.UDPAddrFromAddrPort(netip.AddrPortFrom(src, 0)))
	if err != nil {
		t.Fatalf("client on %s: %v", src, err)
	}
	defer conn.Close()
	t0 := time.Now()
	deadline := t0.Add(wait)
	var mu sync.Mutex // guards got
	got := map[int]int{}
	var answered atomic.Int64
	done := make(chan struct{})
	go func() {
		defer close(done)
		buf := make([]byte, 4096)
		_ = conn.SetReadDeadline(deadline)
		for {
			k, err := conn.Read(buf)
			if err != nil {
				return
			}
			r := new(dns.Msg)
			if r.Unpack(buf[:k]) != nil {
				t.Errorf("unparseable reply")
				return
			}
			mu.Lock()
			got[r.Rcode]++
			mu.Unlock()
			answered.Add(1)
		}
	}()
	lost := 0 // queries given up as lost
	for i := 0; i < n && time.Now().Before(deadline); i++ {
		// A query lost to a full socket buffer is given up after a while, as a
		// resolver's retry would.
		for since := time.Now(); i-int(answered.Load())-lost >= window; {
			if time.Since(since) > 200*time.Millisecond {
				lost = i - int(answered.Load())
				break
			}
			time.Sleep(time.Millisecond)
		}
		m := new(dns.Msg).SetQuestion(floodName(src, i), dns.TypeA)
		m.Id = uint16(i)
		b, err := m.Pack()
		if err != nil {
			t.Fatal(err)
		}
		if _, err := conn.WriteToUDPAddrPort(b, server); err != nil {
			t.Fatalf("send query %d: %v", i, err)
		}
	}
	// The last replies: everything but what the server forwards.
	for int(answered.Load()) < n-window-lost && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	took := time.Since(t0)
	_ = conn.SetReadDeadline(time.Now().Add(50 * time.Millisecond))
	<-done
	mu.Lock()
	defer mu.Unlock()
	return maps.Clone(got), took
}

func floodName(src netip.Addr, i int) string {
	return "q" + strings.ReplaceAll(src.String(), ".", "-") + "-" + strconv.Itoa(i) + ".flood.test."
}

// TestAttackDNSFloodToSilentUpstreamIsBounded is finding 7: a guest sending
// thousands of queries that forward to an upstream that never answers used to
// cost bangerd a goroutine and an upstream socket each. Now the forwards in flight
// stay at the per-source cap, every query past it is answered SERVFAIL at once,
// and another guest's query is still forwarded.
func TestAttackDNSFloodToSilentUpstreamIsBounded(t *testing.T) {
	const (
		maxFlight = 64
		perSource = 16
		queries   = 4000
	)
	up := startSilent(t)
	s := startServer(t, Options{Upstreams: []string{up.addr.String()}, Timeout: 10 * time.Second,
		MaxInFlight: maxFlight, MaxInFlightPerSource: perSource})
	baseFD, baseG := openFDs(t), runtime.NumGoroutine()

	stop := make(chan struct{})
	fds, goroutines := peak(t, stop)
	attacker := netip.MustParseAddr("127.0.0.1")
	got, took := flood(t, attacker, s.Addr(), queries, 200, 10*time.Second)

	// Another guest still gets its query forwarded: the attacker has used only its
	// own share of the budget.
	other := netip.MustParseAddr("127.0.0.2")
	c := &dns.Client{Net: "udp", Timeout: 300 * time.Millisecond,
		Dialer: &net.Dialer{LocalAddr: net.UDPAddrFromAddrPort(netip.AddrPortFrom(other, 0))}}
	_, _, err := c.Exchange(new(dns.Msg).SetQuestion("fair.test.", dns.TypeA), s.Addr().String())
	var nerr net.Error
	if !errors.As(err, &nerr) || !nerr.Timeout() {
		t.Errorf("query from another source: got %v, want a timeout (forwarded to the silent upstream, not refused)", err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for up.asked("fair.test.") == 0 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if up.asked("fair.test.") == 0 {
		t.Error("the other source's query never reached the upstream: one guest starved the others")
	}
	close(stop)

	t.Logf("replies: %v in %s; fds %d -> peak %d; goroutines %d -> peak %d",
		got, took, baseFD, fds(), baseG, goroutines())
	if want := queries - perSource; got[dns.RcodeServerFailure] < want {
		t.Errorf("SERVFAIL replies: got %d, want at least %d (every query past the per-source cap of %d answered at once)",
			got[dns.RcodeServerFailure], want, perSource)
	}
	if took > 5*time.Second {
		t.Errorf("the flood took %s, want well under the upstream timeout: refusals must not wait", took)
	}
	// One upstream socket per forward in flight, plus a little slack for the
	// runtime's own descriptors.
	if limit := baseFD + perSource + 1 + 8; fds() > limit {
		t.Errorf("open fds peaked at %d (from %d), want at most %d: forwards are not bounded", fds(), baseFD, limit)
	}
	// miekg/dns runs each UDP query in a goroutine; refused ones end at once.
	if limit := baseG + 4*(perSource+1) + 100; goroutines() > limit {
		t.Errorf("goroutines peaked at %d (from %d), want at most %d", goroutines(), baseG, limit)
	}
	if n := up.asked(floodName(attacker, queries-1)); n != 0 {
		t.Errorf("the last flood query reached the upstream %d times, want 0", n)
	}
}

// TestAttackDNSFloodFromManySourcesHitsOverallCap: sources that each stay under
// their own cap together stop at the overall one.
func TestAttackDNSFloodFromManySourcesHitsOverallCap(t *testing.T) {
	const (
		maxFlight = 40
		perSource = 16
		sources   = 6
		each      = 600
	)
	up := startSilent(t)
	s := startServer(t, Options{Upstreams: []string{up.addr.String()}, Timeout: 10 * time.Second,
		MaxInFlight: maxFlight, MaxInFlightPerSource: perSource})
	baseFD := openFDs(t)
	stop := make(chan struct{})
	fds, _ := peak(t, stop)
	var wg sync.WaitGroup
	servfails := make([]int, sources)
	for i := range sources {
		wg.Add(1)
		go func() {
			defer wg.Done()
			got, _ := flood(t, netip.AddrFrom4([4]byte{127, 0, 1, byte(i + 1)}), s.Addr(), each, 100, 8*time.Second)
			servfails[i] = got[dns.RcodeServerFailure]
		}()
	}
	wg.Wait()
	close(stop)
	total := 0
	for _, n := range servfails {
		total += n
	}
	t.Logf("SERVFAIL per source %v; fds %d -> peak %d", servfails, baseFD, fds())
	// Concurrent floods on two busy cores overrun the server's socket buffer (a
	// bound of its own: the kernel drops what does not fit), so only part is
	// answered; without the caps none would be before the upstream timeout.
	if want := (sources*each - maxFlight) / 2; total < want {
		t.Errorf("SERVFAIL replies: got %d, want at least %d (most of all but the overall cap of %d)", total, want, maxFlight)
	}
	// The clients hold one socket each.
	if limit := baseFD + sources + maxFlight + 8; fds() > limit {
		t.Errorf("open fds peaked at %d (from %d), want at most %d", fds(), baseFD, limit)
	}
}

// TestAttackDNSTCPConnectionsAreBounded: TCP connections a guest opens and leaves
// idle are capped per source and closed after the read timeout.
func TestAttackDNSTCPConnectionsAreBounded(t *testing.T) {
	const (
		perSource = 8
		conns     = 200
	)
	s := startServer(t, Options{MaxInFlight: 64, MaxInFlightPerSource: perSource})
	var cs []net.Conn
	for range conns {
		c, err := net.Dial("tcp4", s.Addr().String())
		if err != nil {
			t.Fatalf("dial: %v", err)
		}
		defer c.Close()
		cs = append(cs, c)
	}
	// open counts the connections the server has not closed.
	open := func(wait time.Duration) int {
		var n atomic.Int64
		var wg sync.WaitGroup
		for _, c := range cs {
			wg.Add(1)
			go func() {
				defer wg.Done()
				_ = c.SetReadDeadline(time.Now().Add(wait))
				_, err := c.Read(make([]byte, 1))
				var nerr net.Error
				if errors.As(err, &nerr) && nerr.Timeout() {
					n.Add(1)
				} else if err != nil && !errors.Is(err, io.EOF) && !errors.Is(err, net.ErrClosed) && !strings.Contains(err.Error(), "reset") {
					t.Errorf("read: %v", err)
				}
			}()
		}
		wg.Wait()
		return int(n.Load())
	}
	if n := open(500 * time.Millisecond); n > perSource {
		t.Errorf("idle TCP connections the server keeps from one source: got %d, want at most %d", n, perSource)
	}
	// The survivors are closed once the read timeout passes without a query.
	time.Sleep(tcpReadTimeout)
	if n := open(200 * time.Millisecond); n != 0 {
		t.Errorf("idle TCP connections still open after the read timeout: %d, want 0", n)
	}
	// A well-behaved client is served once the flood is gone.
	if err := s.Set("dev", netip.MustParseAddr("10.0.0.5")); err != nil {
		t.Fatal(err)
	}
	if r := query(t, "tcp", s.Addr(), "dev.vm.", dns.TypeA); r.Rcode != dns.RcodeSuccess {
		t.Errorf("query after the flood: %s", dns.RcodeToString[r.Rcode])
	}
}

func TestLimiter(t *testing.T) {
	a, b := netip.MustParseAddr("10.0.0.2"), netip.MustParseAddr("10.0.0.3")
	l := newLimiter(3, 2)
	steps := []struct {
		take bool // else give
		src  netip.Addr
		want bool
	}{
		{true, a, true}, {true, a, true}, {true, a, false}, // a's cap
		{true, b, true}, {true, b, false}, // overall cap
		{false, a, true}, {true, b, true}, {true, a, false},
		{false, b, true}, {false, b, true}, {true, a, true},
	}
	for i, st := range steps {
		if !st.take {
			l.give(st.src)
			continue
		}
		if got := l.take(st.src); got != st.want {
			t.Fatalf("step %d: take(%s) = %v, want %v", i, st.src, got, st.want)
		}
	}
	l.give(a)
	l.give(a)
	if n, m := l.inFlight(), len(l.bySrc); n != 0 || m != 0 {
		t.Errorf("after giving everything back: %d in flight, %d sources tracked; want 0, 0", n, m)
	}
}

func TestNewRejectsBadLimits(t *testing.T) {
	for _, o := range []Options{{MaxInFlight: -1}, {MaxInFlightPerSource: -1}, {MaxInFlight: 4, MaxInFlightPerSource: 5}} {
		if _, err := New(o); err == nil {
			t.Errorf("New(%+v) succeeded, want an error", o)
		}
	}
}
