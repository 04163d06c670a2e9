package fctest

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"path/filepath"
	"testing"
	"time"

	"banger/internal/agent/client"
)

// echoGuest is a guest listener on a unix socket that echoes every stream.
func echoGuest(t *testing.T) string {
	t.Helper()
	p := filepath.Join(ShortTempDir(t), "guest.sock")
	ln, err := net.Listen("unix", p)
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
			go func() {
				defer c.Close()
				_, _ = io.Copy(c, c)
			}()
		}
	}()
	return p
}

// vsockServer is a contract server whose guest listens on port 1024 only,
// with PUT /vsock done; it returns the server and the vsock socket.
func vsockServer(t *testing.T, withGuest bool) (*Server, string) {
	t.Helper()
	opts := Options{}
	if withGuest {
		guest := echoGuest(t)
		opts.VsockDial = func(port uint32) (net.Conn, error) {
			if port != 1024 {
				return nil, fmt.Errorf("nothing on port %d", port)
			}
			return net.Dial("unix", guest)
		}
	}
	s := Start(t, MustSpec(t, SpecV1161), opts)
	uds := filepath.Join(ShortTempDir(t), "v.sock")
	if code, b := newRawClient(t, s.SocketPath()).do(req{"PUT", "/vsock", body(`{"guest_cid":3,"uds_path":"` + uds + `"}`)}); code != http.StatusNoContent {
		t.Fatalf("PUT /vsock: %d %s", code, b)
	}
	return s, uds
}

// TestHybridVsock holds the fake's vsock device to Firecracker's hybrid
// protocol, through the agent's own host-side dialer.
func TestHybridVsock(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	s, uds := vsockServer(t, true)

	conn, err := client.DialHybridVsock(ctx, uds, 1024)
	if err != nil {
		t.Fatalf("CONNECT 1024: %v", err)
	}
	defer conn.Close()
	msg := []byte("hello through vsock\n")
	if _, err := conn.Write(msg); err != nil {
		t.Fatal(err)
	}
	got := make([]byte, len(msg))
	if _, err := io.ReadFull(conn, got); err != nil || string(got) != string(msg) {
		t.Fatalf("echo: got %q, %v; want %q", got, err, msg)
	}

	if _, err := client.DialHybridVsock(ctx, uds, 7); !errors.Is(err, client.ErrAgentNotListening) {
		t.Errorf("CONNECT 7 (nothing listens): got %v, want EOF without OK (ErrAgentNotListening)", err)
	}

	raw, err := net.Dial("unix", uds)
	if err != nil {
		t.Fatal(err)
	}
	defer raw.Close()
	if _, err := raw.Write([]byte("HELLO 1024\n")); err != nil {
		t.Fatal(err)
	}
	_ = raw.SetReadDeadline(time.Now().Add(5 * time.Second))
	if b, err := io.ReadAll(raw); err != nil || len(b) != 0 {
		t.Errorf("a malformed CONNECT: got %q, %v; want the connection closed unanswered", b, err)
	}

	// Closing the server ends the streams it bridges.
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	_ = conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := conn.Read(make([]byte, 1)); err == nil {
		t.Error("a bridged stream survived the server's Close")
	}
}

// TestHybridVsockNoGuest: without a guest side nothing listens on any port.
func TestHybridVsockNoGuest(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_, uds := vsockServer(t, false)
	if _, err := client.DialHybridVsock(ctx, uds, 1024); !errors.Is(err, client.ErrAgentNotListening) {
		t.Errorf("CONNECT 1024: got %v, want ErrAgentNotListening", err)
	}
}

// TestBoot: the boot arguments a fake guest sees carry what Firecracker appends.
func TestBoot(t *testing.T) {
	s := Start(t, MustSpec(t, SpecV1161), Options{})
	kernel, disk := files(t)
	c := newRawClient(t, s.SocketPath())
	for _, r := range []req{
		{"PUT", "/boot-source", body(`{"kernel_image_path":"` + kernel + `","boot_args":"console=ttyS0 reboot=k"}`)},
		{"PUT", "/drives/rootfs", body(`{"drive_id":"rootfs","is_root_device":true,"is_read_only":true,"path_on_host":"` + disk + `"}`)},
	} {
		if code, b := c.do(r); code != http.StatusNoContent {
			t.Fatalf("%s %s: %d %s", r.method, r.path, code, b)
		}
	}
	want := Boot{BootArgs: "console=ttyS0 reboot=k pci=off root=/dev/vda ro"}
	if got := s.Boot(); got != want {
		t.Errorf("Boot: got %+v, want %+v", got, want)
	}
}
