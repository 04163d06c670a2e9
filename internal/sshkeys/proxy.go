package sshkeys

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"time"
)

// proxyDialTimeout bounds Proxy's connect when ctx has no earlier deadline.
const proxyDialTimeout = 15 * time.Second

// Proxy connects to addr ("IP:port") over TCP and pipes stdin to it and it to stdout:
// the core of `banger vm ssh-proxy`, which ssh runs as its ProxyCommand once the CLI has
// asked bangerd for the VM's address.
//
// Half-closes are passed on: when stdin ends, the write side of the connection is shut
// so the server sees EOF while its answer still flows back. Proxy returns when the
// server has finished sending (nil after a clean EOF), when either direction fails (the
// connection is then closed), or when ctx ends (ctx's error). A read of stdin that is
// still blocked then is left behind, since an io.Reader cannot be interrupted: the
// caller is expected to exit, as ssh's ProxyCommand does.
func Proxy(ctx context.Context, addr string, stdin io.Reader, stdout io.Writer) error {
	// ssh's ConnectTimeout does not reach a ProxyCommand: bound the connect here.
	d := net.Dialer{Timeout: proxyDialTimeout}
	conn, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return fmt.Errorf("ssh-proxy: connect to %s: %w: is the VM running and its SSH server up?", addr, err)
	}
	defer conn.Close()
	stop := context.AfterFunc(ctx, func() { conn.Close() })
	defer stop()

	upErr := make(chan error, 1)
	go func() {
		_, err := io.Copy(conn, stdin) // nil at EOF
		if err == nil {
			err = conn.(*net.TCPConn).CloseWrite()
		}
		upErr <- err // before the Close below, so the reader below finds why it ended
		if err != nil {
			conn.Close() // unblocks the copy below: a broken upstream ends the session
		}
	}()

	_, downErr := io.Copy(stdout, conn)
	if ctx.Err() != nil {
		return ctx.Err()
	}
	select {
	case err := <-upErr:
		if err != nil && !errors.Is(err, net.ErrClosed) {
			return fmt.Errorf("ssh-proxy: to %s: %w", addr, err)
		}
	default: // stdin still open: the server has finished anyway
	}
	if downErr != nil {
		return fmt.Errorf("ssh-proxy: from %s: %w", addr, downErr)
	}
	return nil
}
