package api

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"time"
)

// VM paths. PathVM + "{ref}" + a suffix addresses one VM by name or id.
const (
	PathVMs = Prefix + "/vms" // GET list, POST create (VMCreateRequest)
	PathVM  = Prefix + "/vms/"
	// Suffixes after PathVM+{ref}: POST /start, /stop, /restart, /kill; GET /wait;
	// GET /logs (?follow=1); GET /attach (Upgrade: banger-attach) for exec and cp.
	// DELETE PathVM+{ref} (?force=1) removes.
)

// UpgradeAttach is the protocol name of the attach upgrade.
const UpgradeAttach = "banger-attach"

// VMCreateRequest creates (and with Start, boots) a VM.
type VMCreateRequest struct {
	Name      string   `json:"name,omitempty"`
	Image     string   `json:"image"`
	Kernel    string   `json:"kernel,omitempty"`
	Driver    string   `json:"driver,omitempty"`
	CPUs      int      `json:"cpus,omitempty"`
	MemoryMiB int      `json:"memory_mib,omitempty"`
	DiskBytes int64    `json:"disk_bytes,omitempty"`
	Env       []string `json:"env,omitempty"`
	Publish   []string `json:"publish,omitempty"`
	// DiskStrategy picks how the root disk is made; "" is the configured default.
	DiskStrategy string `json:"disk_strategy,omitempty"`
	// Start boots the VM and waits until its agent and SSH are ready (vm run).
	Start bool `json:"start,omitempty"`
}

// VMStopRequest tunes stop and restart.
type VMStopRequest struct {
	Timeout time.Duration `json:"timeout_ns,omitempty"`
}

// VM is one VM as the API shows it.
type VM struct {
	ID      string `json:"id"`
	Name    string `json:"name"`
	State   string `json:"state"`
	IP      string `json:"ip,omitempty"`
	DNSName string `json:"dns_name"`
	Image   string `json:"image"`
	// ImageName is the image's first tag (e.g. "busybox:latest"); empty when the
	// image has none left.
	ImageName string   `json:"image_name,omitempty"`
	Kernel    string   `json:"kernel"`
	Driver    string   `json:"driver"`
	CPUs      int      `json:"cpus"`
	MemoryMiB int      `json:"memory_mib"`
	DiskBytes int64    `json:"disk_bytes"`
	Env       []string `json:"env,omitempty"`
	Publish   []string `json:"publish,omitempty"`
	// Published is Publish resolved: "127.0.0.1:8080 → 80/tcp", with the host
	// address the forward listens on even when the user gave none.
	Published []string  `json:"published,omitempty"`
	CreatedAt time.Time `json:"created_at"`
	// Runtime, when running.
	PID         int    `json:"pid,omitempty"`
	Tap         string `json:"tap,omitempty"`
	VsockCID    uint32 `json:"vsock_cid,omitempty"`
	APISocket   string `json:"api_socket,omitempty"`
	AgentSocket string `json:"agent_socket,omitempty"`
	ConsoleLog  string `json:"console_log"`
	// Disk is the copy-on-write root.
	Disk VMDisk `json:"disk"`
	// Timings of the last start.
	Timings    *Timings `json:"timings,omitempty"`
	StartError string   `json:"start_error,omitempty"`
}

// VMDisk is a VM's root disk.
type VMDisk struct {
	Strategy  string `json:"strategy"`
	Path      string `json:"path"`
	Format    string `json:"format"`
	SizeBytes int64  `json:"size_bytes"`
	Base      string `json:"base"`
	// Note says why auto passed over a faster strategy, when it did.
	Note string `json:"note,omitempty"`
}

// Timings is where a start's time went, phase by phase.
type Timings struct {
	HostSetup  time.Duration `json:"host_setup_ns"`
	Tap        time.Duration `json:"tap_ns"`
	NAT        time.Duration `json:"nat_ns"`
	Disk       time.Duration `json:"disk_ns"`
	VMMLaunch  time.Duration `json:"vmm_launch_ns"`
	AgentReady time.Duration `json:"agent_ready_ns"`
	SSHReady   time.Duration `json:"ssh_ready_ns"`
	Total      time.Duration `json:"total_ns"`
	At         time.Time     `json:"at"`
}

// CreateVM creates a VM, booting it when req.Start.
func (c *Client) CreateVM(ctx context.Context, req VMCreateRequest) (VM, error) {
	var out VM
	return out, c.do(ctx, http.MethodPost, PathVMs, req, &out)
}

// VMs lists VMs.
func (c *Client) VMs(ctx context.Context) ([]VM, error) {
	var out []VM
	return out, c.do(ctx, http.MethodGet, PathVMs, nil, &out)
}

// VM inspects one VM.
func (c *Client) VM(ctx context.Context, ref string) (VM, error) {
	var out VM
	return out, c.do(ctx, http.MethodGet, PathVM+url.PathEscape(ref), nil, &out)
}

// VMAction runs start, stop, restart or kill on a VM.
func (c *Client) VMAction(ctx context.Context, ref, action string, req *VMStopRequest) (VM, error) {
	var out VM
	method := http.MethodPost
	var in any
	if req != nil {
		in = req
	}
	return out, c.do(ctx, method, PathVM+url.PathEscape(ref)+"/"+action, in, &out)
}

// RemoveVM removes a VM (force: even a running one).
func (c *Client) RemoveVM(ctx context.Context, ref string, force bool) (VM, error) {
	var out VM
	p := PathVM + url.PathEscape(ref)
	if force {
		p += "?force=1"
	}
	return out, c.do(ctx, http.MethodDelete, p, nil, &out)
}

// Logs streams a VM's console log (follow: keep going as it grows).
func (c *Client) Logs(ctx context.Context, ref string, follow bool) (*http.Response, error) {
	p := PathVM + url.PathEscape(ref) + "/logs"
	if follow {
		p += "?follow=1"
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://bangerd"+p, nil)
	if err != nil {
		return nil, err
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		return nil, c.transportError(http.MethodGet, p, err)
	}
	if resp.StatusCode/100 != 2 {
		defer resp.Body.Close()
		return nil, decodeError(resp, http.MethodGet, p)
	}
	return resp, nil
}

// Attach opens the attach stream to a VM's agent: after it returns, conn speaks
// the agent's frame protocol for one call (see internal/agent/doc.go).
func (c *Client) Attach(ctx context.Context, ref string) (net.Conn, error) {
	p := PathVM + url.PathEscape(ref) + "/attach"
	var d net.Dialer
	conn, err := d.DialContext(ctx, "unix", c.socket)
	if err != nil {
		return nil, c.transportError(http.MethodGet, p, err)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://bangerd"+p, nil)
	if err != nil {
		conn.Close()
		return nil, err
	}
	req.Header.Set("Connection", "Upgrade")
	req.Header.Set("Upgrade", UpgradeAttach)
	if err := req.Write(conn); err != nil {
		conn.Close()
		return nil, fmt.Errorf("attach %s: %w", ref, err)
	}
	br := bufio.NewReader(conn)
	resp, err := http.ReadResponse(br, req)
	if err != nil {
		conn.Close()
		return nil, fmt.Errorf("attach %s: %w", ref, err)
	}
	if resp.StatusCode != http.StatusSwitchingProtocols {
		defer conn.Close()
		return nil, decodeError(resp, http.MethodGet, p)
	}
	return &bufferedConn{Conn: conn, r: br}, nil
}

// bufferedConn reads through the reader that parsed the upgrade response, so no
// byte the server sent right after it is lost.
type bufferedConn struct {
	net.Conn
	r *bufio.Reader
}

func (c *bufferedConn) Read(p []byte) (int, error) { return c.r.Read(p) }

// WaitVM waits until a VM's agent is ready, up to timeout.
func (c *Client) WaitVM(ctx context.Context, ref string, timeout time.Duration) (VM, error) {
	var out VM
	p := PathVM + url.PathEscape(ref) + "/wait?timeout=" + url.QueryEscape(timeout.String())
	return out, c.do(ctx, http.MethodGet, p, nil, &out)
}
