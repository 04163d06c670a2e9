package client

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"time"
)

// ErrAgentNotListening means Firecracker accepted the connection but nothing in the
// guest listens on the vsock port (yet): the guest may still be booting; retry.
var ErrAgentNotListening = errors.New("agent is not listening on the vsock port")

// DialHybridVsock connects to a guest vsock port through Firecracker's hybrid vsock
// unix socket: connect to udsPath, send "CONNECT <port>\n", expect "OK <n>\n", after
// which the connection is the raw stream to the guest. It returns the stream, ready
// for Dial.
func DialHybridVsock(ctx context.Context, udsPath string, port uint32) (net.Conn, error) {
	var d net.Dialer
	conn, err := d.DialContext(ctx, "unix", udsPath)
	if err != nil {
		return nil, fmt.Errorf("vsock %s: %w", udsPath, err)
	}
	if dl, ok := ctx.Deadline(); ok {
		_ = conn.SetDeadline(dl)
	}
	stop := context.AfterFunc(ctx, func() { conn.Close() })
	line, rest, err := hybridConnect(conn, port)
	stopped := stop()
	if err != nil || !stopped {
		conn.Close()
		if ctx.Err() != nil {
			return nil, fmt.Errorf("vsock %s port %d: %w", udsPath, port, ctx.Err())
		}
		return nil, fmt.Errorf("vsock %s port %d: %w", udsPath, port, err)
	}
	_ = conn.SetDeadline(time.Time{})
	if !strings.HasPrefix(line, "OK ") {
		conn.Close()
		return nil, fmt.Errorf("vsock %s port %d: unexpected answer %q to CONNECT", udsPath, port, line)
	}
	return &bufferedConn{Conn: conn, r: rest}, nil
}

// hybridConnect sends CONNECT and reads the answer line byte by byte: the guest may
// send data right after OK, and those bytes must stay in the stream.
func hybridConnect(conn net.Conn, port uint32) (string, io.Reader, error) {
	if _, err := fmt.Fprintf(conn, "CONNECT %d\n", port); err != nil {
		return "", nil, err
	}
	br := bufio.NewReaderSize(conn, 64)
	var sb strings.Builder
	for {
		b, err := br.ReadByte()
		if err != nil {
			if errors.Is(err, io.EOF) {
				return "", nil, ErrAgentNotListening
			}
			return "", nil, err
		}
		if b == '\n' {
			return sb.String(), br, nil
		}
		if sb.Len() > 64 {
			return "", nil, fmt.Errorf("answer to CONNECT is not a line: %q", sb.String())
		}
		sb.WriteByte(b)
	}
}

// bufferedConn reads first what was buffered past the CONNECT answer.
type bufferedConn struct {
	net.Conn
	r io.Reader
}

func (c *bufferedConn) Read(p []byte) (int, error) { return c.r.Read(p) }
