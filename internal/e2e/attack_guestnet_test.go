package e2e_test

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"banger/internal/privileged"
	"banger/internal/testutil"
)

// TestAttackGuestNetwork: what a hostile guest can reach from inside a real VM
// (finding 6). From VM a, with VM b beside it: a forged source address, a forged
// MAC, gratuitous ARP claiming the gateway and claiming b, a host service on the
// bridge address, the metadata address 169.254.169.254, and, with
// network.isolate_vms, VM b: each is blocked. In the same VMs the traffic banger is
// for still works: DNS, NAT egress, a published port, VM to VM while allowed.
func TestAttackGuestNetwork(t *testing.T) {
	e := newEnv(t, 1)
	rem := newPolicyRemote(t, e)
	gw := e.gateway
	bridge := "be" + strings.TrimSuffix(strings.TrimPrefix(e.prefix, "10.213."), ".")

	// A host service that listens on the bridge address (every address, like an
	// sshd): the host itself reaches it.
	hostDir := t.TempDir()
	if err := os.WriteFile(filepath.Join(hostDir, "index.html"), []byte("host-secret\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	startHTTPD(t, e.ns, gw+":8081", hostDir)
	waitHTTP(t, e.ns, "http://"+gw+":8081/", "host-secret")

	e.vmRun("a")
	b := e.vmRun("b", "-p", "18081:8080")
	guest := func(vm, script string) (string, error) {
		return e.banger("vm", "exec", vm, "--", "sh", "-c", script)
	}
	mustGuest := func(t *testing.T, vm, script string) string {
		t.Helper()
		out, err := guest(vm, script)
		if err != nil {
			t.Fatalf("in %s: %s: %v\n%s", vm, script, err, out)
		}
		return out
	}
	blocked := func(t *testing.T, what, vm, script string) {
		t.Helper()
		if out, err := guest(vm, script); err == nil {
			t.Errorf("%s: succeeded from %s, want it blocked:\n%s", what, vm, out)
		}
	}
	// busybox wget's own -T crashes on this busybox (1.35); timeout bounds it instead.
	wget := func(url string) string { return "timeout 5 wget -qO- " + url }

	mustGuest(t, "b", "mkdir -p /www && echo from-vm-b > /www/index.html && httpd -p 8080 -h /www")
	bridgeMAC := strings.Fields(e.inNS("cat", "/sys/class/net/"+bridge+"/address"))[0]
	bMAC := strings.TrimSpace(mustGuest(t, "b", "cat /sys/class/net/eth0/address"))

	t.Run("normal traffic", func(t *testing.T) {
		if out := mustGuest(t, "a", wget("http://"+rem.addr+":8000/hello.txt")); !strings.Contains(out, "hello from remote") {
			t.Errorf("NAT egress: %q", out)
		}
		if out := mustGuest(t, "b", wget("http://"+rem.addr+":8000/hello.txt")); !strings.Contains(out, "hello from remote") {
			t.Errorf("NAT egress from b: %q", out)
		}
		if out := mustGuest(t, "a", "nslookup b.vm"); !strings.Contains(out, b.IP) {
			t.Errorf("DNS: nslookup b.vm:\n%s", out)
		}
		if out := mustGuest(t, "a", wget("http://"+b.IP+":8080/")); !strings.Contains(out, "from-vm-b") {
			t.Errorf("VM to VM: %q", out)
		}
		if out := e.inNS("timeout", "5", "busybox", "wget", "-qO-", "http://127.0.0.1:18081/"); !strings.Contains(out, "from-vm-b") {
			t.Errorf("published port: %q", out)
		}
		// The host reaches b directly too (it learns b's MAC on the way).
		if out := e.inNS("timeout", "5", "busybox", "wget", "-qO-", "http://"+b.IP+":8080/"); !strings.Contains(out, "from-vm-b") {
			t.Errorf("host to guest: %q", out)
		}
	})

	t.Run("host services and metadata", func(t *testing.T) {
		blocked(t, "a host service on the bridge address", "a", wget("http://"+gw+":8081/"))
		blocked(t, "169.254.169.254", "a", wget("http://169.254.169.254/"))
	})

	t.Run("forged source address", func(t *testing.T) {
		// An address the guest was not leased, made the source of its traffic to the
		// remote (which routes back to the guests' network, so without the policy the
		// connection would complete).
		forged := e.prefix + "250"
		mustGuest(t, "a", "ip addr add "+forged+"/32 dev eth0 && ip route add "+rem.addr+"/32 via "+gw+" src "+forged)
		blocked(t, "a connection from a forged source address", "a", wget("http://"+rem.addr+":8000/hello.txt"))
		mustGuest(t, "a", "ip route del "+rem.addr+"/32; ip addr del "+forged+"/32 dev eth0")
		if out := mustGuest(t, "a", wget("http://"+rem.addr+":8000/hello.txt")); !strings.Contains(out, "hello from remote") {
			t.Errorf("egress after the forged address is gone: %q", out)
		}
	})

	t.Run("forged MAC", func(t *testing.T) {
		orig := strings.TrimSpace(mustGuest(t, "a", "cat /sys/class/net/eth0/address"))
		mustGuest(t, "a", "ip link set eth0 address 02:66:66:66:66:66")
		blocked(t, "traffic from a forged MAC", "a", wget("http://"+rem.addr+":8000/hello.txt"))
		mustGuest(t, "a", "ip link set eth0 address "+orig)
		if out := mustGuest(t, "a", wget("http://"+rem.addr+":8000/hello.txt")); !strings.Contains(out, "hello from remote") {
			t.Errorf("egress after the MAC is restored: %q", out)
		}
	})

	t.Run("gratuitous ARP", func(t *testing.T) {
		// b and the host have neighbour entries for the gateway and for b (normal
		// traffic above). a claims both addresses.
		for _, ip := range []string{gw, b.IP} {
			mustGuest(t, "a", "ip addr add "+ip+"/32 dev eth0; arping -U -c 3 -w 3 -I eth0 -s "+ip+" "+ip+"; arping -A -c 3 -w 3 -I eth0 -s "+ip+" "+ip+"; ip addr del "+ip+"/32 dev eth0; true")
		}
		if out := mustGuest(t, "b", "ip neigh show "+gw); strings.Contains(out, "lladdr") && !strings.Contains(out, bridgeMAC) {
			t.Errorf("b's neighbour entry for the gateway %s: %q, want the bridge's MAC %s", gw, out, bridgeMAC)
		}
		if out := e.inNS("ip", "neigh", "show", b.IP, "dev", bridge); !strings.Contains(out, bMAC) {
			t.Errorf("the host's neighbour entry for b %s: %q, want b's MAC %s", b.IP, out, bMAC)
		}
		if out := mustGuest(t, "b", wget("http://"+rem.addr+":8000/hello.txt")); !strings.Contains(out, "hello from remote") {
			t.Errorf("b's egress after a's ARP claims: %q", out)
		}
		if out := e.inNS("timeout", "5", "busybox", "wget", "-qO-", "http://127.0.0.1:18081/"); !strings.Contains(out, "from-vm-b") {
			t.Errorf("b's published port after a's ARP claims: %q", out)
		}
	})

	t.Run("isolate_vms", func(t *testing.T) {
		cfg := filepath.Join(e.root, "config.toml")
		old, err := os.ReadFile(cfg)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(cfg, []byte(strings.Replace(string(old), "[network]\n", "[network]\nisolate_vms = true\n", 1)), 0o644); err != nil {
			t.Fatal(err)
		}
		// The tables go too, as after an upgrade from a banger that had others:
		// bangerd's re-attach must give the running guests their rules back.
		table := privileged.NFTTableName(e.root)
		e.inNS("nft", "delete", "table", "ip", table)
		e.inNS("nft", "delete", "table", "bridge", table)
		e.must("system", "restart")
		blocked(t, "VM to VM with isolate_vms", "a", wget("http://"+b.IP+":8080/"))
		if out := mustGuest(t, "a", wget("http://"+rem.addr+":8000/hello.txt")); !strings.Contains(out, "hello from remote") {
			t.Errorf("NAT egress with isolate_vms: %q", out)
		}
		if out := mustGuest(t, "a", "nslookup b.vm"); !strings.Contains(out, b.IP) {
			t.Errorf("DNS with isolate_vms:\n%s", out)
		}
		if out := e.inNS("timeout", "5", "busybox", "wget", "-qO-", "http://127.0.0.1:18081/"); !strings.Contains(out, "from-vm-b") {
			t.Errorf("published port with isolate_vms: %q", out)
		}
	})
}

// policyRemote is "the internet" for TestAttackGuestNetwork: 198.18.0.2 with a web
// server, and the metadata address 169.254.169.254 with another, both routed from
// the host namespace; it routes back to the guests' network, so only banger's
// policy stands between a guest's forged traffic and an answer.
type policyRemote struct{ addr string }

func newPolicyRemote(t *testing.T, e *env) policyRemote {
	t.Helper()
	rns := testutil.NetNS(t)
	hostIf, remIf := "up"+testutil.RandHex(2), "rm"+testutil.RandHex(2)
	testutil.Run(t, "ip", "link", "add", hostIf, "netns", e.ns, "type", "veth", "peer", "name", remIf, "netns", rns)
	e.inNS("ip", "addr", "add", "198.18.0.1/30", "dev", hostIf)
	e.inNS("ip", "link", "set", hostIf, "up")
	e.inNS("ip", "route", "add", "169.254.169.254/32", "via", "198.18.0.2")
	in := func(args ...string) { testutil.Run(t, "ip", append([]string{"netns", "exec", rns}, args...)...) }
	in("ip", "addr", "add", "198.18.0.2/30", "dev", remIf)
	in("ip", "addr", "add", "169.254.169.254/32", "dev", remIf)
	in("ip", "link", "set", remIf, "up")
	in("ip", "route", "add", e.prefix+"0/24", "via", "198.18.0.1")
	for _, k := range []string{"all", "default", remIf} {
		in("sysctl", "-qw", "net.ipv4.conf."+k+".rp_filter=0")
	}
	web, meta := t.TempDir(), t.TempDir()
	if err := os.WriteFile(filepath.Join(web, "hello.txt"), []byte("hello from remote\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(meta, "index.html"), []byte("metadata-secret\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	startHTTPD(t, rns, "198.18.0.2:8000", web)
	startHTTPD(t, rns, "169.254.169.254:80", meta)
	waitHTTP(t, e.ns, "http://198.18.0.2:8000/hello.txt", "hello from remote")
	waitHTTP(t, e.ns, "http://169.254.169.254/", "metadata-secret")
	return policyRemote{addr: "198.18.0.2"}
}

// startHTTPD serves dir on addr in namespace ns until the test ends.
func startHTTPD(t *testing.T, ns, addr, dir string) {
	t.Helper()
	srv := exec.Command("ip", "netns", "exec", ns, "busybox", "httpd", "-f", "-p", addr, "-h", dir)
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = srv.Process.Kill(); _ = srv.Wait() })
}

// waitHTTP waits until url, fetched from namespace ns, answers with want.
func waitHTTP(t *testing.T, ns, url, want string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		out, err := exec.Command("ip", "netns", "exec", ns, "timeout", "2", "busybox", "wget", "-qO-", url).Output()
		if err == nil && strings.Contains(string(out), want) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s not answering %q from namespace %s: %v %s", url, want, ns, err, out)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
