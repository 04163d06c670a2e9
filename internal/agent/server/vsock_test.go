package server_test

import (
	"context"
	"errors"
	"math/rand/v2"
	"net"
	"testing"
	"time"

	"banger/internal/agent/client"
	"banger/internal/agent/server"

	"github.com/mdlayher/socket"
	"golang.org/x/sys/unix"
)

// TestVsockListener serves on a real AF_VSOCK port and connects to it through the
// kernel's loopback transport (CID 1), where the host kernel has one.
func TestVsockListener(t *testing.T) {
	port := uint32(40000 + rand.IntN(20000))
	ln, err := server.ListenVsock(port)
	if err != nil {
		t.Skipf("no vsock here: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- server.New(server.Config{Version: "vsock"}).Serve(ctx, ln) }()
	t.Cleanup(func() { cancel(); <-done })

	c, err := socket.Socket(unix.AF_VSOCK, unix.SOCK_STREAM, 0, "vsock", nil)
	if err != nil {
		t.Skipf("vsock socket: %v", err)
	}
	dctx, dcancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer dcancel()
	if _, err := c.Connect(dctx, &unix.SockaddrVM{CID: unix.VMADDR_CID_LOCAL, Port: port}); err != nil {
		c.Close()
		if errors.Is(err, unix.ENODEV) || errors.Is(err, unix.ECONNRESET) || errors.Is(err, unix.EADDRNOTAVAIL) || errors.Is(err, unix.ENETUNREACH) ||
			errors.Is(err, unix.ETIMEDOUT) || errors.Is(err, context.DeadlineExceeded) {
			t.Skipf("no vsock loopback transport (modprobe vsock_loopback): %v", err)
		}
		t.Fatalf("connect to vsock port %d: %v", port, err)
	}
	cl, err := client.Dial(dctx, c, client.Options{})
	if err != nil {
		t.Fatalf("Dial over vsock: %v", err)
	}
	defer cl.Close()
	if h, err := cl.Health(dctx); err != nil || h.Version != "vsock" {
		t.Errorf("health over vsock: %+v %v", h, err)
	}
	var _ net.Listener = ln
	if got := ln.Addr().Network(); got != "vsock" {
		t.Errorf("listener network: got %q, want vsock", got)
	}
}
