package qemu

import (
	"context"
	"slices"
	"testing"
	"time"

	"banger/internal/vmm/vmmtest"
)

// BenchmarkStartToAgent times the driver alone: Start to the guest agent
// answering a health call (the host kernel, banger's initramfs, a busybox root
// with banger-agent as init), under whatever accelerator the host gets (TCG
// here). Besides ns/op it reports the median and the fastest boot, since one
// slow boot on a shared machine skews a mean. scripts/bench-vmm.sh runs it.
func BenchmarkStartToAgent(b *testing.B) {
	g := newGuest(b)
	drv := New(Options{})
	b.Logf("accelerator: %+v", drv.Accel())
	var boots []time.Duration
	for i := 0; i < b.N; i++ {
		b.StopTimer()
		spec := g.spec(b)
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
		b.StartTimer()
		t0 := time.Now()
		h, err := drv.Start(ctx, spec)
		if err != nil {
			cancel()
			b.Fatalf("Start: %v", err)
		}
		vmmtest.KillOnCleanup(b, drv, h)
		if _, err := vmmtest.WaitAgent(ctx, drv, h); err != nil {
			cancel()
			b.Fatalf("agent: %v", err)
		}
		boots = append(boots, time.Since(t0))
		b.StopTimer()
		if err := drv.Kill(ctx, h); err != nil {
			b.Errorf("Kill: %v", err)
		}
		cancel()
		b.StartTimer()
	}
	slices.Sort(boots)
	b.ReportMetric(float64(boots[len(boots)/2].Milliseconds()), "median-ms")
	b.ReportMetric(float64(boots[0].Milliseconds()), "min-ms")
}
