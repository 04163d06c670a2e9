package firecracker_test

import (
	"encoding/json"
	"errors"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"banger/internal/vmm/firecracker"
	"banger/internal/vmm/firecracker/fctest"
)

// TestSequencesHonourTheContract runs every client sequence against the
// v1.16.1 contract server: the calls must be exactly the expected ones and
// the server must refuse none.
func TestSequencesHonourTheContract(t *testing.T) {
	for _, seq := range sequences {
		t.Run(seq.name, func(t *testing.T) {
			h := newHarness(t, fctest.SpecV1161)
			if err := seq.run(testCtx(t), h); err != nil {
				t.Fatal(err)
			}
			recs := h.records()
			fctest.CheckClean(t, recs)
			var calls []string
			for _, r := range recs {
				calls = append(calls, r.Call())
			}
			if !slices.Equal(calls, seq.calls) {
				t.Errorf("calls:\ngot  %q\nwant %q", calls, seq.calls)
			}
		})
	}
}

// TestConfigureBodies checks what Configure puts in the bodies that matter.
func TestConfigureBodies(t *testing.T) {
	h := newHarness(t, fctest.SpecV1161)
	ctx := testCtx(t)
	if _, err := boot(ctx, h); err != nil {
		t.Fatal(err)
	}
	bodies := map[string]map[string]any{}
	for _, r := range h.records() {
		var m map[string]any
		if err := json.Unmarshal([]byte(r.Body), &m); err != nil {
			t.Fatalf("%s: %v", r.Call(), err)
		}
		bodies[r.Call()] = m
	}
	spec := h.machineSpec()
	for _, tt := range []struct {
		call, field string
		want        any
	}{
		{"PUT /boot-source", "boot_args", "console=ttyS0 panic=1 reboot=k"},
		{"PUT /machine-config", "vcpu_count", 2.0},
		{"PUT /machine-config", "mem_size_mib", 512.0},
		{"PUT /drives/rootfs", "is_root_device", true},
		{"PUT /drives/rootfs", "is_read_only", false},
		{"PUT /drives/rootfs", "path_on_host", h.rootfs},
		{"PUT /network-interfaces/eth0", "host_dev_name", "tap-pool-0"},
		{"PUT /network-interfaces/eth0", "guest_mac", "06:00:0a:00:00:02"},
		{"PUT /vsock", "guest_cid", 10002.0},
		{"PUT /vsock", "uds_path", spec.Vsock.UDSPath},
		{"PUT /logger", "level", "Debug"},
		{"PUT /actions", "action_type", "InstanceStart"},
	} {
		if got := bodies[tt.call][tt.field]; got != tt.want {
			t.Errorf("%s %s: got %v, want %v", tt.call, tt.field, got, tt.want)
		}
	}
	if _, ok := bodies["PUT /boot-source"]["initrd_path"]; ok {
		t.Error("PUT /boot-source: initrd_path sent although none was given")
	}
	// Firecracker opens these; Configure creates them.
	for _, p := range []string{spec.Logger.Path, spec.Metrics.Path} {
		if _, err := os.Stat(p); err != nil {
			t.Errorf("log/metrics file: %v", err)
		}
	}
}

func TestConfigureMinimalSpec(t *testing.T) {
	h := newHarness(t, fctest.SpecV1161)
	m, srv := h.machine()
	spec := firecracker.MachineSpec{VCPUs: 1, MemMiB: 128, KernelPath: h.kernel, InitrdPath: h.file("initrd"),
		RootDrive: firecracker.DriveSpec{ID: "root_disk", Path: h.rootfs, ReadOnly: true}}
	if err := m.Configure(testCtx(t), spec); err != nil {
		t.Fatal(err)
	}
	fctest.CheckClean(t, srv.Records())
	want := []string{"PUT /machine-config", "PUT /boot-source", "PUT /drives/root_disk"}
	if got := srv.Calls(); !slices.Equal(got, want) {
		t.Errorf("calls: got %q, want %q", got, want)
	}
}

// TestConfigureRemovesStaleVsockSocket: Firecracker binds uds_path at once, so
// a socket left by an earlier process must go first; anything else in the
// way is reported and left alone, before PUT /vsock.
func TestConfigureRemovesStaleVsockSocket(t *testing.T) {
	t.Run("stale socket", func(t *testing.T) {
		h := newHarness(t, fctest.SpecV1161)
		spec := h.machineSpec()
		ln, err := net.Listen("unix", spec.Vsock.UDSPath)
		if err != nil {
			t.Fatal(err)
		}
		ln.(*net.UnixListener).SetUnlinkOnClose(false)
		ln.Close() // leaves the socket file, as a killed process does
		m, srv := h.machine()
		if err := m.Configure(testCtx(t), spec); err != nil {
			t.Fatal(err)
		}
		fctest.CheckClean(t, srv.Records())
	})
	t.Run("regular file in the way", func(t *testing.T) {
		h := newHarness(t, fctest.SpecV1161)
		spec := h.machineSpec()
		if err := os.WriteFile(spec.Vsock.UDSPath, []byte("precious"), 0o600); err != nil {
			t.Fatal(err)
		}
		m, srv := h.machine()
		err := m.Configure(testCtx(t), spec)
		if err == nil || !strings.Contains(err.Error(), "is in the way") {
			t.Fatalf("got %v, want a refusal to remove a non-socket", err)
		}
		if b, _ := os.ReadFile(spec.Vsock.UDSPath); string(b) != "precious" {
			t.Error("the file in the way was touched")
		}
		if slices.Contains(srv.Calls(), "PUT /vsock") {
			t.Error("PUT /vsock was sent anyway")
		}
	})
}

func TestConfigureValidatesFirst(t *testing.T) {
	h := newHarness(t, fctest.SpecV1161)
	m, srv := h.machine()
	bad := h.machineSpec()
	bad.VCPUs = 0
	bad.RootDrive.ID = "root-fs"
	bad.Net.GuestMAC = "nope"
	bad.Vsock.CID = 2
	err := m.Configure(testCtx(t), bad)
	if err == nil {
		t.Fatal("got nil, want the spec refused")
	}
	for _, want := range []string{"vcpus 0", `device id "root-fs"`, `guest MAC "nope"`, "vsock CID 2"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("got %q, want it to mention %q", err, want)
		}
	}
	if n := len(srv.Records()); n != 0 {
		t.Errorf("got %d requests, want none before the spec is valid", n)
	}
}

// TestAPIErrorCarriesFault: a refusal comes back as *APIError with the call
// and Firecracker's fault_message.
func TestAPIErrorCarriesFault(t *testing.T) {
	h := newHarness(t, fctest.SpecV1161)
	m, _ := h.machine()
	err := m.Client().PutDrive(testCtx(t), firecracker.Drive{DriveID: "rootfs", IsRootDevice: true, PathOnHost: "/nonexistent/disk"})
	var apiErr *firecracker.APIError
	if !errors.As(err, &apiErr) {
		t.Fatalf("got %v, want *APIError", err)
	}
	want := `firecracker PUT /drives/rootfs: 400: Cannot open the drive backing file "/nonexistent/disk": no such file`
	if err.Error() != want {
		t.Errorf("got %q, want %q", err, want)
	}
	if apiErr.Status != 400 || apiErr.Method != "PUT" || apiErr.Path != "/drives/rootfs" {
		t.Errorf("got %+v", apiErr)
	}
}

func TestClientRefusesBadIDsBeforeSending(t *testing.T) {
	h := newHarness(t, fctest.SpecV1161)
	m, srv := h.machine()
	ctx := testCtx(t)
	if err := m.Client().PutDrive(ctx, firecracker.Drive{DriveID: "root-fs", PathOnHost: h.rootfs}); err == nil || !strings.Contains(err.Error(), "firecracker PUT /drives/root-fs") {
		t.Errorf("drive: got %v, want an id error naming the call", err)
	}
	if err := m.Client().PutNetworkInterface(ctx, firecracker.NetworkInterface{IfaceID: "eth/0", HostDevName: "tap0"}); err == nil {
		t.Error("iface: got nil, want an id error")
	}
	if n := len(srv.Records()); n != 0 {
		t.Errorf("got %d requests, want none", n)
	}
}

func TestSnapshotNeedsPause(t *testing.T) {
	h := newHarness(t, fctest.SpecV1161)
	ctx := testCtx(t)
	m, err := boot(ctx, h)
	if err != nil {
		t.Fatal(err)
	}
	err = m.CreateSnapshot(ctx, firecracker.SnapshotSpec{SnapshotPath: filepath.Join(h.dir, "s"), MemPath: filepath.Join(h.dir, "m")})
	var apiErr *firecracker.APIError
	if !errors.As(err, &apiErr) || !strings.Contains(apiErr.FaultMessage, "pause it first") {
		t.Errorf("got %v, want Firecracker's refusal", err)
	}
}

func TestGetters(t *testing.T) {
	h := newHarness(t, fctest.SpecV1161)
	m, srv := h.machine()
	ctx := testCtx(t)
	c := m.Client()
	v, err := c.Version(ctx)
	if err != nil || v != "1.16.1" {
		t.Errorf("Version: got %q, %v; want 1.16.1", v, err)
	}
	mc, err := c.GetMachineConfig(ctx)
	if err != nil || mc.VCPUCount != 1 || mc.MemSizeMiB != 128 {
		t.Errorf("GetMachineConfig before PUT: got %+v, %v; want Firecracker's defaults 1 vCPU, 128 MiB", mc, err)
	}
	if err := c.PutMachineConfig(ctx, firecracker.MachineConfig{VCPUCount: 4, MemSizeMiB: 1024, TrackDirtyPages: true}); err != nil {
		t.Fatal(err)
	}
	mc, err = c.GetMachineConfig(ctx)
	if err != nil || mc.VCPUCount != 4 || mc.MemSizeMiB != 1024 || !mc.TrackDirtyPages {
		t.Errorf("GetMachineConfig: got %+v, %v", mc, err)
	}
	info, err := c.InstanceInfo(ctx)
	if err != nil || info.ID != "vm-1" || info.State != "Not started" || info.AppName != "Firecracker" {
		t.Errorf("InstanceInfo: got %+v, %v", info, err)
	}
	fctest.CheckClean(t, srv.Records())
}

func TestWaitReady(t *testing.T) {
	h := newHarness(t, fctest.SpecV1161)
	_, srv := h.machine()
	if err := firecracker.NewClient(srv.SocketPath()).WaitReady(testCtx(t), nil); err != nil {
		t.Errorf("live server: %v", err)
	}
	exited := make(chan struct{})
	close(exited)
	err := firecracker.NewClient(filepath.Join(h.dir, "none.sock")).WaitReady(testCtx(t), exited)
	if err == nil || !strings.Contains(err.Error(), "exited before its API answered") {
		t.Errorf("dead process: got %v", err)
	}
}
