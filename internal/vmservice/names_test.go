package vmservice

import (
	"net/netip"
	"strings"
	"testing"

	"banger/internal/disk"
	"banger/internal/store"
)

func TestValidateName(t *testing.T) {
	for name, ok := range map[string]bool{
		"dev": true, "web-1": true, "a": true, "0abc": true, strings.Repeat("a", 63): true,
		"": false, "Dev": false, "-x": false, "x-": false, "a_b": false, "a.b": false, "dev!": false,
		strings.Repeat("a", 64): false, "a b": false,
	} {
		if err := ValidateName(name); (err == nil) != ok {
			t.Errorf("ValidateName(%q) = %v, want ok=%v", name, err, ok)
		}
	}
}

func TestParseMemory(t *testing.T) {
	tests := []struct {
		in   string
		want int
		err  bool
	}{
		{"512M", 512, false}, {"512", 512, false}, {"2G", 2048, false}, {"1gib", 1024, false}, {"256MB", 256, false},
		{"", 0, true}, {"lots", 0, true}, {"-1G", 0, true}, {"0", 0, true}, {"1.5G", 0, true},
	}
	for _, tt := range tests {
		got, err := ParseMemory(tt.in)
		if (err != nil) != tt.err || got != tt.want {
			t.Errorf("ParseMemory(%q) = %d, %v; want %d, err=%v", tt.in, got, err, tt.want, tt.err)
		}
	}
}

func TestGenerateNameAvoidsTaken(t *testing.T) {
	taken := map[string]bool{}
	for range 50 {
		n := generateName(func(s string) bool { return taken[s] })
		if taken[n] || ValidateName(n) != nil {
			t.Fatalf("generated %q: taken or invalid", n)
		}
		taken[n] = true
	}
}

func TestMACAndID(t *testing.T) {
	id := newID()
	if len(id) != 16 {
		t.Fatalf("id %q: want 16 hex characters", id)
	}
	mac := macFor(id)
	if !strings.HasPrefix(mac, "02:") || len(mac) != 17 {
		t.Errorf("mac %q: want a locally administered unicast address", mac)
	}
	if macFor(id) != mac {
		t.Error("mac is not stable for one id")
	}
	// Ids newID never makes (short, not hex) still get a stable unicast MAC, not a
	// panic: they come from stored records.
	for _, odd := range []string{"", "0000aaaa", "not-hex-at-all", "vm1"} {
		m := macFor(odd)
		if !strings.HasPrefix(m, "02:") || len(m) != 17 || macFor(odd) != m {
			t.Errorf("macFor(%q) = %q, want a stable locally administered MAC", odd, m)
		}
	}
}

type bridgeOnly struct{ Network }

func (bridgeOnly) Bridge() netip.Prefix { return netip.MustParsePrefix("172.30.77.1/24") }

func TestCmdlineAndCID(t *testing.T) {
	s := &Service{d: Deps{Network: bridgeOnly{}, Domain: "vm", MTU: 1500}}
	vm := store.VM{Name: "dev"}
	ip := netip.MustParseAddr("172.30.77.5")
	got := s.cmdline(vm, ip, disk.Disk{NeedsOnlineResize: true})
	for _, want := range []string{"root=/dev/vda", "banger.hostname=dev", "banger.ip=172.30.77.5/24", "banger.gw=172.30.77.1", "banger.dns=172.30.77.1", "banger.search=vm", "banger.mtu=1500", "banger.growroot=1"} {
		if !strings.Contains(got, want) {
			t.Errorf("cmdline %q lacks %q", got, want)
		}
	}
	if strings.Contains(s.cmdline(vm, ip, disk.Disk{}), "growroot") {
		t.Error("growroot without a disk that needs it")
	}
	if c := s.cid(ip); c != 10005 {
		t.Errorf("cid(172.30.77.5) = %d, want 10005 (10000 + last octet on a /24)", c)
	}
}
