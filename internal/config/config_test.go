package config

import (
	"net/netip"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

func TestLoadDefaultsWhenMissing(t *testing.T) {
	cfg, err := Load(filepath.Join(t.TempDir(), "config.toml"))
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(cfg, Default()) {
		t.Errorf("got %+v, want defaults %+v", cfg, Default())
	}
	listen, err := cfg.DNSListen()
	if err != nil || listen != netip.MustParseAddrPort("172.30.77.1:5353") {
		t.Errorf("DNSListen = %v, %v; want 172.30.77.1:5353", listen, err)
	}
}

func TestLoadOverrides(t *testing.T) {
	path := filepath.Join(t.TempDir(), "config.toml")
	body := "[network]\nbridge = \"vmbr7\"\nbridge_cidr = \"10.9.8.1/24\"\ntap_pool_size = 0\n[dns]\ndomain = \"dev.local\"\nlisten = \"127.0.0.1:5399\"\n[vmm]\ndriver = \"qemu\"\n"
	if err := os.WriteFile(path, []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
	cfg, err := Load(path)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Network.Bridge != "vmbr7" || cfg.Network.TapPoolSize != 0 || cfg.DNS.Domain != "dev.local" || cfg.VMM.Driver != "qemu" || cfg.Network.MTU != DefaultMTU {
		t.Errorf("got %+v", cfg)
	}
}

// TestLoadRejects checks that every bad value fails naming the field and a fix.
func TestLoadRejects(t *testing.T) {
	tests := []struct {
		name, body string
		want       []string
	}{
		{"unknown key", "[network]\nbrige = \"x\"\n", []string{"unknown key(s) network.brige"}},
		{"unknown section", "[netwrk]\nbridge = \"x\"\n", []string{"netwrk"}},
		{"syntax", "[network\n", []string{"config.toml"}},
		{"wrong type", "[network]\ntap_pool_size = \"four\"\n", []string{"tap_pool_size"}},
		{"bridge too long", "[network]\nbridge = \"averyveryverylongbridge\"\n", []string{"network.bridge", "1-15"}},
		{"bridge with shell chars", "[network]\nbridge = \"br0;reboot\"\n", []string{"network.bridge"}},
		{"bridge in tap namespace", "[network]\nbridge = \"tap-pool-1\"\n", []string{"network.bridge", "tap- prefix"}},
		{"cidr garbage", "[network]\nbridge_cidr = \"nope\"\n", []string{"network.bridge_cidr", "write it like"}},
		{"cidr ipv6", "[network]\nbridge_cidr = \"fd00::1/64\"\n", []string{"only IPv4"}},
		{"cidr public", "[network]\nbridge_cidr = \"8.8.8.1/24\"\n", []string{"not a private address"}},
		{"cidr too wide", "[network]\nbridge_cidr = \"10.0.0.1/8\"\n", []string{"/16 to /29"}},
		{"cidr too narrow", "[network]\nbridge_cidr = \"10.0.0.1/30\"\n", []string{"/16 to /29"}},
		{"bridge is network address", "[network]\nbridge_cidr = \"10.0.0.0/24\"\n", []string{"host address", "10.0.0.1"}},
		{"bridge is broadcast", "[network]\nbridge_cidr = \"10.0.0.255/24\"\n", []string{"host address"}},
		{"pool negative", "[network]\ntap_pool_size = -1\n", []string{"network.tap_pool_size", "0 (no pool)"}},
		{"pool huge", "[network]\ntap_pool_size = 1000\n", []string{"network.tap_pool_size"}},
		{"mtu", "[network]\nmtu = 100\n", []string{"network.mtu"}},
		{"domain uppercase", "[dns]\ndomain = \"VM\"\n", []string{"dns.domain"}},
		{"domain empty label", "[dns]\ndomain = \"a..b\"\n", []string{"dns.domain"}},
		{"listen without port", "[dns]\nlisten = \"127.0.0.1\"\n", []string{"dns.listen", "host:port"}},
		{"driver", "[vmm]\ndriver = \"kvmtool\"\n", []string{"vmm.driver", "auto, firecracker or qemu"}},
		{"egress garbage", "[network]\negress_deny = [\"lan\"]\n", []string{"network.egress_deny", "\"private\""}},
		{"egress ipv6", "[network]\negress_deny = [\"fd00::/8\"]\n", []string{"network.egress_deny", "only IPv4"}},
		{"dns inflight zero", "[dns]\nmax_inflight = 0\n", []string{"dns.max_inflight", "1 to 65536"}},
		{"dns per source above total", "[dns]\nmax_inflight = 8\nmax_inflight_per_source = 9\n", []string{"dns.max_inflight_per_source"}},
		{"console size garbage", "[console]\nmax_size = \"lots\"\n", []string{"console.max_size"}},
		{"disk strategy", "[disk]\nstrategy = \"zfs\"\n", []string{"disk.strategy", "auto, dm-snapshot, reflink, qcow2, copy"}},
		{"console size tiny", "[console]\nmax_size = \"100\"\n", []string{"console.max_size", "4K to 1G"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "config.toml")
			if err := os.WriteFile(path, []byte(tt.body), 0o644); err != nil {
				t.Fatal(err)
			}
			_, err := Load(path)
			if err == nil {
				t.Fatalf("Load succeeded, want an error mentioning %q", tt.want)
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q lacks %q", err, w)
				}
			}
		})
	}
}

func TestCheckOverlap(t *testing.T) {
	cfg := Default() // 172.30.77.1/24 on banger0
	r := func(dst, dev string) Route { return Route{Dst: netip.MustParsePrefix(dst), Device: dev} }
	tests := []struct {
		name   string
		routes []Route
		want   string // "" for no error
	}{
		{"no routes", nil, ""},
		{"unrelated", []Route{r("192.0.2.0/24", "eth0"), r("10.0.0.0/8", "wg0")}, ""},
		{"default route ignored", []Route{r("0.0.0.0/0", "eth0")}, ""},
		{"our own bridge ignored", []Route{r("172.30.77.0/24", "banger0")}, ""},
		{"same /24 elsewhere", []Route{r("172.30.77.0/24", "eth1")}, "overlaps the host route 172.30.77.0/24 on eth1"},
		{"containing /16", []Route{r("172.30.0.0/16", "docker1")}, "172.30.0.0/16 on docker1"},
		{"contained /28", []Route{r("172.30.77.16/28", "vpn0")}, "vpn0"},
		{"ipv6 ignored", []Route{r("fd00::/8", "eth0")}, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := cfg.CheckOverlap(tt.routes)
			switch {
			case tt.want == "" && err != nil:
				t.Errorf("got %v, want no error", err)
			case tt.want != "" && (err == nil || !strings.Contains(err.Error(), tt.want)):
				t.Errorf("got %v, want an error containing %q", err, tt.want)
			case tt.want != "" && !strings.Contains(err.Error(), "network.bridge_cidr"):
				t.Errorf("error %q does not say which setting to change", err)
			}
		})
	}
}

func TestBroadcast(t *testing.T) {
	for in, want := range map[string]string{"10.0.0.1/24": "10.0.0.255", "172.16.5.9/16": "172.16.255.255", "192.168.1.9/29": "192.168.1.15"} {
		if got := Broadcast(netip.MustParsePrefix(in)); got.String() != want {
			t.Errorf("Broadcast(%s) = %s, want %s", in, got, want)
		}
	}
}

func TestSecurityKeys(t *testing.T) {
	path := filepath.Join(t.TempDir(), "config.toml")
	body := "[network]\nisolate_vms = true\negress_deny = [\"private\", \"10.1.2.3/16\", \"203.0.113.0/24\"]\n[dns]\nmax_inflight = 10\nmax_inflight_per_source = 2\n[console]\nmax_size = \"64K\"\n"
	if err := os.WriteFile(path, []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
	cfg, err := Load(path)
	if err != nil {
		t.Fatal(err)
	}
	deny, err := cfg.EgressDenyPrefixes()
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, p := range deny {
		got = append(got, p.String())
	}
	// "private" expands; 10.1.2.3/16 is masked to 10.1.0.0/16 and kept (it is not a
	// duplicate of 10.0.0.0/8, only inside it).
	want := []string{"10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "100.64.0.0/10", "10.1.0.0/16", "203.0.113.0/24"}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("EgressDenyPrefixes = %v, want %v", got, want)
	}
	if !cfg.Network.IsolateVMs || cfg.DNS.MaxInFlight != 10 || cfg.DNS.MaxInFlightPerSource != 2 {
		t.Errorf("got %+v", cfg)
	}
	if n, err := cfg.ConsoleMaxBytes(); err != nil || n != 64<<10 {
		t.Errorf("ConsoleMaxBytes = %d, %v; want 65536", n, err)
	}
	if n, _ := Default().ConsoleMaxBytes(); n != 1<<20 {
		t.Errorf("default console cap = %d, want 1 MiB", n)
	}
}
