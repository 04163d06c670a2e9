// Package vmm is the contract between bangerd's VMService and the virtual machine
// monitors it drives. Two drivers implement it — firecracker (internal/vmm/firecracker)
// and qemu (internal/vmm/qemu) — and one conformance suite (internal/vmm/vmmtest)
// runs against both.
//
// A driver launches a VMM process that outlives bangerd (its own session, not a child
// that dies with the daemon), so the VMService re-attaches to it from the Handle it
// stored when bangerd opens again.
package vmm

import (
	"context"
	"errors"
	"net"
	"time"
)

// Spec is everything a driver needs to boot one VM. The VMService fills it; drivers
// add only what is theirs (their console device, timekeeping flags, reboot=k, ...).
type Spec struct {
	ID        string // the VM's id (hex); names sockets and the VMM instance
	Name      string // the VM's name (its hostname)
	CPUs      int
	MemoryMiB int
	Kernel    string // kernel image (bzImage or vmlinux)
	Initrd    string // "" for none
	// Cmdline is the kernel command line the VMService wants (root=, banger.* guest
	// settings); the driver appends its own parameters.
	Cmdline string
	Root    Disk
	// Tap is the host tap the guest's NIC uses; MAC its address.
	Tap string
	MAC string
	// VsockCID is the guest's vsock context id (Firecracker; QEMU where vhost-vsock
	// exists). The agent channel under QEMU is a virtio-serial port instead.
	VsockCID uint32
	// RunDir is the VM's runtime directory (short: unix socket paths are limited to
	// 107 bytes); the driver creates its sockets there.
	RunDir string
	// ConsoleLog receives the guest's serial console, capped (see consolelog):
	// ConsoleLog holds the newest bytes, ConsoleLog.1 the ones before.
	ConsoleLog string
	// ConsoleMaxBytes caps the console log (config console.max_size); 0 is
	// consolelog.DefaultMax.
	ConsoleMaxBytes int64
}

// Disk is the root block device.
type Disk struct {
	Path     string
	Format   string // "raw" or "qcow2"
	ReadOnly bool
}

// Handle is what the VMService stores to find a running VMM again.
type Handle struct {
	Driver   string `json:"driver"`
	PID      int    `json:"pid"`
	PIDStart uint64 `json:"pid_start"` // /proc/PID/stat start time: guards against pid reuse
	// APISocket is the VMM's control socket: Firecracker's API or QEMU's QMP.
	APISocket string `json:"api_socket"`
	// AgentSocket is the host side of the agent's channel: QEMU's virtio-serial
	// chardev socket, or Firecracker's hybrid vsock socket (dialled with CONNECT).
	AgentSocket string `json:"agent_socket"`
	AgentPort   uint32 `json:"agent_port,omitempty"` // hybrid vsock port (Firecracker)
	ConsoleLog  string `json:"console_log"`
}

// State is a VMM's state as its driver sees it.
type State string

// States.
const (
	StateRunning State = "running"
	StatePaused  State = "paused"
	StateExited  State = "exited" // the process is gone
)

// Driver is one VMM.
type Driver interface {
	// Name is "firecracker" or "qemu".
	Name() string
	// Available says why this driver cannot run here (nil when it can): a missing
	// binary, no /dev/kvm where one is needed, ...
	Available(ctx context.Context) error
	// Start launches the VMM detached and boots the guest. It returns once the VMM
	// runs the guest (not when the guest is ready: that is the agent's to say). A
	// failure leaves no process and no socket.
	Start(ctx context.Context, spec Spec) (Handle, error)
	// Stop asks the guest to shut down and waits up to timeout for the VMM to exit,
	// then kills it. Stopping an exited VMM succeeds.
	Stop(ctx context.Context, h Handle, timeout time.Duration) error
	// Kill ends the VMM at once. Killing an exited VMM succeeds.
	Kill(ctx context.Context, h Handle) error
	// State reports the VMM's state; a vanished or reused pid is StateExited.
	State(ctx context.Context, h Handle) (State, error)
	// DialAgent opens the raw byte stream to the guest agent's control channel.
	DialAgent(ctx context.Context, h Handle) (net.Conn, error)
}

// ErrUnavailable wraps the reason a driver cannot run here.
var ErrUnavailable = errors.New("vmm unavailable")
