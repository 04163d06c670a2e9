package firecracker

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"time"
)

// MaxBodySize is the largest request body Firecracker's API server accepts.
const MaxBodySize = 51200

// Client speaks Firecracker's REST API over its unix socket. Every call takes
// a context; the client sets no timeouts of its own. Safe for concurrent use,
// although Firecracker handles one request at a time.
type Client struct {
	socket string
	http   *http.Client
}

// NewClient returns a client of the API socket at socketPath (Firecracker's
// --api-sock; for a jailed Firecracker, the socket's path on the host).
func NewClient(socketPath string) *Client {
	tr := &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", socketPath)
		},
		MaxIdleConns:    1,
		IdleConnTimeout: 30 * time.Second,
	}
	return &Client{socket: socketPath, http: &http.Client{Transport: tr}}
}

// SocketPath is the API socket the client talks to.
func (c *Client) SocketPath() string { return c.socket }

// Close drops idle connections to the socket.
func (c *Client) Close() { c.http.CloseIdleConnections() }

// APIError is Firecracker's refusal of a call: its status and fault_message.
type APIError struct {
	Method string
	Path   string
	Status int
	// FaultMessage is the server's fault_message (or its raw body when that
	// was not the JSON error shape).
	FaultMessage string
}

func (e *APIError) Error() string {
	return fmt.Sprintf("firecracker %s %s: %d: %s", e.Method, e.Path, e.Status, e.FaultMessage)
}

// do sends one request. in, when non-nil, is the JSON body; out, when
// non-nil, receives a 200 answer's body.
func (c *Client) do(ctx context.Context, method, path string, in, out any) error {
	var body io.Reader
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return fmt.Errorf("firecracker %s %s: encode body: %w", method, path, err)
		}
		if len(b) > MaxBodySize {
			return fmt.Errorf("firecracker %s %s: body is %d bytes, over Firecracker's limit of %d", method, path, len(b), MaxBodySize)
		}
		body = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, "http://localhost"+path, body)
	if err != nil {
		return fmt.Errorf("firecracker %s %s: %w", method, path, err)
	}
	req.Header.Set("Accept", "application/json")
	if in != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return fmt.Errorf("firecracker %s %s: %w (is firecracker running with --api-sock %s?)", method, path, err, c.socket)
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return fmt.Errorf("firecracker %s %s: read answer: %w", method, path, err)
	}
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		var fault struct {
			FaultMessage string `json:"fault_message"`
		}
		msg := strings.TrimSpace(string(raw))
		if json.Unmarshal(raw, &fault) == nil && fault.FaultMessage != "" {
			msg = fault.FaultMessage
		}
		if msg == "" {
			msg = http.StatusText(resp.StatusCode)
		}
		return &APIError{Method: method, Path: path, Status: resp.StatusCode, FaultMessage: msg}
	}
	if out != nil {
		if err := json.Unmarshal(raw, out); err != nil {
			return fmt.Errorf("firecracker %s %s: decode answer: %w", method, path, err)
		}
	}
	return nil
}

// PutMachineConfig sets vCPUs and memory. Pre-boot only.
func (c *Client) PutMachineConfig(ctx context.Context, m MachineConfig) error {
	return c.do(ctx, http.MethodPut, "/machine-config", m, nil)
}

// GetMachineConfig returns the machine configuration (Firecracker's defaults
// before any PUT).
func (c *Client) GetMachineConfig(ctx context.Context) (MachineConfig, error) {
	var m MachineConfig
	err := c.do(ctx, http.MethodGet, "/machine-config", nil, &m)
	return m, err
}

// PutBootSource sets the kernel, initrd and boot arguments. Pre-boot only.
func (c *Client) PutBootSource(ctx context.Context, b BootSource) error {
	return c.do(ctx, http.MethodPut, "/boot-source", b, nil)
}

// PutDrive creates or updates the drive d.DriveID. Pre-boot only.
func (c *Client) PutDrive(ctx context.Context, d Drive) error {
	path := "/drives/" + d.DriveID
	if err := ValidateDeviceID(d.DriveID); err != nil {
		return fmt.Errorf("firecracker PUT %s: %w", path, err)
	}
	return c.do(ctx, http.MethodPut, path, d, nil)
}

// PutNetworkInterface creates the interface n.IfaceID. Pre-boot only.
func (c *Client) PutNetworkInterface(ctx context.Context, n NetworkInterface) error {
	path := "/network-interfaces/" + n.IfaceID
	if err := ValidateDeviceID(n.IfaceID); err != nil {
		return fmt.Errorf("firecracker PUT %s: %w", path, err)
	}
	return c.do(ctx, http.MethodPut, path, n, nil)
}

// PutVsock creates the hybrid vsock device. Firecracker binds v.UDSPath at
// once: the path must not exist (Machine.Configure unlinks a stale one). Pre-boot only.
func (c *Client) PutVsock(ctx context.Context, v Vsock) error {
	return c.do(ctx, http.MethodPut, "/vsock", v, nil)
}

// PutLogger sets up Firecracker's log. The file (or FIFO) must exist.
func (c *Client) PutLogger(ctx context.Context, l Logger) error {
	return c.do(ctx, http.MethodPut, "/logger", l, nil)
}

// PutMetrics sets up Firecracker's metrics file; once per process. The file must exist.
func (c *Client) PutMetrics(ctx context.Context, m Metrics) error {
	return c.do(ctx, http.MethodPut, "/metrics", m, nil)
}

// Action runs a synchronous action: InstanceStart (once), SendCtrlAltDel
// (x86, after start) or FlushMetrics.
func (c *Client) Action(ctx context.Context, a ActionType) error {
	return c.do(ctx, http.MethodPut, "/actions", InstanceActionInfo{ActionType: a}, nil)
}

// PatchVM pauses or resumes a started microVM.
func (c *Client) PatchVM(ctx context.Context, state VMState) error {
	return c.do(ctx, http.MethodPatch, "/vm", VM{State: state}, nil)
}

// CreateSnapshot writes the microVM state and memory. The microVM must be paused.
func (c *Client) CreateSnapshot(ctx context.Context, p SnapshotCreateParams) error {
	return c.do(ctx, http.MethodPut, "/snapshot/create", p, nil)
}

// LoadSnapshot restores a snapshot into a fresh process (nothing but the
// logger and metrics configured).
func (c *Client) LoadSnapshot(ctx context.Context, p SnapshotLoadParams) error {
	return c.do(ctx, http.MethodPut, "/snapshot/load", p, nil)
}

// InstanceInfo returns GET /: the instance id, state and version.
func (c *Client) InstanceInfo(ctx context.Context) (InstanceInfo, error) {
	var i InstanceInfo
	err := c.do(ctx, http.MethodGet, "/", nil, &i)
	return i, err
}

// APIVersion is the Firecracker API version this client is written and tested
// against: its requests are validated by the contract tests against the official
// spec of this version (fctest/testdata), and a test fails if that copy says another.
const APIVersion = "1.16.1"

// Version returns Firecracker's version, e.g. "1.16.1".
func (c *Client) Version(ctx context.Context) (string, error) {
	var v FirecrackerVersion
	err := c.do(ctx, http.MethodGet, "/version", nil, &v)
	return v.FirecrackerVersion, err
}

// readyPoll is how often WaitReady asks a starting process.
const readyPoll = 5 * time.Millisecond

// WaitReady waits until the API answers GET /version, or ctx is done, or
// exited (when non-nil) is closed: a process that died will never answer.
// Firecracker creates its socket a few milliseconds after it starts and
// offers no other readiness signal, so this asks again every few milliseconds.
func (c *Client) WaitReady(ctx context.Context, exited <-chan struct{}) error {
	t := time.NewTicker(readyPoll)
	defer t.Stop()
	for {
		_, err := c.Version(ctx)
		if err == nil {
			return nil
		}
		var apiErr *APIError
		if errors.As(err, &apiErr) {
			return err // it answered, and refused: waiting will not help
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("firecracker API at %s not ready: %w (last error: %v)", c.socket, ctx.Err(), err)
		case <-exited:
			return fmt.Errorf("firecracker API at %s: the process exited before its API answered (see its log): %v", c.socket, err)
		case <-t.C:
		}
	}
}
