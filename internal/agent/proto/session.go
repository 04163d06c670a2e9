package proto

import (
	"io"
	"log/slog"
	"time"

	"github.com/hashicorp/yamux"
)

// YamuxConfig is the multiplexer configuration both sides use. Keepalives matter on
// a serial port: with no connection semantics, a host that vanished without a
// hangup is only noticed when a ping goes unanswered.
func YamuxConfig(logger *slog.Logger) *yamux.Config {
	c := yamux.DefaultConfig()
	c.AcceptBacklog = 64
	c.EnableKeepAlive = true
	c.KeepAliveInterval = 15 * time.Second
	c.ConnectionWriteTimeout = 10 * time.Second
	c.MaxStreamWindowSize = 1 << 20
	c.StreamOpenTimeout = 30 * time.Second
	c.StreamCloseTimeout = time.Minute
	c.LogOutput = nil
	if logger == nil {
		c.LogOutput = io.Discard
	} else {
		c.Logger = slog.NewLogLogger(logger.Handler(), slog.LevelDebug)
	}
	return c
}

// LinkConn joins the reader returned by a handshake with the original stream's
// writer and closer, for handing to yamux.
type LinkConn struct {
	io.Reader
	io.Writer
	io.Closer
}
