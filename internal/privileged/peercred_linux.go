package privileged

import (
	"context"
	"errors"
	"fmt"
	"net"

	"golang.org/x/sys/unix"
)

// peerCred is who is on the other end of a connection, as the kernel recorded it
// when the peer called connect(2). It cannot be forged by the peer.
type peerCred struct {
	UID int
	GID int
	PID int
	// Err is set when the credentials could not be read; such a peer is refused.
	Err error
}

// unknownPeer is logged when a connection's credentials are missing.
var unknownPeer = peerCred{UID: -1, GID: -1, PID: -1}

type peerKey struct{}

// withPeerCred is the http.Server ConnContext hook: it reads SO_PEERCRED once per
// connection and stores it in the connection's context, where every request on that
// connection finds it.
func withPeerCred(ctx context.Context, c net.Conn) context.Context {
	return context.WithValue(ctx, peerKey{}, readPeerCred(c))
}

// peerFrom returns the credentials stored by withPeerCred.
func peerFrom(ctx context.Context) peerCred {
	p, ok := ctx.Value(peerKey{}).(peerCred)
	if !ok {
		p = unknownPeer
		p.Err = errors.New("no peer credentials for this connection")
	}
	return p
}

func readPeerCred(c net.Conn) peerCred {
	uc, ok := c.(*net.UnixConn)
	if !ok {
		p := unknownPeer
		p.Err = fmt.Errorf("connection is %T, not a unix socket: peer credentials unavailable", c)
		return p
	}
	raw, err := uc.SyscallConn()
	if err != nil {
		p := unknownPeer
		p.Err = fmt.Errorf("peer credentials: %w", err)
		return p
	}
	var cred *unix.Ucred
	var credErr error
	if err := raw.Control(func(fd uintptr) {
		cred, credErr = unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED)
	}); err != nil {
		credErr = err
	}
	if credErr != nil {
		p := unknownPeer
		p.Err = fmt.Errorf("read SO_PEERCRED: %w", credErr)
		return p
	}
	return peerCred{UID: int(cred.Uid), GID: int(cred.Gid), PID: int(cred.Pid)}
}
