package api

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"syscall"
)

// Client talks to bangerd over its unix socket. The zero value is not usable; use
// NewClient. Safe for concurrent use.
type Client struct {
	socket string
	hc     *http.Client
}

// NewClient returns a client for the daemon listening on socket.
func NewClient(socket string) *Client {
	tr := &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", socket)
		},
		DisableCompression: true,
	}
	return &Client{socket: socket, hc: &http.Client{Transport: tr}}
}

// ErrDaemonDown means nothing listens on the daemon socket.
var ErrDaemonDown = errors.New("bangerd is not running")

// Version calls GET /v1/version.
func (c *Client) Version(ctx context.Context) (VersionResponse, error) {
	var out VersionResponse
	return out, c.do(ctx, http.MethodGet, PathVersion, nil, &out)
}

// Status calls GET /v1/status.
func (c *Client) Status(ctx context.Context) (StatusResponse, error) {
	var out StatusResponse
	return out, c.do(ctx, http.MethodGet, PathStatus, nil, &out)
}

func (c *Client) do(ctx context.Context, method, path string, in, out any) error {
	var body io.Reader
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return fmt.Errorf("encode request: %w", err)
		}
		body = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, "http://bangerd"+path, body)
	if err != nil {
		return err
	}
	if in != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		return c.transportError(method, path, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		return decodeError(resp, method, path)
	}
	if out == nil {
		return nil
	}
	if err := json.NewDecoder(resp.Body).Decode(out); err != nil {
		return fmt.Errorf("bangerd %s %s: decode answer: %w", method, path, err)
	}
	return nil
}

// transportError explains a failure to reach the daemon.
func (c *Client) transportError(method, path string, err error) error {
	if errors.Is(err, syscall.ENOENT) || errors.Is(err, syscall.ECONNREFUSED) {
		return fmt.Errorf("%w (no daemon at %s): start it with `banger system run` (as root), or pass the right --root", ErrDaemonDown, c.socket)
	}
	if errors.Is(err, syscall.EACCES) {
		return fmt.Errorf("bangerd socket %s: permission denied: run banger as the owner the daemon was started for", c.socket)
	}
	return fmt.Errorf("bangerd %s %s: %w", method, path, err)
}

// decodeError turns a non-2xx answer into its *Error.
func decodeError(resp *http.Response, method, path string) error {
	var e Error
	if err := json.NewDecoder(io.LimitReader(resp.Body, 1<<20)).Decode(&e); err != nil || e.Message == "" {
		return fmt.Errorf("bangerd %s %s: HTTP %d", method, path, resp.StatusCode)
	}
	return &e
}
