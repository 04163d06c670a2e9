package firecracker_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"banger/internal/vmm/firecracker"
	"banger/internal/vmm/firecracker/fctest"
)

// harness runs client sequences against contract servers of one spec. A
// sequence returns errors instead of failing the test, so the same
// sequences can be replayed against another spec and merely reported.
type harness struct {
	t       *testing.T
	spec    *fctest.Spec
	dir     string // short, for sockets and files
	kernel  string
	rootfs  string
	servers []*fctest.Server
}

func newHarness(t *testing.T, specName string) *harness {
	t.Helper()
	h := &harness{t: t, spec: fctest.MustSpec(t, specName), dir: fctest.ShortTempDir(t)}
	h.kernel, h.rootfs = h.file("vmlinux"), h.file("rootfs.ext4")
	return h
}

// file creates a small file in the harness directory.
func (h *harness) file(name string) string {
	h.t.Helper()
	p := filepath.Join(h.dir, name)
	if err := os.WriteFile(p, []byte("fctest "+name), 0o600); err != nil {
		h.t.Fatal(err)
	}
	return p
}

// machine starts a fresh contract server (a fresh "process") and returns a
// Machine talking to it.
func (h *harness) machine() (*firecracker.Machine, *fctest.Server) {
	h.t.Helper()
	srv := fctest.Start(h.t, h.spec, fctest.Options{InstanceID: "vm-1"})
	h.servers = append(h.servers, srv)
	c := firecracker.NewClient(srv.SocketPath())
	h.t.Cleanup(c.Close)
	return firecracker.NewMachine(firecracker.MachineDeps{Client: c}), srv
}

func (h *harness) records() []fctest.Record {
	var all []fctest.Record
	for _, s := range h.servers {
		all = append(all, s.Records()...)
	}
	return all
}

// machineSpec is a full spec: every optional device set.
func (h *harness) machineSpec() firecracker.MachineSpec {
	return firecracker.MachineSpec{
		VCPUs:      2,
		MemMiB:     512,
		KernelPath: h.kernel,
		BootArgs:   "console=ttyS0 panic=1",
		RootDrive:  firecracker.DriveSpec{Path: h.rootfs},
		Net:        &firecracker.NetSpec{HostDevName: "tap-pool-0", GuestMAC: "06:00:0a:00:00:02"},
		Vsock:      &firecracker.VsockSpec{CID: 10002, UDSPath: filepath.Join(h.dir, "vsock.sock")},
		Logger:     &firecracker.LoggerSpec{Path: filepath.Join(h.dir, "fc.log"), Level: "Debug"},
		Metrics:    &firecracker.MetricsSpec{Path: filepath.Join(h.dir, "fc.metrics")},
	}
}

func testCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// sequence is one client scenario and the calls it must make.
type sequence struct {
	name  string
	run   func(ctx context.Context, h *harness) error
	calls []string
}

var bootCalls = []string{
	"PUT /logger", "PUT /metrics", "PUT /machine-config", "PUT /boot-source",
	"PUT /drives/rootfs", "PUT /network-interfaces/eth0", "PUT /vsock", "PUT /actions",
}

func concat(lists ...[]string) []string {
	var out []string
	for _, l := range lists {
		out = append(out, l...)
	}
	return out
}

func wantState(ctx context.Context, m *firecracker.Machine, want string) error {
	info, err := m.Client().InstanceInfo(ctx)
	if err != nil {
		return err
	}
	if info.State != want {
		return fmt.Errorf("state: got %q, want %q", info.State, want)
	}
	return nil
}

func boot(ctx context.Context, h *harness) (*firecracker.Machine, error) {
	m, _ := h.machine()
	if err := m.Configure(ctx, h.machineSpec()); err != nil {
		return m, err
	}
	return m, m.Start(ctx)
}

var sequences = []sequence{
	{
		name: "boot",
		run: func(ctx context.Context, h *harness) error {
			m, err := boot(ctx, h)
			if err != nil {
				return err
			}
			return wantState(ctx, m, "Running")
		},
		calls: concat(bootCalls, []string{"GET /"}),
	},
	{
		name: "pause-resume",
		run: func(ctx context.Context, h *harness) error {
			m, err := boot(ctx, h)
			if err != nil {
				return err
			}
			if err := m.Pause(ctx); err != nil {
				return err
			}
			if err := wantState(ctx, m, "Paused"); err != nil {
				return err
			}
			if err := m.Resume(ctx); err != nil {
				return err
			}
			return wantState(ctx, m, "Running")
		},
		calls: concat(bootCalls, []string{"PATCH /vm", "GET /", "PATCH /vm", "GET /"}),
	},
	{
		name: "snapshot",
		run: func(ctx context.Context, h *harness) error {
			m, err := boot(ctx, h)
			if err != nil {
				return err
			}
			if err := m.Pause(ctx); err != nil {
				return err
			}
			snap := firecracker.SnapshotSpec{SnapshotPath: filepath.Join(h.dir, "vm.snap"), MemPath: filepath.Join(h.dir, "vm.mem")}
			if err := m.CreateSnapshot(ctx, snap); err != nil {
				return err
			}
			if err := m.Resume(ctx); err != nil {
				return err
			}
			// A fresh process restores it, on another tap, its vsock socket
			// elsewhere, with a logger first (allowed before a load).
			restored, _ := h.machine()
			err = restored.LoadSnapshot(ctx, firecracker.LoadSpec{
				SnapshotPath: snap.SnapshotPath,
				MemPath:      snap.MemPath,
				Resume:       true,
				Taps:         map[string]string{"eth0": "tap-pool-7"},
				VsockUDSPath: filepath.Join(h.dir, "vsock2.sock"),
				Logger:       &firecracker.LoggerSpec{Path: filepath.Join(h.dir, "fc2.log")},
			})
			if err != nil {
				return err
			}
			return wantState(ctx, restored, "Running")
		},
		calls: concat(bootCalls, []string{"PATCH /vm", "PUT /snapshot/create", "PATCH /vm", "PUT /logger", "PUT /snapshot/load", "GET /"}),
	},
	{
		name: "getters",
		run: func(ctx context.Context, h *harness) error {
			m, _ := h.machine()
			c := m.Client()
			if _, err := c.Version(ctx); err != nil {
				return err
			}
			if _, err := c.GetMachineConfig(ctx); err != nil {
				return err
			}
			if err := c.Action(ctx, firecracker.ActionFlushMetrics); err != nil {
				return err
			}
			_, err := c.InstanceInfo(ctx)
			return err
		},
		calls: []string{"GET /version", "GET /machine-config", "PUT /actions", "GET /"},
	},
}
