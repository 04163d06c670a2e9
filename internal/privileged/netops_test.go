package privileged

import (
	"regexp"
	"testing"
)

func TestParseGuestMAC(t *testing.T) {
	for _, c := range []struct {
		in string
		ok bool
	}{
		{"02:00:ac:1e:00:02", true},
		{"52:54:00:12:34:56", true},
		{"", false},
		{"ff:ff:ff:ff:ff:ff", false},       // broadcast
		{"01:00:5e:00:00:01", false},       // multicast
		{"03:00:00:00:00:01", false},       // multicast bit with the local bit
		{"00:00:00:00:00:00", false},       // zero
		{"02:00:00:00:00", false},          // five bytes
		{"02:00:00:00:00:00:00:01", false}, // EUI-64
		{"00:00:00:00:fe:80:00:00:00:00:00:00:02:00:5e:10:00:00:00:01", false}, // InfiniBand
		{"02-00-00-00-00-02;", false},
		{"zz:00:00:00:00:02", false},
	} {
		mac, err := ParseGuestMAC(c.in)
		if (err == nil) != c.ok {
			t.Errorf("ParseGuestMAC(%q) = %v, %v; want ok %v", c.in, mac, err, c.ok)
		}
	}
}

func TestRootNames(t *testing.T) {
	re := regexp.MustCompile(`^banger_[0-9a-f]{8}$`)
	a, b := NFTTableName("/var/lib/banger"), NFTTableName("/home/dev/.banger")
	if !re.MatchString(a) || !re.MatchString(b) || a == b {
		t.Errorf("table names %q, %q: want banger_ and 8 hex digits, different per root", a, b)
	}
	if NFTTableName("/var/lib/banger") != a {
		t.Errorf("table name not stable")
	}
	ga, gb := TapGroup("/var/lib/banger"), TapGroup("/home/dev/.banger")
	if ga == gb || ga>>24 != 0xba || gb>>24 != 0xba {
		t.Errorf("tap groups %#x, %#x: want different, in 0xba000000-0xbaffffff", ga, gb)
	}
}
