package portfwd

import (
	"context"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// guestIP stands in for a VM: the loopback network answers on all of 127/8, so a server
// on 127.0.0.2 is a different host address from the forwarder's 127.0.0.1.
var guestIP = netip.MustParseAddr("127.0.0.2")

// guest is a TCP server on guestIP that runs handle per connection and counts how many
// connections it holds at once.
type guest struct {
	port uint16
	cur  atomic.Int32
	peak atomic.Int32
	// accepted receives every accepted connection, for tests that act on the guest side.
	accepted chan *net.TCPConn
}

func startGuest(t *testing.T, handle func(c *net.TCPConn)) *guest {
	t.Helper()
	ln, err := net.Listen("tcp", netip.AddrPortFrom(guestIP, 0).String())
	if err != nil {
		t.Fatal(err)
	}
	g := &guest{port: uint16(ln.Addr().(*net.TCPAddr).Port), accepted: make(chan *net.TCPConn, 64)}
	var wg sync.WaitGroup
	var mu sync.Mutex
	var open []net.Conn
	t.Cleanup(func() {
		ln.Close()
		mu.Lock()
		for _, c := range open {
			c.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			open = append(open, c)
			mu.Unlock()
			n := g.cur.Add(1)
			for p := g.peak.Load(); n > p && !g.peak.CompareAndSwap(p, n); p = g.peak.Load() {
			}
			select {
			case g.accepted <- c.(*net.TCPConn):
			default:
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer g.cur.Add(-1)
				defer c.Close()
				handle(c.(*net.TCPConn))
			}()
		}
	}()
	return g
}

// echo copies everything back, then closes.
func echo(c *net.TCPConn) { io.Copy(c, c) }

func newForwarder(t *testing.T, cfg Config) *Forwarder {
	t.Helper()
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	f := New(cfg)
	t.Cleanup(func() { f.Close() })
	return f
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Helper()
	w.t.Log(strings.TrimSpace(string(p)))
	return len(p), nil
}

// publish adds a forward for g on a free port of 127.0.0.1 and returns its address.
func publish(t *testing.T, f *Forwarder, vm string, g *guest) string {
	t.Helper()
	if err := f.Add(testCtx(t), vm, Spec{HostIP: DefaultHostIP(), GuestPort: g.port}, guestIP); err != nil {
		t.Fatal(err)
	}
	for _, fw := range f.List() {
		if fw.VMID == vm && fw.Spec.GuestPort == g.port {
			return fw.Spec.HostAddr().String()
		}
	}
	t.Fatalf("forward for %s not listed: %v", vm, f.List())
	return ""
}

func testCtx(t *testing.T) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// dial connects to addr with a deadline on every later read and write, so a broken
// forwarder fails the test instead of hanging it.
func dial(t *testing.T, addr string) *net.TCPConn {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	c.SetDeadline(time.Now().Add(20 * time.Second))
	return c.(*net.TCPConn)
}

func roundTrip(t *testing.T, c net.Conn, msg string) {
	t.Helper()
	if _, err := c.Write([]byte(msg)); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, len(msg))
	if _, err := io.ReadFull(c, buf); err != nil {
		t.Fatal(err)
	}
	if string(buf) != msg {
		t.Fatalf("echo: got %q, want %q", buf, msg)
	}
}

// waitFor polls cond until it holds, failing t if it has not within the test's bound.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	ctx := testCtx(t)
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	for !cond() {
		select {
		case <-ctx.Done():
			t.Fatalf("waiting for %s: %v", what, ctx.Err())
		case <-tick.C:
		}
	}
}
