// Package client is the host side of the guest agent's control API: a typed client
// used by bangerd over whichever byte stream reaches the guest:
//
//	Firecracker: conn, err := client.DialHybridVsock(ctx, vsockUDSPath, proto.DefaultVsockPort)
//	QEMU:        conn, err := net.Dial("unix", chardevSocketPath) // virtserialport name=banger.agent
//	then:        c, err := client.Dial(ctx, conn, client.Options{})
//
// A Client is one session. When it ends (c.Done()), dial again: the agent goes
// back to waiting for a handshake, on vsock and on the serial port alike.
package client

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"time"

	"banger/internal/agent/proto"

	"github.com/hashicorp/yamux"
)

// Client is a session with one agent. It is safe for concurrent use: every call
// runs on its own multiplexed stream. A Client does not reconnect; when Done is
// closed, dial again.
type Client struct {
	sess    *yamux.Session
	version string
}

// Options tune Dial. The zero value is fine.
type Options struct {
	// Logger receives the multiplexer's diagnostics; nil discards them.
	Logger *slog.Logger
}

// Dial runs the link handshake on conn and starts a session. conn is any stream
// reaching the agent; Dial takes ownership of it and closes it on failure and in
// Close. ctx bounds the handshake only.
func Dial(ctx context.Context, conn io.ReadWriteCloser, opts Options) (*Client, error) {
	type result struct {
		r       io.Reader
		version string
		err     error
	}
	// the handshake blocks in Read, which only closing conn can interrupt
	done := make(chan result, 1)
	go func() {
		r, v, err := proto.HostHandshake(ctx, conn)
		done <- result{r, v, err}
	}()
	var res result
	select {
	case res = <-done:
	case <-ctx.Done():
		conn.Close()
		res = <-done
	}
	if res.err != nil {
		conn.Close()
		return nil, res.err
	}
	sess, err := yamux.Client(proto.LinkConn{Reader: res.r, Writer: conn, Closer: conn}, proto.YamuxConfig(opts.Logger))
	if err != nil {
		conn.Close()
		return nil, fmt.Errorf("agent session: %w", err)
	}
	return &Client{sess: sess, version: res.version}, nil
}

// AgentVersion is the version the agent announced in the handshake.
func (c *Client) AgentVersion() string { return c.version }

// Close ends the session and closes the underlying stream. Calls in flight fail.
func (c *Client) Close() error { return c.sess.Close() }

// Done is closed when the session has ended, whatever the reason.
func (c *Client) Done() <-chan struct{} { return c.sess.CloseChan() }

// Ping measures a round trip of the multiplexer itself, without a call.
func (c *Client) Ping() (time.Duration, error) {
	d, err := c.sess.Ping()
	if err != nil {
		return 0, fmt.Errorf("agent ping: %w", err)
	}
	return d, nil
}

// stream is one call in flight.
type stream struct {
	st   *yamux.Stream
	conn *proto.Conn
	stop func() bool // detaches the ctx watcher
}

// open starts a call: it opens a stream, sends the request and reads the response.
// ctx cancellation aborts the stream (reads and writes fail at once).
func (c *Client) open(ctx context.Context, name string, args any) (*stream, json.RawMessage, error) {
	if err := ctx.Err(); err != nil {
		return nil, nil, fmt.Errorf("agent %s: %w", name, err)
	}
	st, err := c.sess.OpenStream()
	if err != nil {
		return nil, nil, fmt.Errorf("agent %s: open stream: %w", name, err)
	}
	s := &stream{st: st, conn: proto.NewConn(st)}
	s.stop = context.AfterFunc(ctx, func() {
		_ = st.SetDeadline(time.Now())
		st.Close()
	})
	req := proto.Request{Call: name}
	if args != nil {
		b, err := json.Marshal(args)
		if err != nil {
			s.close()
			return nil, nil, fmt.Errorf("agent %s: encode arguments: %w", name, err)
		}
		req.Args = b
	}
	if err := s.conn.WriteJSON(proto.FrameRequest, req); err != nil {
		s.close()
		return nil, nil, s.wrap(ctx, name, err)
	}
	f, err := s.conn.ReadFrame()
	if err != nil {
		s.close()
		return nil, nil, s.wrap(ctx, name, fmt.Errorf("read response: %w", err))
	}
	if f.Type != proto.FrameResponse {
		s.close()
		return nil, nil, fmt.Errorf("agent %s: expected a response frame, got %s", name, f.Type)
	}
	var resp proto.Response
	if err := proto.DecodeJSON(f, &resp); err != nil {
		s.close()
		return nil, nil, fmt.Errorf("agent %s: %w", name, err)
	}
	if resp.Error != nil {
		s.close()
		return nil, nil, fmt.Errorf("agent %s: %w", name, resp.Error)
	}
	return s, resp.Result, nil
}

func (s *stream) close() {
	s.stop()
	s.st.Close()
}

// wrap labels err with the call and prefers ctx's error when ctx caused it.
func (s *stream) wrap(ctx context.Context, name string, err error) error {
	if ctx.Err() != nil {
		return fmt.Errorf("agent %s: %w", name, ctx.Err())
	}
	return fmt.Errorf("agent %s: %w", name, err)
}

// simple runs a call that is one request and one response.
func (c *Client) simple(ctx context.Context, name string, args, result any) error {
	s, raw, err := c.open(ctx, name, args)
	if err != nil {
		return err
	}
	defer s.close()
	if result == nil {
		return nil
	}
	if err := json.Unmarshal(raw, result); err != nil {
		return fmt.Errorf("agent %s: decode result: %w", name, err)
	}
	return nil
}

// Health reports the agent's version, uptime and boot timings.
func (c *Client) Health(ctx context.Context) (proto.Health, error) {
	var h proto.Health
	err := c.simple(ctx, proto.CallHealth, nil, &h)
	return h, err
}

// Shutdown asks the guest to power off (proto.ActionPoweroff) or reboot
// (proto.ActionReboot). It returns once the agent has accepted; the session then
// ends as the guest goes down.
func (c *Client) Shutdown(ctx context.Context, action string) error {
	return c.simple(ctx, proto.CallShutdown, proto.ShutdownArgs{Action: action}, nil)
}

// SetAuthorizedKeys replaces the keys the guest's SSH server accepts with lines in
// authorized_keys format, and returns how many keys it now holds. Lines that do not
// parse are refused as a whole (proto.ErrBadRequest), leaving the old set in place.
func (c *Client) SetAuthorizedKeys(ctx context.Context, lines []string) (int, error) {
	var r proto.AuthorizedKeysResult
	err := c.simple(ctx, proto.CallAuthorizedKeys, proto.AuthorizedKeysArgs{Keys: lines}, &r)
	return r.Count, err
}

// Provision gives the guest its SSH material in one call, right after Dial: the
// host key (whose public half the host has put in known_hosts) and the authorized
// keys. Both are validated before either is applied; invalid material is refused
// as proto.ErrBadRequest and changes nothing. A host key makes the guest's SSH
// listen if it did not (an agent that booted without one), or serve new
// connections with the new key. It returns the state after the call.
func (c *Client) Provision(ctx context.Context, m proto.ProvisionArgs) (proto.ProvisionResult, error) {
	var r proto.ProvisionResult
	err := c.simple(ctx, proto.CallProvision, m, &r)
	return r, err
}

// SetHostKey installs the guest's SSH host key, an unencrypted private key in
// OpenSSH or PEM format (see Provision).
func (c *Client) SetHostKey(ctx context.Context, privateKeyPEM []byte) error {
	if len(privateKeyPEM) == 0 {
		return fmt.Errorf("agent %s: empty host key", proto.CallProvision)
	}
	_, err := c.Provision(ctx, proto.ProvisionArgs{HostKey: string(privateKeyPEM)})
	return err
}

// RawCall sends an arbitrary request and returns the agent's response error, if any.
// It exists for tests and diagnostics of the protocol itself.
func (c *Client) RawCall(ctx context.Context, name string, args json.RawMessage) error {
	s, _, err := c.open(ctx, name, args)
	if err != nil {
		return err
	}
	s.close()
	return nil
}

// OpenRawStream opens a stream and hands it over as is, for tests that must send
// malformed frames. The caller closes it.
func (c *Client) OpenRawStream() (io.ReadWriteCloser, error) {
	st, err := c.sess.OpenStream()
	if err != nil {
		return nil, fmt.Errorf("agent: open stream: %w", err)
	}
	return st, nil
}
