package firecracker

// Wire types for the parts of Firecracker's API (spec v1.16.1) that banger
// uses. Each field carries the spec's name; optional ones are omitempty, so
// the client never sends a field the spec does not name nor an empty value
// Firecracker would read as a choice. Firecracker rejects unknown fields, and
// TestRequestTypesMatchSpec holds these tags to the spec file.

// MachineConfig is the spec's MachineConfiguration.
type MachineConfig struct {
	VCPUCount  int  `json:"vcpu_count"`
	MemSizeMiB int  `json:"mem_size_mib"`
	SMT        bool `json:"smt,omitempty"`
	// TrackDirtyPages enables Diff snapshots.
	TrackDirtyPages bool `json:"track_dirty_pages,omitempty"`
	// HugePages is "None" or "2M"; empty leaves Firecracker's default.
	HugePages string `json:"huge_pages,omitempty"`
}

// BootSource is the spec's BootSource.
type BootSource struct {
	KernelImagePath string `json:"kernel_image_path"`
	BootArgs        string `json:"boot_args,omitempty"`
	InitrdPath      string `json:"initrd_path,omitempty"`
}

// Drive is the spec's Drive, virtio-block flavour.
type Drive struct {
	DriveID      string `json:"drive_id"`
	IsRootDevice bool   `json:"is_root_device"`
	// IsReadOnly is always sent: Firecracker requires it for virtio-block.
	IsReadOnly bool   `json:"is_read_only"`
	PathOnHost string `json:"path_on_host"`
}

// NetworkInterface is the spec's NetworkInterface.
type NetworkInterface struct {
	IfaceID     string `json:"iface_id"`
	HostDevName string `json:"host_dev_name"`
	GuestMAC    string `json:"guest_mac,omitempty"`
}

// Vsock is the spec's Vsock (without the deprecated vsock_id).
type Vsock struct {
	GuestCID uint32 `json:"guest_cid"`
	UDSPath  string `json:"uds_path"`
}

// Logger is the spec's Logger.
type Logger struct {
	LogPath       string `json:"log_path,omitempty"`
	Level         string `json:"level,omitempty"` // Error, Warning, Info, Debug, Trace, Off
	ShowLevel     bool   `json:"show_level,omitempty"`
	ShowLogOrigin bool   `json:"show_log_origin,omitempty"`
}

// Metrics is the spec's Metrics.
type Metrics struct {
	MetricsPath string `json:"metrics_path"`
}

// ActionType is InstanceActionInfo.action_type.
type ActionType string

// Actions.
const (
	ActionInstanceStart  ActionType = "InstanceStart"
	ActionSendCtrlAltDel ActionType = "SendCtrlAltDel"
	ActionFlushMetrics   ActionType = "FlushMetrics"
)

// InstanceActionInfo is the body of PUT /actions.
type InstanceActionInfo struct {
	ActionType ActionType `json:"action_type"`
}

// VMState is Vm.state.
type VMState string

// VM states for PATCH /vm.
const (
	VMPaused  VMState = "Paused"
	VMResumed VMState = "Resumed"
)

// VM is the body of PATCH /vm.
type VM struct {
	State VMState `json:"state"`
}

// Snapshot types.
const (
	SnapshotFull = "Full"
	SnapshotDiff = "Diff"
)

// SnapshotCreateParams is the body of PUT /snapshot/create.
type SnapshotCreateParams struct {
	SnapshotType string `json:"snapshot_type,omitempty"` // Full (default) or Diff
	SnapshotPath string `json:"snapshot_path"`
	MemFilePath  string `json:"mem_file_path"`
}

// MemoryBackend is the spec's MemoryBackend.
type MemoryBackend struct {
	BackendType string `json:"backend_type"` // File or Uffd
	BackendPath string `json:"backend_path"`
}

// NetworkOverride points a restored interface at another tap.
type NetworkOverride struct {
	IfaceID     string `json:"iface_id"`
	HostDevName string `json:"host_dev_name"`
}

// VsockOverride moves a restored vsock device to another socket path.
type VsockOverride struct {
	UDSPath string `json:"uds_path"`
}

// SnapshotLoadParams is the body of PUT /snapshot/load. It uses mem_backend,
// never the deprecated mem_file_path.
type SnapshotLoadParams struct {
	SnapshotPath     string            `json:"snapshot_path"`
	MemBackend       *MemoryBackend    `json:"mem_backend,omitempty"`
	TrackDirtyPages  bool              `json:"track_dirty_pages,omitempty"`
	ResumeVM         bool              `json:"resume_vm,omitempty"`
	NetworkOverrides []NetworkOverride `json:"network_overrides,omitempty"`
	VsockOverride    *VsockOverride    `json:"vsock_override,omitempty"`
}

// InstanceInfo is the answer to GET /.
type InstanceInfo struct {
	AppName    string `json:"app_name"`
	ID         string `json:"id"`
	State      string `json:"state"` // "Not started", "Running", "Paused"
	VMMVersion string `json:"vmm_version"`
}

// FirecrackerVersion is the answer to GET /version.
type FirecrackerVersion struct {
	FirecrackerVersion string `json:"firecracker_version"`
}
