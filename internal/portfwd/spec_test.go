package portfwd

import (
	"net/netip"
	"strings"
	"testing"
)

func TestParseSpec(t *testing.T) {
	lo := DefaultHostIP()
	tests := []struct {
		in      string
		want    Spec
		wantErr string // substring; "" means success
	}{
		{"8080:80", Spec{lo, 8080, 80}, ""},
		{"8080:80/tcp", Spec{lo, 8080, 80}, ""},
		{"8080:80/TCP", Spec{lo, 8080, 80}, ""},
		{"0.0.0.0:8080:80", Spec{netip.MustParseAddr("0.0.0.0"), 8080, 80}, ""},
		{"127.0.0.2:1:65535/tcp", Spec{netip.MustParseAddr("127.0.0.2"), 1, 65535}, ""},
		{"[::1]:8080:80", Spec{netip.MustParseAddr("::1"), 8080, 80}, ""},
		{"[::]:8080:80/tcp", Spec{netip.MustParseAddr("::"), 8080, 80}, ""},
		{"8080:80/udp", Spec{}, "UDP is not supported yet"},
		{"8080:80/sctp", Spec{}, "only tcp"},
		{"80", Spec{}, "no host port"},
		{":80", Spec{}, "no host port"},
		{"127.0.0.1::80", Spec{}, "no host port"},
		{"8080:", Spec{}, "no guest port"},
		{"0:80", Spec{}, "1-65535"},
		{"8080:0", Spec{}, "1-65535"},
		{"65536:80", Spec{}, "1-65535"},
		{"http:80", Spec{}, "not a port number"},
		{"8000-8010:80", Spec{}, "ranges are not supported"},
		{"localhost:8080:80", Spec{}, "not an IP address"},
		{"::1:8080:80", Spec{}, "[ADDR]:HOST:GUEST"},
		{"[::1]8080:80", Spec{}, "[ADDR]:HOST:GUEST"},
		{"[::1]:8080", Spec{}, "[ADDR]:HOST:GUEST"},
		{"[fe80::1%eth0]:8080:80", Spec{}, "zone"},
		{"224.0.0.1:8080:80", Spec{}, "multicast"},
		{"a:b:c:d", Spec{}, "expected HOST:GUEST"},
		{"", Spec{}, "no host port"},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			got, err := ParseSpec(tt.in)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("got %+v, %v; want an error containing %q", got, err, tt.wantErr)
				}
				if !strings.Contains(err.Error(), tt.in) {
					t.Errorf("error %q does not quote the input %q", err, tt.in)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got != tt.want {
				t.Errorf("got %+v, want %+v", got, tt.want)
			}
			if err := got.Validate(); err != nil {
				t.Errorf("Validate: %v", err)
			}
			// The canonical form reads back to the same spec.
			again, err := ParseSpec(got.String())
			if err != nil || again != got {
				t.Errorf("ParseSpec(%q) = %+v, %v; want %+v", got.String(), again, err, got)
			}
		})
	}
}

func TestSpecString(t *testing.T) {
	for in, want := range map[string]string{
		"8080:80":         "127.0.0.1:8080:80/tcp",
		"[::1]:8080:80":   "[::1]:8080:80/tcp",
		"0.0.0.0:443:443": "0.0.0.0:443:443/tcp",
	} {
		s, err := ParseSpec(in)
		if err != nil {
			t.Fatal(err)
		}
		if got := s.String(); got != want {
			t.Errorf("%s: got %q, want %q", in, got, want)
		}
	}
}

func TestParseSpecsConflicts(t *testing.T) {
	tests := []struct {
		in      []string
		wantErr bool
	}{
		{[]string{"8080:80", "8081:80"}, false}, // one guest port twice is fine
		{[]string{"8080:80", "127.0.0.2:8080:81"}, false},
		{[]string{"8080:80", "[::1]:8080:80"}, false},
		{[]string{"8080:80", "8080:81"}, true},
		{[]string{"8080:80", "127.0.0.1:8080:80/tcp"}, true},
		{[]string{"0.0.0.0:8080:80", "127.0.0.2:8080:81"}, true},
		{[]string{"[::]:8080:80", "127.0.0.2:8080:81"}, true},
		{[]string{"8080:80", "8081:81", "8082:82", "8081:83"}, true},
	}
	for _, tt := range tests {
		t.Run(strings.Join(tt.in, ","), func(t *testing.T) {
			specs, err := ParseSpecs(tt.in)
			if tt.wantErr {
				if err == nil || !strings.Contains(err.Error(), "both use host port") {
					t.Errorf("got %v, want a conflict error", err)
				}
				return
			}
			if err != nil || len(specs) != len(tt.in) {
				t.Errorf("got %v, %v; want %d specs", specs, err, len(tt.in))
			}
		})
	}
	if _, err := ParseSpecs([]string{"8080:80", "x"}); err == nil || !strings.Contains(err.Error(), `"x"`) {
		t.Errorf("a bad value: got %v, want its parse error", err)
	}
}
