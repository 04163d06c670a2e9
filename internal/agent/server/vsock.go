package server

import (
	"context"
	"fmt"
	"net"
	"strconv"

	"github.com/mdlayher/socket"
	"golang.org/x/sys/unix"
)

// ListenVsock listens on an AF_VSOCK stream port of any local CID: the guest side of
// Firecracker's hybrid vsock (the host connects through its unix socket with
// "CONNECT <port>"). Each host connection is its own session.
func ListenVsock(port uint32) (net.Listener, error) {
	c, err := socket.Socket(unix.AF_VSOCK, unix.SOCK_STREAM, 0, "vsock", nil)
	if err != nil {
		return nil, fmt.Errorf("vsock socket: %w (does the guest kernel have vsock and virtio-vsock?)", err)
	}
	if err := c.Bind(&unix.SockaddrVM{CID: unix.VMADDR_CID_ANY, Port: port}); err != nil {
		c.Close()
		return nil, fmt.Errorf("vsock bind port %d: %w", port, err)
	}
	if err := c.Listen(unix.SOMAXCONN); err != nil {
		c.Close()
		return nil, fmt.Errorf("vsock listen port %d: %w", port, err)
	}
	return &vsockListener{c: c, port: port}, nil
}

type vsockListener struct {
	c    *socket.Conn
	port uint32
}

func (l *vsockListener) Accept() (net.Conn, error) {
	c, sa, err := l.c.Accept(context.Background(), unix.SOCK_CLOEXEC)
	if err != nil {
		return nil, err
	}
	remote := VsockAddr{}
	if vm, ok := sa.(*unix.SockaddrVM); ok {
		remote = VsockAddr{CID: vm.CID, Port: vm.Port}
	}
	return &vsockConn{Conn: c, local: l.Addr(), remote: remote}, nil
}

func (l *vsockListener) Close() error { return l.c.Close() }

func (l *vsockListener) Addr() net.Addr {
	return VsockAddr{CID: unix.VMADDR_CID_ANY, Port: l.port}
}

// VsockAddr is a vsock address (context id and port).
type VsockAddr struct {
	CID, Port uint32
}

// Network is "vsock".
func (VsockAddr) Network() string { return "vsock" }

func (a VsockAddr) String() string {
	return "vsock:" + strconv.FormatUint(uint64(a.CID), 10) + ":" + strconv.FormatUint(uint64(a.Port), 10)
}

type vsockConn struct {
	*socket.Conn
	local, remote net.Addr
}

func (c *vsockConn) LocalAddr() net.Addr  { return c.local }
func (c *vsockConn) RemoteAddr() net.Addr { return c.remote }
