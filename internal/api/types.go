// Package api is bangerd's local API: HTTP+JSON over the daemon's unix socket, every
// path under /v1. This file holds the wire types; client.go the typed client the CLI
// uses. The server side lives in internal/daemon.
package api

import "time"

// Prefix is the versioned path prefix; a breaking change gets /v2 alongside it.
const Prefix = "/v1"

// Paths.
const (
	PathVersion = Prefix + "/version"
	PathStatus  = Prefix + "/status"
)

// VersionResponse answers GET /v1/version.
type VersionResponse struct {
	Version string `json:"version"`
	API     string `json:"api"`
}

// StatusResponse answers GET /v1/status: everything `banger system status` shows.
type StatusResponse struct {
	Version string `json:"version"`
	PID     int    `json:"pid"`
	Root    string `json:"root"`
	// Binary is the bangerd executable that runs (under ROOT/bin after `system run`).
	Binary  string        `json:"binary"`
	Started time.Time     `json:"started"`
	Uptime  time.Duration `json:"uptime_ns"`
	Helper  HelperStatus  `json:"helper"`
	Network NetworkStatus `json:"network"`
	DNS     DNSStatus     `json:"dns"`
	VMs     int           `json:"vms"`
}

// HelperStatus is the root helper as the daemon sees it.
type HelperStatus struct {
	Reachable bool   `json:"reachable"`
	Error     string `json:"error,omitempty"`
	Version   string `json:"version,omitempty"`
	PID       int    `json:"pid,omitempty"`
	OwnerUID  int    `json:"owner_uid"`
}

// NetworkStatus is the host network banger manages.
type NetworkStatus struct {
	Bridge    string  `json:"bridge"`
	Address   string  `json:"address"`
	BridgeUp  bool    `json:"bridge_up"`
	NFTTable  bool    `json:"nft_table"`
	NFTName   string  `json:"nft_table_name"`
	IPForward bool    `json:"ip_forward"`
	TapPool   TapPool `json:"tap_pool"`
}

// TapPool is the pool's occupancy.
type TapPool struct {
	Idle     int      `json:"idle"`
	Size     int      `json:"size"`
	Warming  bool     `json:"warming"`
	IdleTaps []string `json:"idle_taps"`
}

// DNSStatus is the VM name server.
type DNSStatus struct {
	Domain  string `json:"domain"`
	Listen  string `json:"listen"`
	Records int    `json:"records"`
	// ResolverRouting is "systemd-resolved" when the host routes the domain to us, or
	// "none" when names resolve only by asking banger's DNS directly; Hint says how.
	ResolverRouting string `json:"resolver_routing"`
	Hint            string `json:"hint,omitempty"`
}

// Error is the body of every non-2xx answer.
type Error struct {
	Code    string `json:"code"`
	Message string `json:"message"`
}

func (e *Error) Error() string { return e.Message }

// Error codes. Each maps to one HTTP status at the API edge.
const (
	CodeInvalid  = "invalid"   // 400: the request is wrong; the message says how
	CodeNotFound = "not_found" // 404
	CodeConflict = "conflict"  // 409: exists already, or in use
	CodeInternal = "internal"  // 500
	CodeNoHelper = "helper_unavailable"
	// CodeUnavailable (503): something banger needs is not reachable or missing
	// (a registry, the guest agent binary).
	CodeUnavailable = "unavailable"
	CodeNoSpace     = "no_space" // 507: the host disk is full
	// CodeNotReady (504): a VM did not become ready in time; the message carries
	// the console's last lines.
	CodeNotReady = "not_ready"
)
