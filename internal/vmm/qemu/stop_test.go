package qemu

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"banger/internal/agent/client"
	"banger/internal/vmm"
	"banger/internal/vmm/vmmtest"
)

// TestStopWhileAgentChannelHeld covers the forced path of Stop. While another
// host peer holds the agent's serial port, the driver's own power-off request
// waits its turn, and the ACPI button means nothing to banger-agent: the guest
// cannot be asked, so Stop must end QEMU with SIGTERM after its timeout, cleanly
// (QEMU's own "terminating on signal 15"), and remove the sockets.
func TestStopWhileAgentChannelHeld(t *testing.T) {
	g := newGuest(t)
	drv := New(Options{Logger: testLogger(t)})
	spec := g.spec(t)
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
	conn, err := drv.DialAgent(ctx, h)
	if err != nil {
		t.Fatalf("DialAgent: %v", err)
	}
	c, err := client.Dial(ctx, conn, client.Options{})
	if err != nil {
		t.Fatalf("agent handshake: %v", err)
	}
	defer c.Close()

	const timeout = 3 * time.Second
	t0 := time.Now()
	if err := drv.Stop(ctx, h, timeout); err != nil {
		t.Fatalf("Stop: %v", err)
	}
	took := time.Since(t0)
	if took < timeout {
		t.Errorf("Stop returned after %s, before its %s timeout: the guest was not supposed to be reachable", took, timeout)
	}
	if st, err := drv.State(ctx, h); err != nil || st != vmm.StateExited {
		t.Errorf("State after Stop: got %q, %v; want exited", st, err)
	}
	log, _ := os.ReadFile(filepath.Join(spec.RunDir, LogName))
	if !strings.Contains(string(log), "terminating on signal 15") {
		t.Errorf("qemu.log does not show a SIGTERM exit:\n%s", log)
	}
	for _, p := range []string{h.APISocket, h.AgentSocket} {
		if _, err := os.Lstat(p); !os.IsNotExist(err) {
			t.Errorf("socket %s left behind (%v)", p, err)
		}
	}
}
