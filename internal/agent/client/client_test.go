package client_test

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"banger/internal/agent/client"
	"banger/internal/agent/server"
)

// chanListener is a net.Listener fed by hand.
type chanListener struct {
	conns  chan net.Conn
	closed chan struct{}
}

func (l *chanListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.conns:
		return c, nil
	case <-l.closed:
		return nil, net.ErrClosed
	}
}
func (l *chanListener) Close() error   { close(l.closed); return nil }
func (l *chanListener) Addr() net.Addr { return &net.UnixAddr{Name: "fake-vsock", Net: "unix"} }

// fakeFirecracker plays Firecracker's hybrid vsock as its documentation describes:
// the host connects to the unix socket, writes "CONNECT <port>\n"; if a guest
// listener exists on that port the answer is "OK <hostport>\n" and the stream is
// raw from then on, otherwise the connection is closed without an answer.
func fakeFirecracker(t *testing.T, guestPort uint32, guest *chanListener, greeting string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "v.sock")
	ln, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			line, err := bufio.NewReader(io.LimitReader(c, 64)).ReadString('\n')
			var port uint32
			if err != nil || !strings.HasPrefix(line, "CONNECT ") {
				c.Close()
				continue
			}
			if _, err := fmt.Sscanf(line, "CONNECT %d\n", &port); err != nil || port != guestPort || guest == nil {
				c.Close()
				continue
			}
			fmt.Fprintf(c, "OK 1073741824\n%s", greeting)
			guest.conns <- c
		}
	}()
	return path
}

func TestDialHybridVsock(t *testing.T) {
	guest := &chanListener{conns: make(chan net.Conn), closed: make(chan struct{})}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- server.New(server.Config{Version: "vsock-test"}).Serve(ctx, guest) }()
	t.Cleanup(func() { cancel(); <-done })
	uds := fakeFirecracker(t, 1024, guest, "")

	dctx, dcancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer dcancel()
	conn, err := client.DialHybridVsock(dctx, uds, 1024)
	if err != nil {
		t.Fatalf("DialHybridVsock: %v", err)
	}
	c, err := client.Dial(dctx, conn, client.Options{})
	if err != nil {
		t.Fatalf("Dial over hybrid vsock: %v", err)
	}
	defer c.Close()
	var out bytes.Buffer
	if st, err := c.Exec(dctx, client.ExecRequest{Argv: []string{"echo", "through vsock"}, Stdout: &out}); err != nil || st.Code != 0 || out.String() != "through vsock\n" {
		t.Errorf("exec over vsock: %+v %q %v", st, out.String(), err)
	}
	if c.AgentVersion() != "vsock-test" {
		t.Errorf("agent version: got %q", c.AgentVersion())
	}

	// nothing listens on 2048 in the guest: EOF without OK
	if _, err := client.DialHybridVsock(dctx, uds, 2048); !errors.Is(err, client.ErrAgentNotListening) {
		t.Errorf("port without a listener: got %v, want ErrAgentNotListening", err)
	}
	if _, err := client.DialHybridVsock(dctx, filepath.Join(t.TempDir(), "none.sock"), 1024); err == nil {
		t.Error("missing socket: got nil, want an error")
	}
}

func TestDialHybridVsockKeepsBytesAfterOK(t *testing.T) {
	guest := &chanListener{conns: make(chan net.Conn, 1), closed: make(chan struct{})}
	uds := fakeFirecracker(t, 7, guest, "early-bytes")
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	conn, err := client.DialHybridVsock(ctx, uds, 7)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	buf := make([]byte, len("early-bytes"))
	if _, err := io.ReadFull(conn, buf); err != nil || string(buf) != "early-bytes" {
		t.Errorf("bytes after OK: got %q, %v", buf, err)
	}
	(<-guest.conns).Close()
}

func TestDialTimesOutOnSilentPeer(t *testing.T) {
	a, b := net.Pipe()
	defer b.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	go func() { _, _ = io.Copy(io.Discard, b) }()
	if _, err := client.Dial(ctx, a, client.Options{}); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("silent peer: got %v, want deadline exceeded", err)
	}
}
