package e2e_test

import (
	"fmt"
	"sync"
	"testing"

	"banger/internal/api"
)

// TestConcurrentRuns: six `vm run` at once get distinct IPs, taps and vsock CIDs,
// and all are reachable.
func TestConcurrentRuns(t *testing.T) {
	e := newEnv(t, 2)
	const n = 6
	vms := make([]api.VM, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			vms[i] = e.vmRun(fmt.Sprintf("c%d", i))
		}(i)
	}
	wg.Wait()
	if t.Failed() {
		return
	}
	ips, taps, cids := map[string]bool{}, map[string]bool{}, map[uint32]bool{}
	for _, v := range vms {
		if ips[v.IP] || taps[v.Tap] || cids[v.VsockCID] {
			t.Errorf("%s shares an address, tap or CID: ip %s tap %s cid %d", v.Name, v.IP, v.Tap, v.VsockCID)
		}
		ips[v.IP], taps[v.Tap], cids[v.VsockCID] = true, true, true
	}
	for _, v := range vms {
		e.reachable(v.Name)
	}
	for _, v := range vms {
		e.must("vm", "rm", "-f", v.Name)
	}
	e.assertNothingLeaked()
}
