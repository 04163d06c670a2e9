package qemu

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"banger/internal/testutil"
	"banger/internal/vmm/vmmtest"
)

// TestTapNetwork boots a guest whose NIC is on a tap, and reaches it from the
// host side of the tap: virtio-net, the tap wiring and the MAC are right. All of
// it happens in a network namespace the test creates: QEMU runs inside it
// through a wrapper (ip netns exec keeps the PID and the inherited sockets), so
// the host's own interfaces are never touched.
func TestTapNetwork(t *testing.T) {
	testutil.RequireRoot(t)
	if _, err := os.Stat(vmmtest.Busybox); err != nil {
		t.Skipf("%s (busybox ping) not installed: apt-get install busybox-static", vmmtest.Busybox)
	}
	g := newGuest(t)
	ns := testutil.NetNS(t)
	const (
		tap   = "tapvq0"
		host  = "10.77.0.1"
		guest = "10.77.0.2"
		mac   = "02:42:0a:4d:00:02"
	)
	testutil.Run(t, "ip", "netns", "exec", ns, "ip", "tuntap", "add", "dev", tap, "mode", "tap")
	testutil.Run(t, "ip", "netns", "exec", ns, "ip", "addr", "add", host+"/24", "dev", tap)
	testutil.Run(t, "ip", "netns", "exec", ns, "ip", "link", "set", tap, "up")

	wrapper := filepath.Join(t.TempDir(), "qemu-in-netns")
	script := "#!/bin/sh\nexec ip netns exec " + ns + " " + DefaultBinary + " \"$@\"\n"
	if err := os.WriteFile(wrapper, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	drv := New(Options{Binary: wrapper, Logger: testLogger(t)})
	spec := g.spec(t)
	spec.Tap, spec.MAC = tap, mac
	spec.Cmdline += " banger.ip=" + guest + "/24 banger.gw=" + host

	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	h, err := drv.Start(ctx, spec)
	if err != nil {
		t.Fatalf("Start: %v", err)
	}
	vmmtest.KillOnCleanup(t, drv, h)
	if _, err := vmmtest.WaitAgent(ctx, drv, h); err != nil {
		t.Fatalf("agent: %v", err)
	}
	out, err := exec.CommandContext(ctx, "ip", "netns", "exec", ns, vmmtest.Busybox, "ping", "-c", "3", "-W", "5", guest).CombinedOutput()
	if err != nil {
		b, _ := os.ReadFile(spec.ConsoleLog)
		t.Fatalf("ping the guest on the tap: %v\n%s\nconsole:\n%s", err, out, b)
	}
	neigh := testutil.Run(t, "ip", "netns", "exec", ns, "ip", "neigh", "show", guest, "dev", tap)
	if !strings.Contains(neigh, mac) {
		t.Errorf("the guest answers from %q, want MAC %s", strings.TrimSpace(neigh), mac)
	}
	if err := drv.Stop(ctx, h, time.Minute); err != nil {
		t.Fatalf("Stop: %v", err)
	}
}
