package portfwd

import (
	"context"
	"encoding/binary"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"testing"
)

// sink is a guest that reads until EOF and answers with the byte count.
func startSink(b *testing.B) string {
	b.Helper()
	ln, err := net.Listen("tcp", netip.AddrPortFrom(guestIP, 0).String())
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				n, _ := io.Copy(io.Discard, c)
				binary.Write(c, binary.BigEndian, n)
			}()
		}
	}()
	return ln.Addr().String()
}

// benchThroughput sends b.N chunks of 1 MiB over one connection to addr and checks the
// receiver saw them all.
func benchThroughput(b *testing.B, addr string) {
	const chunk = 1 << 20
	buf := make([]byte, chunk)
	c, err := net.Dial("tcp", addr)
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	b.SetBytes(chunk)
	b.ResetTimer()
	for range b.N {
		if _, err := c.Write(buf); err != nil {
			b.Fatal(err)
		}
	}
	c.(*net.TCPConn).CloseWrite()
	var got int64
	if err := binary.Read(c, binary.BigEndian, &got); err != nil {
		b.Fatal(err)
	}
	b.StopTimer()
	if want := int64(b.N) * chunk; got != want {
		b.Fatalf("receiver got %d bytes, want %d", got, want)
	}
}

// BenchmarkForwardThroughput measures bytes per second through a published port on
// loopback; BenchmarkDirectThroughput is the same transfer without the forwarder, the
// baseline it is to be read against.
func BenchmarkForwardThroughput(b *testing.B) {
	sink := startSink(b)
	f := New(Config{Logger: slog.New(slog.DiscardHandler)})
	defer f.Close()
	if err := f.Add(context.Background(), "bench", Spec{HostIP: DefaultHostIP(), GuestPort: netip.MustParseAddrPort(sink).Port()}, guestIP); err != nil {
		b.Fatal(err)
	}
	benchThroughput(b, f.List()[0].Spec.HostAddr().String())
}

func BenchmarkDirectThroughput(b *testing.B) {
	benchThroughput(b, startSink(b))
}

// BenchmarkForwardConnect measures a new connection through the forwarder: accept,
// dial of the guest, one round trip and close.
func BenchmarkForwardConnect(b *testing.B) {
	ln, err := net.Listen("tcp", netip.AddrPortFrom(guestIP, 0).String())
	if err != nil {
		b.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() { defer c.Close(); io.Copy(c, c) }()
		}
	}()
	f := New(Config{Logger: slog.New(slog.DiscardHandler)})
	defer f.Close()
	if err := f.Add(context.Background(), "bench", Spec{HostIP: DefaultHostIP(), GuestPort: uint16(ln.Addr().(*net.TCPAddr).Port)}, guestIP); err != nil {
		b.Fatal(err)
	}
	addr := f.List()[0].Spec.HostAddr().String()
	buf := make([]byte, 1)
	b.ResetTimer()
	for range b.N {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			b.Fatal(err)
		}
		if _, err := c.Write(buf); err != nil {
			b.Fatal(err)
		}
		if _, err := io.ReadFull(c, buf); err != nil {
			b.Fatal(err)
		}
		c.Close()
	}
}
