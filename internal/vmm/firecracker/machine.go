package firecracker

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"maps"
	"net"
	"os"
	"path/filepath"
	"slices"
)

// MachineSpec describes a microVM for Configure. Every path is as Firecracker
// sees it: a host path, or a path inside the chroot for a jailed Firecracker
// (MachineDeps.ChrootDir maps it to the host for the steps done here).
type MachineSpec struct {
	VCPUs      int // 1 to 32
	MemMiB     int
	KernelPath string
	InitrdPath string // optional
	// BootArgs are the kernel's arguments; Configure makes sure they carry
	// reboot=k (see EnsureRebootK), which graceful Shutdown relies on.
	// Firecracker itself appends root=/dev/vda and pci=off.
	BootArgs  string
	RootDrive DriveSpec
	Net       *NetSpec     // optional
	Vsock     *VsockSpec   // optional
	Logger    *LoggerSpec  // optional; leave nil when firecracker got --log-path
	Metrics   *MetricsSpec // optional
}

// DriveSpec is the root drive.
type DriveSpec struct {
	ID       string // a device id (see DeviceID); default "rootfs"
	Path     string // raw image or block device
	ReadOnly bool
}

// NetSpec is one virtio-net interface backed by a host tap.
type NetSpec struct {
	IfaceID     string // a device id; default "eth0"
	HostDevName string // the tap, e.g. tap-pool-3
	GuestMAC    string // optional, aa:bb:cc:dd:ee:ff
}

// VsockSpec is the hybrid vsock device.
type VsockSpec struct {
	CID     uint32 // 3 or more
	UDSPath string // Firecracker binds it; a stale file there is removed first
}

// LoggerSpec is Firecracker's log file; created empty when missing.
type LoggerSpec struct {
	Path  string
	Level string // Error, Warning, Info (default), Debug, Trace, Off
}

// MetricsSpec is Firecracker's metrics file; created empty when missing.
type MetricsSpec struct {
	Path string
}

// Default device ids.
const (
	DefaultRootDriveID = "rootfs"
	DefaultIfaceID     = "eth0"
)

// Validate checks what Firecracker would refuse, before any call, and says
// every problem at once.
func (s MachineSpec) Validate() error {
	var errs []error
	if s.VCPUs < 1 || s.VCPUs > 32 {
		errs = append(errs, fmt.Errorf("vcpus %d: Firecracker takes 1 to 32", s.VCPUs))
	}
	if s.MemMiB < 1 {
		errs = append(errs, fmt.Errorf("memory %d MiB: give the guest some memory", s.MemMiB))
	}
	if s.KernelPath == "" {
		errs = append(errs, errors.New("no kernel: set KernelPath"))
	}
	if s.RootDrive.Path == "" {
		errs = append(errs, errors.New("no root drive: set RootDrive.Path"))
	}
	if s.RootDrive.ID != "" {
		if err := ValidateDeviceID(s.RootDrive.ID); err != nil {
			errs = append(errs, fmt.Errorf("root drive: %w", err))
		}
	}
	if n := s.Net; n != nil {
		if n.IfaceID != "" {
			if err := ValidateDeviceID(n.IfaceID); err != nil {
				errs = append(errs, fmt.Errorf("network interface: %w", err))
			}
		}
		if n.HostDevName == "" || len(n.HostDevName) > 15 {
			errs = append(errs, fmt.Errorf("network interface: tap name %q must be 1 to 15 bytes", n.HostDevName))
		}
		if n.GuestMAC != "" {
			if hw, err := net.ParseMAC(n.GuestMAC); err != nil || len(hw) != 6 {
				errs = append(errs, fmt.Errorf("network interface: guest MAC %q: want aa:bb:cc:dd:ee:ff", n.GuestMAC))
			}
		}
	}
	if v := s.Vsock; v != nil {
		if v.CID < 3 {
			errs = append(errs, fmt.Errorf("vsock CID %d: 0-2 are reserved, use 3 or more", v.CID))
		}
		if v.UDSPath == "" {
			errs = append(errs, errors.New("vsock: no UDSPath"))
		}
	}
	if s.Logger != nil && s.Logger.Path == "" {
		errs = append(errs, errors.New("logger: no Path"))
	}
	if s.Metrics != nil && s.Metrics.Path == "" {
		errs = append(errs, errors.New("metrics: no Path"))
	}
	return errors.Join(errs...)
}

// MachineDeps are what a Machine needs.
type MachineDeps struct {
	// Client talks to the process's API socket. Never nil.
	Client *Client
	// ChrootDir is the jail's root on the host when Firecracker runs under
	// the jailer (see Jailer.ChrootDir); empty when it does not.
	ChrootDir string
	// Logger; default: discard.
	Logger *slog.Logger
}

// Machine drives one Firecracker process through its life: configure, start,
// pause/resume, snapshot, shut down.
type Machine struct {
	client *Client
	chroot string
	log    *slog.Logger
}

// NewMachine returns a Machine for one Firecracker process.
func NewMachine(d MachineDeps) *Machine {
	if d.Logger == nil {
		d.Logger = slog.New(slog.DiscardHandler)
	}
	return &Machine{client: d.Client, chroot: d.ChrootDir, log: d.Logger}
}

// Client is the machine's API client.
func (m *Machine) Client() *Client { return m.client }

// HostPath maps a path as Firecracker sees it to the host.
func (m *Machine) HostPath(p string) string {
	if m.chroot == "" {
		return p
	}
	return filepath.Join(m.chroot, p)
}

// Configure sends the whole pre-boot configuration: logger and metrics first
// (so Firecracker logs the rest), then machine, boot source, root drive,
// network and vsock. It stops at the first refusal; Firecracker keeps what
// was accepted, so the caller discards the process on error.
func (m *Machine) Configure(ctx context.Context, s MachineSpec) error {
	if err := s.Validate(); err != nil {
		return fmt.Errorf("microVM spec: %w", err)
	}
	if err := m.setupLogging(ctx, s.Logger, s.Metrics); err != nil {
		return err
	}
	c := m.client
	if err := c.PutMachineConfig(ctx, MachineConfig{VCPUCount: s.VCPUs, MemSizeMiB: s.MemMiB}); err != nil {
		return err
	}
	boot := BootSource{KernelImagePath: s.KernelPath, InitrdPath: s.InitrdPath, BootArgs: EnsureRebootK(s.BootArgs)}
	if err := c.PutBootSource(ctx, boot); err != nil {
		return err
	}
	rootID := s.RootDrive.ID
	if rootID == "" {
		rootID = DefaultRootDriveID
	}
	root := Drive{DriveID: rootID, IsRootDevice: true, IsReadOnly: s.RootDrive.ReadOnly, PathOnHost: s.RootDrive.Path}
	if err := c.PutDrive(ctx, root); err != nil {
		return err
	}
	if n := s.Net; n != nil {
		id := n.IfaceID
		if id == "" {
			id = DefaultIfaceID
		}
		if err := c.PutNetworkInterface(ctx, NetworkInterface{IfaceID: id, HostDevName: n.HostDevName, GuestMAC: n.GuestMAC}); err != nil {
			return err
		}
	}
	if v := s.Vsock; v != nil {
		if err := m.removeStaleSocket(v.UDSPath); err != nil {
			return err
		}
		if err := c.PutVsock(ctx, Vsock{GuestCID: v.CID, UDSPath: v.UDSPath}); err != nil {
			return err
		}
	}
	m.log.Debug("firecracker configured", "socket", c.SocketPath(), "vcpus", s.VCPUs, "mem_mib", s.MemMiB)
	return nil
}

func (m *Machine) setupLogging(ctx context.Context, l *LoggerSpec, mt *MetricsSpec) error {
	if l != nil {
		if err := m.ensureFile(l.Path); err != nil {
			return fmt.Errorf("firecracker log: %w", err)
		}
		if err := m.client.PutLogger(ctx, Logger{LogPath: l.Path, Level: l.Level}); err != nil {
			return err
		}
	}
	if mt != nil {
		if err := m.ensureFile(mt.Path); err != nil {
			return fmt.Errorf("firecracker metrics: %w", err)
		}
		if err := m.client.PutMetrics(ctx, Metrics{MetricsPath: mt.Path}); err != nil {
			return err
		}
	}
	return nil
}

// ensureFile creates p (as Firecracker sees it) when missing: Firecracker
// opens its log and metrics files but does not create them.
func (m *Machine) ensureFile(p string) error {
	f, err := os.OpenFile(m.HostPath(p), os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		return err
	}
	return f.Close()
}

// removeStaleSocket unlinks a socket left at p by an earlier process, because
// Firecracker binds the vsock path at once and fails if anything is there.
// Anything but a socket is left alone and reported.
func (m *Machine) removeStaleSocket(p string) error {
	host := m.HostPath(p)
	fi, err := os.Lstat(host)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return nil
	case err != nil:
		return fmt.Errorf("vsock socket %s: %w", host, err)
	case fi.Mode().Type() != fs.ModeSocket:
		return fmt.Errorf("vsock socket %s: a %s is in the way; Firecracker must bind a socket there: move it", host, fi.Mode().Type())
	}
	if err := os.Remove(host); err != nil {
		return fmt.Errorf("vsock socket %s: remove stale socket: %w", host, err)
	}
	m.log.Debug("removed stale vsock socket", "path", host)
	return nil
}

// Start boots the configured microVM.
func (m *Machine) Start(ctx context.Context) error {
	return m.client.Action(ctx, ActionInstanceStart)
}

// Pause stops the vCPUs of a started microVM.
func (m *Machine) Pause(ctx context.Context) error { return m.client.PatchVM(ctx, VMPaused) }

// Resume restarts the vCPUs of a paused microVM.
func (m *Machine) Resume(ctx context.Context) error { return m.client.PatchVM(ctx, VMResumed) }

// SnapshotSpec names a snapshot's two files, as Firecracker sees them; their
// directory must exist.
type SnapshotSpec struct {
	SnapshotPath string // the microVM state
	MemPath      string // the guest memory
	// Diff writes only pages dirtied since the last snapshot; it needs
	// dirty-page tracking, which Configure does not turn on.
	Diff bool
}

// CreateSnapshot writes a snapshot of a paused microVM (Pause first).
func (m *Machine) CreateSnapshot(ctx context.Context, s SnapshotSpec) error {
	p := SnapshotCreateParams{SnapshotPath: s.SnapshotPath, MemFilePath: s.MemPath}
	if s.Diff {
		p.SnapshotType = SnapshotDiff
	}
	return m.client.CreateSnapshot(ctx, p)
}

// LoadSpec restores a snapshot into a fresh Firecracker process.
type LoadSpec struct {
	SnapshotPath string
	MemPath      string
	// Resume runs the vCPUs at once; otherwise the microVM stays paused.
	Resume bool
	// Taps moves interfaces to other taps: iface id → tap name. A restored VM
	// usually gets another tap from the pool than the one it was saved with.
	Taps map[string]string
	// VsockUDSPath, when the snapshot has a vsock device, is where the
	// restored device binds (sent as vsock_override; a stale socket there is
	// removed first). Empty keeps the saved path, which must then be free.
	VsockUDSPath string
	Logger       *LoggerSpec  // optional, set up before the load
	Metrics      *MetricsSpec // optional, set up before the load
}

// LoadSnapshot restores a snapshot. The process must be fresh: nothing but
// the logger and metrics configured.
func (m *Machine) LoadSnapshot(ctx context.Context, s LoadSpec) error {
	if s.SnapshotPath == "" || s.MemPath == "" {
		return errors.New("snapshot load: SnapshotPath and MemPath are both needed")
	}
	if err := m.setupLogging(ctx, s.Logger, s.Metrics); err != nil {
		return err
	}
	p := SnapshotLoadParams{
		SnapshotPath: s.SnapshotPath,
		MemBackend:   &MemoryBackend{BackendType: "File", BackendPath: s.MemPath},
		ResumeVM:     s.Resume,
	}
	for _, id := range slices.Sorted(maps.Keys(s.Taps)) {
		if err := ValidateDeviceID(id); err != nil {
			return fmt.Errorf("snapshot load: network override: %w", err)
		}
		p.NetworkOverrides = append(p.NetworkOverrides, NetworkOverride{IfaceID: id, HostDevName: s.Taps[id]})
	}
	if s.VsockUDSPath != "" {
		if err := m.removeStaleSocket(s.VsockUDSPath); err != nil {
			return err
		}
		p.VsockOverride = &VsockOverride{UDSPath: s.VsockUDSPath}
	}
	return m.client.LoadSnapshot(ctx, p)
}
