package sshkeys

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"strings"
	"testing"
	"time"
)

// serve accepts one connection on a fresh 127.0.0.1 listener and runs handle on it.
func serve(t *testing.T, handle func(c *net.TCPConn)) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	t.Cleanup(func() { ln.Close(); <-done })
	go func() {
		defer close(done)
		c, err := ln.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		handle(c.(*net.TCPConn))
	}()
	return ln.Addr().String()
}

func proxyCtx(t *testing.T) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func TestProxyPassesHalfClose(t *testing.T) {
	// The server answers only once it has seen EOF: this works only if the end of stdin
	// reaches it as a half-close while the connection stays open for the answer.
	addr := serve(t, func(c *net.TCPConn) {
		b, err := io.ReadAll(c)
		if err != nil {
			return
		}
		c.Write(bytes.ToUpper(b))
	})
	var out bytes.Buffer
	if err := Proxy(proxyCtx(t), addr, strings.NewReader("hello"), &out); err != nil {
		t.Fatal(err)
	}
	if got, want := out.String(), "HELLO"; got != want {
		t.Errorf("got %q, want %q", got, want)
	}
}

func TestProxyReturnsWhenTheServerCloses(t *testing.T) {
	addr := serve(t, func(c *net.TCPConn) { c.Write([]byte("SSH-2.0-test\r\n")) })
	stdin, stdinW := io.Pipe() // never ends while Proxy runs, like ssh's side of the pipe
	defer stdinW.Close()
	var out bytes.Buffer
	if err := Proxy(proxyCtx(t), addr, stdin, &out); err != nil {
		t.Fatal(err)
	}
	if got, want := out.String(), "SSH-2.0-test\r\n"; got != want {
		t.Errorf("got %q, want %q", got, want)
	}
}

func TestProxyStopsWithItsContext(t *testing.T) {
	hold := make(chan struct{})
	addr := serve(t, func(c *net.TCPConn) { <-hold })
	defer close(hold)
	stdin, stdinW := io.Pipe()
	defer stdinW.Close()
	ctx, cancel := context.WithCancel(proxyCtx(t))
	errc := make(chan error, 1)
	go func() { errc <- Proxy(ctx, addr, stdin, io.Discard) }()
	cancel()
	if err := <-errc; !errors.Is(err, context.Canceled) {
		t.Errorf("got %v, want context.Canceled", err)
	}
}

type failingReader struct{}

func (failingReader) Read([]byte) (int, error) { return 0, errors.New("stdin broke") }

func TestProxyReportsABrokenStdin(t *testing.T) {
	hold := make(chan struct{})
	addr := serve(t, func(c *net.TCPConn) { <-hold })
	defer close(hold)
	err := Proxy(proxyCtx(t), addr, failingReader{}, io.Discard)
	if err == nil || !strings.Contains(err.Error(), "stdin broke") {
		t.Errorf("got %v, want the stdin error", err)
	}
}

func TestProxyDialFailureNamesTheAddress(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close() // nothing listens there now
	err = Proxy(proxyCtx(t), addr, strings.NewReader(""), io.Discard)
	if err == nil || !strings.Contains(err.Error(), addr) || !strings.Contains(err.Error(), "is the VM running") {
		t.Errorf("got %v, want an error naming %s and what to check", err, addr)
	}
}
