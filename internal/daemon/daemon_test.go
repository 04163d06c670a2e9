package daemon_test

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"slices"
	"testing"
	"time"

	"github.com/miekg/dns"

	"banger/internal/config"
	"banger/internal/daemon"
	"banger/internal/hostnetwork"
	"banger/internal/layout"
	"banger/internal/store"
	"banger/internal/testutil"
)

func TestMain(m *testing.M) {
	code := m.Run()
	testutil.Cleanup()
	os.Exit(code)
}

// TestOpenRecoversAndCloseLeavesVMs: Open seeds the tap pool past the taps VMs hold,
// rebuilds DNS from the VMs whose VMM is alive (not the dead one), and Close stops
// DNS and the warm-up while the "VMM" keeps running.
func TestOpenRecoversAndCloseLeavesVMs(t *testing.T) {
	testutil.RequireRoot(t)
	ctx := context.Background()
	l, err := layout.New(testutil.Root(t))
	if err != nil {
		t.Fatal(err)
	}
	if err := l.Create(-1, -1); err != nil {
		t.Fatal(err)
	}
	// The daemon runs in the test's namespace, not the helper's, so its DNS server
	// listens on loopback rather than the bridge address.
	// The helper needs the real port (it routes and redirects DNS only to dns.listen),
	// so take a free one rather than :0.
	toml := fmt.Sprintf("[network]\nbridge = \"bt1\"\nbridge_cidr = \"10.213.9.1/24\"\ntap_pool_size = 2\n[dns]\nlisten = \"127.0.0.1:%d\"\n", freeDNSPort(t))
	if err := os.WriteFile(l.ConfigPath(), []byte(toml), 0o644); err != nil {
		t.Fatal(err)
	}
	cfg, err := config.Load(l.ConfigPath())
	if err != nil {
		t.Fatal(err)
	}
	helper := testutil.StartHelper(t, l.Root)

	// A VMM stand-in that outlives the daemon, and one that already died.
	alive := exec.Command("sleep", "300")
	if err := alive.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = alive.Process.Kill(); _ = alive.Wait() })
	aliveStart, err := hostnetwork.ProcessStart(alive.Process.Pid)
	if err != nil {
		t.Fatal(err)
	}
	dead := exec.Command("true")
	if err := dead.Run(); err != nil {
		t.Fatal(err)
	}

	st, err := store.Open(ctx, l.StorePath())
	if err != nil {
		t.Fatal(err)
	}
	bridge, _ := cfg.BridgePrefix()
	img := store.Image{ID: "sha256:" + string(slices.Repeat([]byte("a"), 64)), Path: "/x"}
	if err := st.PutImage(ctx, img); err != nil {
		t.Fatal(err)
	}
	if err := st.PutKernel(ctx, store.Kernel{ID: "k1", Name: "k1", Path: "/k"}); err != nil {
		t.Fatal(err)
	}
	vms := []struct {
		id, name, tap string
		pid           int
		start         uint64
	}{
		{"aaaa1111", "web", "tap-pool-5", alive.Process.Pid, aliveStart},
		{"bbbb2222", "gone", "tap-vm-bbbb2222", dead.Process.Pid, 1},
	}
	ips := map[string]netip.Addr{}
	for _, v := range vms {
		ip, err := st.CreateVMWithLease(ctx, store.VM{ID: v.id, Name: v.name, ImageID: img.ID, KernelID: "k1", State: store.VMRunning, CPUs: 1, MemoryMiB: 128, Driver: "qemu"}, bridge)
		if err != nil {
			t.Fatal(err)
		}
		ips[v.name] = ip
		if err := st.SetHandle(ctx, store.Handle{VMID: v.id, PID: v.pid, PIDStart: v.start, Tap: v.tap}); err != nil {
			t.Fatal(err)
		}
	}
	if err := st.Close(); err != nil {
		t.Fatal(err)
	}

	d, err := daemon.Open(ctx, daemon.Options{Layout: l, Config: cfg, Helper: helper, Upstreams: []string{}, Home: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	closed := false
	t.Cleanup(func() {
		if !closed {
			_ = d.Close(ctx)
		}
	})

	pool := d.Network().Pool()
	wctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	if err := pool.WaitWarm(wctx); err != nil {
		t.Fatal(err)
	}
	if got, want := pool.Stats().IdleTaps, []string{"tap-pool-6", "tap-pool-7"}; !slices.Equal(got, want) {
		t.Errorf("pool after open = %v, want %v (index seeded past tap-pool-5 held by a VM)", got, want)
	}
	taps, err := helper.ListTaps(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, tp := range taps {
		names = append(names, tp.Name)
	}
	if !slices.Equal(names, []string{"tap-pool-6", "tap-pool-7"}) {
		t.Errorf("taps on the host = %v, want the two pool taps", names)
	}

	addr := d.DNSAddr().String()
	if got := queryA(t, addr, "web.vm."); got != ips["web"].String() {
		t.Errorf("web.vm = %q, want %s (its VMM is alive)", got, ips["web"])
	}
	if got := queryA(t, addr, "gone.vm."); got != "NXDOMAIN" {
		t.Errorf("gone.vm = %q, want NXDOMAIN (its VMM died while bangerd was down)", got)
	}

	// The VM whose VMM died while bangerd was down is stopped and holds nothing;
	// the live one is running and keeps its tap.
	gone, err := d.VMs().Get(ctx, "gone")
	if err != nil || gone.State != store.VMStopped || gone.Handle != nil {
		t.Errorf("gone = state %s, handle %v, %v; want stopped with no handle", gone.State, gone.Handle, err)
	}
	web, err := d.VMs().Get(ctx, "web")
	if err != nil || web.State != store.VMRunning || web.Handle == nil || web.Handle.Tap != "tap-pool-5" {
		t.Errorf("web = state %s, handle %+v, %v; want running on tap-pool-5", web.State, web.Handle, err)
	}

	if err := d.Close(ctx); err != nil {
		t.Fatalf("Close: %v", err)
	}
	closed = true
	if c, err := net.DialTimeout("tcp", addr, time.Second); err == nil {
		c.Close()
		t.Errorf("DNS still listening on %s after Close", addr)
	}
	if !hostnetwork.ProcessAlive(alive.Process.Pid, aliveStart) {
		t.Error("Close killed a VM's VMM; VMs must outlive the daemon")
	}
	if taps, err := helper.ListTaps(ctx); err != nil || len(taps) != 2 {
		t.Errorf("taps after Close = %v, %v; want the 2 idle pool taps kept for the next open", taps, err)
	}
}

func queryA(t *testing.T, server, name string) string {
	t.Helper()
	m := new(dns.Msg)
	m.SetQuestion(name, dns.TypeA)
	c := &dns.Client{Timeout: 2 * time.Second}
	r, _, err := c.Exchange(m, server)
	if err != nil {
		t.Fatalf("query %s: %v", name, err)
	}
	if r.Rcode != dns.RcodeSuccess {
		return dns.RcodeToString[r.Rcode]
	}
	for _, rr := range r.Answer {
		if a, ok := rr.(*dns.A); ok {
			return a.A.String()
		}
	}
	return "NODATA"
}

// freeDNSPort returns a loopback port free for both UDP and TCP just now.
func freeDNSPort(t *testing.T) int {
	t.Helper()
	for range 20 {
		pc, err := net.ListenPacket("udp4", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		port := pc.LocalAddr().(*net.UDPAddr).Port
		ln, err := net.Listen("tcp4", fmt.Sprintf("127.0.0.1:%d", port))
		pc.Close()
		if err == nil {
			ln.Close()
			return port
		}
	}
	t.Fatal("no free loopback port for UDP and TCP")
	return 0
}
