package hostnetwork_test

import (
	"context"
	"fmt"
	"os"
	"testing"

	"banger/internal/config"
	"banger/internal/hostnetwork"
	"banger/internal/layout"
	"banger/internal/privileged"
	"banger/internal/testutil"
)

func TestMain(m *testing.M) {
	code := m.Run()
	testutil.Cleanup()
	os.Exit(code)
}

// helperTaps drives real taps through the real helper, as bangerd does.
type helperTaps struct {
	c      *privileged.Client
	bridge string
}

func (h helperTaps) CreateTap(ctx context.Context, name string) error {
	return h.c.CreateTap(ctx, privileged.CreateTapRequest{Name: name, Bridge: h.bridge})
}

func (h helperTaps) DeleteTap(ctx context.Context, name string) error {
	return h.c.DeleteTap(ctx, privileged.DeleteTapRequest{Name: name})
}

func benchHelper(b *testing.B) helperTaps {
	b.Helper()
	testutil.RequireRoot(b)
	root := testutil.Root(b)
	l, err := layout.New(root)
	if err != nil {
		b.Fatal(err)
	}
	if err := l.Create(-1, -1); err != nil {
		b.Fatal(err)
	}
	if err := os.WriteFile(l.ConfigPath(), []byte("[network]\nbridge = \"bb0\"\nbridge_cidr = \"10.213.11.1/24\"\n"), 0o644); err != nil {
		b.Fatal(err)
	}
	cfg, err := config.Load(l.ConfigPath())
	if err != nil {
		b.Fatal(err)
	}
	c := testutil.StartHelper(b, root)
	addr, _ := cfg.BridgePrefix()
	if _, err := c.EnsureBridge(context.Background(), privileged.EnsureBridgeRequest{Name: "bb0", Address: addr, MTU: 1500}); err != nil {
		b.Fatal(err)
	}
	return helperTaps{c: c, bridge: "bb0"}
}

// BenchmarkTapAcquire compares what a VM start pays for its tap: popping one from a
// warm pool versus creating one through the helper (what the pool takes off the
// start path). scripts/bench.sh prints both and their ratio.
func BenchmarkTapAcquire(b *testing.B) {
	ops := benchHelper(b)
	ctx := context.Background()

	b.Run("warm-pool", func(b *testing.B) {
		pool := hostnetwork.NewTapPool(hostnetwork.TapPoolConfig{Ops: ops, Size: 8})
		defer pool.Close()
		if err := pool.Open(ctx, nil, nil); err != nil {
			b.Fatal(err)
		}
		for b.Loop() {
			b.StopTimer()
			if err := pool.WaitWarm(ctx); err != nil {
				b.Fatal(err)
			}
			b.StartTimer()
			name, fromPool, err := pool.Acquire(ctx, "tap-vm-ffff")
			b.StopTimer()
			if err != nil || !fromPool {
				b.Fatalf("Acquire = %q, %v, %v; want a pool tap", name, fromPool, err)
			}
			if err := pool.WaitWarm(ctx); err != nil {
				b.Fatal(err)
			}
			if err := ops.DeleteTap(ctx, name); err != nil {
				b.Fatal(err)
			}
			b.StartTimer()
		}
	})

	b.Run("create", func(b *testing.B) {
		i := 0
		for b.Loop() {
			name := fmt.Sprintf("tap-vm-%x", i)
			i++
			if err := ops.CreateTap(ctx, name); err != nil {
				b.Fatal(err)
			}
			b.StopTimer()
			if err := ops.DeleteTap(ctx, name); err != nil {
				b.Fatal(err)
			}
			b.StartTimer()
		}
	})
}
