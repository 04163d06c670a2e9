package hostnetwork

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"
)

// memTaps is an in-memory TapOps that records what the pool asked of the kernel,
// so the pool's bookkeeping can be checked exactly. The real helper path is covered
// by the integration test in the daemon and by BenchmarkTapAcquire.
type memTaps struct {
	mu      sync.Mutex
	taps    map[string]bool
	created []string
	deleted []string
	failOn  map[string]error // CreateTap of that name fails
	failAll error            // every CreateTap fails
	block   chan struct{}    // when set, CreateTap waits on it (or ctx)
}

func newMemTaps(existing ...string) *memTaps {
	m := &memTaps{taps: map[string]bool{}, failOn: map[string]error{}}
	for _, n := range existing {
		m.taps[n] = true
	}
	return m
}

func (m *memTaps) CreateTap(ctx context.Context, name string) error {
	if m.block != nil {
		select {
		case <-m.block:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.failAll != nil {
		return m.failAll
	}
	if err := m.failOn[name]; err != nil {
		return err
	}
	if m.taps[name] {
		return fmt.Errorf("tap %q exists", name)
	}
	m.taps[name] = true
	m.created = append(m.created, name)
	return nil
}

func (m *memTaps) DeleteTap(_ context.Context, name string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	delete(m.taps, name)
	m.deleted = append(m.deleted, name)
	return nil
}

func (m *memTaps) snapshot() (created, deleted []string, live []string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	for n := range m.taps {
		live = append(live, n)
	}
	slices.Sort(live)
	return slices.Clone(m.created), slices.Clone(m.deleted), live
}

func settle(t *testing.T, p *TapPool) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := p.WaitWarm(ctx); err != nil {
		t.Fatalf("warm-up did not settle: %v", err)
	}
}

func TestTapPoolSemantics(t *testing.T) {
	type step struct {
		op       string // acquire, release
		arg      string // fallback name (acquire) or tap (release)
		wantName string
		wantPool bool
	}
	tests := []struct {
		name        string
		size        int
		inUse       []string
		present     []string
		failAll     error
		steps       []step
		wantIdle    []string
		wantNext    int
		wantCreated []string
		wantDeleted []string
	}{
		{
			name:        "warm-up fills an empty pool from index 0",
			size:        3,
			wantIdle:    []string{"tap-pool-0", "tap-pool-1", "tap-pool-2"},
			wantNext:    3,
			wantCreated: []string{"tap-pool-0", "tap-pool-1", "tap-pool-2"},
		},
		{
			name:     "index seeded past taps VMs hold",
			size:     2,
			inUse:    []string{"tap-pool-7", "tap-vm-abc", "tap-pool-3"},
			present:  []string{"tap-pool-7", "tap-vm-abc", "tap-pool-3"},
			wantIdle: []string{"tap-pool-8", "tap-pool-9"},
			wantNext: 10, wantCreated: []string{"tap-pool-8", "tap-pool-9"},
		},
		{
			name:        "a VM tap no VM holds is an orphan: deleted",
			size:        1,
			inUse:       []string{"tap-vm-aaaa"},
			present:     []string{"tap-vm-aaaa", "tap-vm-bbbb"},
			wantIdle:    []string{"tap-pool-0"},
			wantNext:    1,
			wantCreated: []string{"tap-pool-0"},
			wantDeleted: []string{"tap-vm-bbbb"},
		},
		{
			name:     "idle pool taps left by an earlier daemon are adopted, surplus deleted",
			size:     2,
			inUse:    []string{"tap-pool-1"},
			present:  []string{"tap-pool-0", "tap-pool-1", "tap-pool-4", "tap-pool-9"},
			wantIdle: []string{"tap-pool-0", "tap-pool-4"},
			wantNext: 10, wantDeleted: []string{"tap-pool-9"},
		},
		{
			name:        "size 0 disables the pool: acquire creates the fallback, release deletes",
			size:        0,
			steps:       []step{{op: "acquire", arg: "tap-vm-1", wantName: "tap-vm-1"}, {op: "release", arg: "tap-vm-1"}},
			wantCreated: []string{"tap-vm-1"},
			wantDeleted: []string{"tap-vm-1"},
		},
		{
			name: "acquire pops the oldest idle tap and the pool refills",
			size: 2,
			steps: []step{
				{op: "acquire", arg: "tap-vm-1", wantName: "tap-pool-0", wantPool: true},
			},
			wantIdle:    []string{"tap-pool-1", "tap-pool-2"},
			wantNext:    3,
			wantCreated: []string{"tap-pool-0", "tap-pool-1", "tap-pool-2"},
		},
		{
			name: "a released pool tap goes back while there is room",
			size: 1,
			steps: []step{
				{op: "acquire", arg: "tap-vm-1", wantName: "tap-pool-0", wantPool: true},
				// refill made tap-pool-1; the pool is full, so tap-pool-0 is deleted
				{op: "release", arg: "tap-pool-0"},
			},
			wantIdle:    []string{"tap-pool-1"},
			wantNext:    2,
			wantCreated: []string{"tap-pool-0", "tap-pool-1"},
			wantDeleted: []string{"tap-pool-0"},
		},
		{
			name:        "a fallback tap is deleted on release, never pooled",
			size:        1,
			present:     []string{"tap-vm-9"},
			inUse:       []string{"tap-vm-9"},
			steps:       []step{{op: "release", arg: "tap-vm-9"}},
			wantIdle:    []string{"tap-pool-0"},
			wantNext:    1,
			wantCreated: []string{"tap-pool-0"},
			wantDeleted: []string{"tap-vm-9"},
		},
		{
			name:     "warm-up stops at the first error; acquire still falls back",
			size:     3,
			failAll:  errors.New("helper down"),
			steps:    []step{{op: "acquire", arg: "tap-vm-2", wantName: ""}},
			wantIdle: nil, wantNext: 1,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx := context.Background()
			ops := newMemTaps(tt.present...)
			ops.failAll = tt.failAll
			p := NewTapPool(TapPoolConfig{Ops: ops, Size: tt.size})
			t.Cleanup(p.Close)
			if err := p.Open(ctx, tt.inUse, tt.present); err != nil {
				t.Fatalf("Open: %v", err)
			}
			settle(t, p)
			for i, s := range tt.steps {
				switch s.op {
				case "acquire":
					name, fromPool, err := p.Acquire(ctx, s.arg)
					if s.wantName == "" {
						if err == nil {
							t.Fatalf("step %d: Acquire = %q, want an error", i, name)
						}
						continue
					}
					if err != nil || name != s.wantName || fromPool != s.wantPool {
						t.Fatalf("step %d: Acquire = %q, %v, %v; want %q, %v", i, name, fromPool, err, s.wantName, s.wantPool)
					}
				case "release":
					if err := p.Release(ctx, s.arg); err != nil {
						t.Fatalf("step %d: Release(%q): %v", i, s.arg, err)
					}
				}
				settle(t, p)
			}
			st := p.Stats()
			if !slices.Equal(st.IdleTaps, tt.wantIdle) && !(len(st.IdleTaps) == 0 && len(tt.wantIdle) == 0) {
				t.Errorf("idle = %v, want %v", st.IdleTaps, tt.wantIdle)
			}
			if st.NextIndex != tt.wantNext {
				t.Errorf("next index = %d, want %d", st.NextIndex, tt.wantNext)
			}
			created, deleted, _ := ops.snapshot()
			if !slices.Equal(created, tt.wantCreated) {
				t.Errorf("created = %v, want %v", created, tt.wantCreated)
			}
			if !slices.Equal(deleted, tt.wantDeleted) {
				t.Errorf("deleted = %v, want %v", deleted, tt.wantDeleted)
			}
		})
	}
}

func TestTapPoolCloseStopsWarmUp(t *testing.T) {
	ops := newMemTaps()
	ops.block = make(chan struct{}) // CreateTap hangs until cancelled
	p := NewTapPool(TapPoolConfig{Ops: ops, Size: 4})
	if err := p.Open(context.Background(), nil, nil); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { p.Close(); close(done) }()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("Close did not stop a warm-up blocked in CreateTap")
	}
	if _, _, err := p.Acquire(context.Background(), "tap-vm-1"); !errors.Is(err, ErrPoolClosed) {
		t.Fatalf("Acquire after Close: err = %v, want ErrPoolClosed", err)
	}
	if created, _, _ := ops.snapshot(); len(created) != 0 {
		t.Fatalf("created %v after close, want none", created)
	}
}

// TestTapPoolConcurrent hammers Acquire/Release from many goroutines under -race and
// checks the invariants: no tap handed to two holders at once, the pool never exceeds
// its size, and every tap that exists is either idle or held.
func TestTapPoolConcurrent(t *testing.T) {
	ctx := context.Background()
	ops := newMemTaps()
	const size = 4
	p := NewTapPool(TapPoolConfig{Ops: ops, Size: size})
	t.Cleanup(p.Close)
	if err := p.Open(ctx, nil, nil); err != nil {
		t.Fatal(err)
	}
	var (
		mu   sync.Mutex
		held = map[string]bool{}
		wg   sync.WaitGroup
		errc = make(chan error, 64)
	)
	for g := 0; g < 16; g++ {
		wg.Add(1)
		go func(g int) {
			defer wg.Done()
			for i := 0; i < 50; i++ {
				fallback := fmt.Sprintf("tap-vm-%x", g*1000+i)
				name, _, err := p.Acquire(ctx, fallback)
				if err != nil {
					errc <- err
					return
				}
				mu.Lock()
				if held[name] {
					mu.Unlock()
					errc <- fmt.Errorf("tap %q handed out twice", name)
					return
				}
				held[name] = true
				mu.Unlock()
				if st := p.Stats(); st.Idle > size {
					errc <- fmt.Errorf("pool holds %d idle taps, size %d", st.Idle, size)
					return
				}
				mu.Lock()
				delete(held, name)
				mu.Unlock()
				if err := p.Release(ctx, name); err != nil {
					errc <- err
					return
				}
			}
		}(g)
	}
	wg.Wait()
	close(errc)
	for err := range errc {
		t.Fatal(err)
	}
	settle(t, p)
	st := p.Stats()
	_, _, live := ops.snapshot()
	if st.Idle != size {
		t.Errorf("idle after settling = %d, want %d", st.Idle, size)
	}
	idle := slices.Clone(st.IdleTaps)
	slices.Sort(idle)
	if !slices.Equal(live, idle) {
		t.Errorf("taps on host = %v, want exactly the idle pool %v (nothing leaked)", live, idle)
	}
}
