package vmdns

import (
	"context"
	"net/netip"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"
)

// dig runs the real dig against addr and returns its output.
func dig(t *testing.T, addr netip.AddrPort, args ...string) string {
	t.Helper()
	path, err := exec.LookPath("dig")
	if err != nil {
		t.Skip("dig is not installed (apt-get install dnsutils): cannot check the server with a real resolver tool")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	argv := append([]string{"@" + addr.Addr().String(), "-p", strconv.Itoa(int(addr.Port())), "+time=3", "+tries=1"}, args...)
	out, err := exec.CommandContext(ctx, path, argv...).CombinedOutput()
	if err != nil {
		t.Fatalf("dig %s: %v\n%s", strings.Join(argv, " "), err, out)
	}
	return string(out)
}

var digStatus = regexp.MustCompile(`status: ([A-Z]+)`)
var digFlags = regexp.MustCompile(`;; flags: ([a-z ]+);`)

func TestDig(t *testing.T) {
	up := startUpstream(t, false)
	s := startServer(t, Options{Upstreams: []string{up.addr.String()}})
	if err := s.Set("dev", netip.MustParseAddr("10.0.0.5")); err != nil {
		t.Fatal(err)
	}
	for _, transport := range []string{"+notcp", "+tcp"} {
		t.Run(transport, func(t *testing.T) {
			if got := strings.TrimSpace(dig(t, s.Addr(), transport, "+short", "dev.vm")); got != "10.0.0.5" {
				t.Errorf("dig +short dev.vm: got %q, want 10.0.0.5", got)
			}
			if got := strings.TrimSpace(dig(t, s.Addr(), transport, "+short", "DEV.VM")); got != "10.0.0.5" {
				t.Errorf("dig +short DEV.VM: got %q, want 10.0.0.5", got)
			}
			if got := strings.TrimSpace(dig(t, s.Addr(), transport, "+short", "example.test")); got != "192.0.2.1" {
				t.Errorf("dig +short example.test (forwarded): got %q, want 192.0.2.1", got)
			}

			out := dig(t, s.Addr(), transport, "nope.vm")
			if m := digStatus.FindStringSubmatch(out); m == nil || m[1] != "NXDOMAIN" {
				t.Errorf("dig nope.vm: got status %v, want NXDOMAIN\n%s", m, out)
			}
			if m := digFlags.FindStringSubmatch(out); m == nil || !strings.Contains(" "+m[1]+" ", " aa ") {
				t.Errorf("dig nope.vm: got flags %v, want aa among them\n%s", m, out)
			}
			if !strings.Contains(out, "ns.dns.vm. hostmaster.vm.") {
				t.Errorf("dig nope.vm: want the zone's SOA in the authority section\n%s", out)
			}

			out = dig(t, s.Addr(), transport, "AAAA", "dev.vm")
			if m := digStatus.FindStringSubmatch(out); m == nil || m[1] != "NOERROR" || !strings.Contains(out, "ANSWER: 0") {
				t.Errorf("dig AAAA dev.vm: want NOERROR with no answer (NODATA)\n%s", out)
			}
		})
	}
}
