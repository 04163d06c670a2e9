package vmdns

import (
	"fmt"
	"net/netip"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/miekg/dns"
)

// TestConcurrentChangesAndQueries races Set, Remove, Replace, Records and Lookup
// against queries over UDP and TCP (run it with -race). Each VM vmN only ever
// has the address 10.1.0.N, so any other answer is a torn or mixed-up record.
func TestConcurrentChangesAndQueries(t *testing.T) {
	s := startServer(t, Options{})
	const names = 16
	ipOf := func(i int) netip.Addr { return netip.AddrFrom4([4]byte{10, 1, 0, byte(i)}) }

	var wg sync.WaitGroup
	errs := make(chan error, 64)
	report := func(err error) {
		select {
		case errs <- err:
		default:
		}
	}
	for w := range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 300 {
				n := (i*7 + w) % names
				switch i % 5 {
				case 0, 1:
					if err := s.Set(fmt.Sprintf("vm%d", n), ipOf(n)); err != nil {
						report(err)
					}
				case 2:
					s.Remove(fmt.Sprintf("vm%d", n))
				case 3:
					set := map[string]netip.Addr{}
					for k := n; k < names; k += 3 {
						set[fmt.Sprintf("vm%d", k)] = ipOf(k)
					}
					if err := s.Replace(set); err != nil {
						report(err)
					}
				case 4:
					for name, ip := range s.Records() {
						var k int
						if _, err := fmt.Sscanf(name, "vm%d", &k); err != nil || ip != ipOf(k) {
							report(fmt.Errorf("Records: %s → %v", name, ip))
						}
					}
					if ip, ok := s.Lookup(fmt.Sprintf("VM%d", n)); ok && ip != ipOf(n) {
						report(fmt.Errorf("Lookup vm%d: got %v, want %v", n, ip, ipOf(n)))
					}
				}
			}
		}()
	}
	for _, network := range networks {
		for q := range 3 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				c := &dns.Client{Net: network, Timeout: 10 * time.Second}
				for i := range 100 {
					n := (i + q) % names
					r, _, err := c.Exchange(new(dns.Msg).SetQuestion(fmt.Sprintf("vm%d.vm.", n), dns.TypeA), s.Addr().String())
					if err != nil {
						report(fmt.Errorf("%s query: %w", network, err))
						return
					}
					switch {
					case r.Rcode == dns.RcodeNameError && len(r.Answer) == 0:
					case r.Rcode == dns.RcodeSuccess && slices.Equal(summary(r.Answer), []string{"A " + ipOf(n).String()}):
					default:
						report(fmt.Errorf("%s vm%d: got %s %q, want NXDOMAIN or A %v", network, n, dns.RcodeToString[r.Rcode], summary(r.Answer), ipOf(n)))
					}
				}
			}()
		}
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}
