package hostnetwork

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"

	"banger/internal/privileged"
)

// TapOps creates and deletes taps on the bridge; the helper's client satisfies it
// through an adapter that binds the bridge name.
type TapOps interface {
	CreateTap(ctx context.Context, name string) error
	DeleteTap(ctx context.Context, name string) error
}

// TapPool takes tap creation off the VM start path: it keeps up to Size idle,
// pre-created taps named tap-pool-N (N monotonic, never reused within a daemon's life
// and seeded past every index in use at open, so new entries never collide).
//
// Behaviour (DESIGN.md, "The TAP pool"):
//   - Open seeds the index from the taps VMs hold and adopts idle pool taps left on the
//     host by an earlier daemon, then warms up in the background.
//   - Warm-up creates taps until the pool holds Size, stopping on Close, on
//     cancellation, or on the first creation error (logged).
//   - Acquire pops an idle tap, or creates one under the caller's fallback name.
//   - Release returns a pool tap while there is room; any other tap is deleted, and the
//     warm-up runs again.
//
// All pool state is behind one lock; the kernel work (create, delete) happens outside
// it so a slow helper call never blocks an Acquire that could be served from idle.
type TapPool struct {
	ops  TapOps       // immutable; never nil
	size int          // immutable; 0 disables the pool
	log  *slog.Logger // immutable; never nil

	ctx    context.Context // cancelled by Close; parent of warm-ups
	cancel context.CancelFunc
	wg     sync.WaitGroup // running warm-ups

	mu      sync.Mutex // guards all following fields
	idle    []string   // idle pool taps, oldest first
	next    int        // next pool index to create
	warming bool       // a warm-up goroutine is running
	closed  bool
}

// TapPoolConfig is what NewTapPool needs.
type TapPoolConfig struct {
	Ops    TapOps
	Size   int
	Logger *slog.Logger
}

// ErrPoolClosed is returned by Acquire after Close.
var ErrPoolClosed = errors.New("tap pool: closed")

// NewTapPool returns a pool that does nothing until Open.
func NewTapPool(cfg TapPoolConfig) *TapPool {
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	ctx, cancel := context.WithCancel(context.Background())
	return &TapPool{ops: cfg.Ops, size: max(cfg.Size, 0), log: log, ctx: ctx, cancel: cancel}
}

// Open seeds the pool. inUse are the taps VMs hold (they are never adopted); present
// are banger's taps that exist on the host now. Idle pool taps among present are
// adopted up to Size and the surplus deleted, as are VM taps no VM holds. The index starts past every pool index
// seen in either list. Open then starts the background warm-up and returns at once.
func (p *TapPool) Open(ctx context.Context, inUse, present []string) error {
	held := make(map[string]bool, len(inUse))
	next := 0
	for _, name := range inUse {
		held[name] = true
		if n, ok := privileged.PoolTapIndex(name); ok && n >= next {
			next = n + 1
		}
	}
	var adopt, surplus []string
	for _, name := range present {
		if held[name] {
			continue
		}
		n, ok := privileged.PoolTapIndex(name)
		if !ok {
			// A VM's own tap that no VM holds: an orphan of a crash. Delete it.
			surplus = append(surplus, name)
			continue
		}
		if n >= next {
			next = n + 1
		}
		if len(adopt) < p.size {
			adopt = append(adopt, name)
		} else {
			surplus = append(surplus, name)
		}
	}
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return ErrPoolClosed
	}
	p.idle = append(p.idle, adopt...)
	p.next = max(p.next, next)
	p.mu.Unlock()

	var errs []error
	for _, name := range surplus {
		if err := p.ops.DeleteTap(ctx, name); err != nil {
			errs = append(errs, fmt.Errorf("delete surplus pool tap %q: %w", name, err))
		}
	}
	p.Warm()
	return errors.Join(errs...)
}

// Acquire returns an idle pool tap, or creates one named fallback when the pool is
// empty. fromPool tells which happened (a VM's record keeps the name either way).
func (p *TapPool) Acquire(ctx context.Context, fallback string) (name string, fromPool bool, err error) {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return "", false, ErrPoolClosed
	}
	if len(p.idle) > 0 {
		name = p.idle[0]
		p.idle = p.idle[1:]
		p.mu.Unlock()
		p.Warm() // refill behind the caller so the next VM finds one too
		return name, true, nil
	}
	p.mu.Unlock()
	if err := p.ops.CreateTap(ctx, fallback); err != nil {
		return "", false, fmt.Errorf("create tap %q (pool empty): %w", fallback, err)
	}
	return fallback, false, nil
}

// Release hands a tap back. A pool tap goes back to idle while there is room; any
// other tap (or a pool tap with the pool full or closed) is deleted, after which the
// warm-up runs again.
func (p *TapPool) Release(ctx context.Context, name string) error {
	p.mu.Lock()
	if !p.closed && privileged.IsPoolTap(name) && len(p.idle) < p.size && !p.holdsLocked(name) {
		p.idle = append(p.idle, name)
		p.mu.Unlock()
		return nil
	}
	p.mu.Unlock()
	if err := p.ops.DeleteTap(ctx, name); err != nil {
		return fmt.Errorf("delete tap %q: %w", name, err)
	}
	p.Warm()
	return nil
}

func (p *TapPool) holdsLocked(name string) bool {
	for _, n := range p.idle {
		if n == name {
			return true
		}
	}
	return false
}

// Warm starts a background warm-up unless one is running, the pool is full, disabled
// or closed.
func (p *TapPool) Warm() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed || p.warming || len(p.idle) >= p.size {
		return
	}
	p.warming = true
	p.wg.Add(1)
	go p.warmUp()
}

// warmUp creates taps until the pool is full, stopping on Close/cancel or the first
// error. Exactly one runs at a time (p.warming).
func (p *TapPool) warmUp() {
	defer p.wg.Done()
	for {
		p.mu.Lock()
		if p.closed || p.ctx.Err() != nil || len(p.idle) >= p.size {
			p.warming = false
			p.mu.Unlock()
			return
		}
		name := privileged.PoolTapName(p.next)
		p.next++
		p.mu.Unlock()

		if err := p.ops.CreateTap(p.ctx, name); err != nil {
			p.log.Warn("tap pool warm-up stopped", "tap", name, "err", err)
			p.mu.Lock()
			p.warming = false
			p.mu.Unlock()
			return
		}

		p.mu.Lock()
		if p.closed {
			// Close raced us: the tap stays on the host and is adopted at the next open.
			p.warming = false
			p.mu.Unlock()
			return
		}
		if len(p.idle) >= p.size {
			// Releases filled the pool while we were creating: do not grow past Size.
			p.warming = false
			p.mu.Unlock()
			if err := p.ops.DeleteTap(p.ctx, name); err != nil {
				p.log.Warn("tap pool: delete surplus tap", "tap", name, "err", err)
			}
			return
		}
		p.idle = append(p.idle, name)
		p.mu.Unlock()
	}
}

// WaitWarm blocks until no warm-up is running or ctx ends. Used by tests, benchmarks
// and `system status` callers that want a settled view.
func (p *TapPool) WaitWarm(ctx context.Context) error {
	done := make(chan struct{})
	go func() { p.wg.Wait(); close(done) }()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// PoolStats is a snapshot for status output.
type PoolStats struct {
	Idle      int      `json:"idle"`
	Size      int      `json:"size"`
	NextIndex int      `json:"next_index"`
	Warming   bool     `json:"warming"`
	IdleTaps  []string `json:"idle_taps"`
}

// Stats returns a snapshot.
func (p *TapPool) Stats() PoolStats {
	p.mu.Lock()
	defer p.mu.Unlock()
	return PoolStats{Idle: len(p.idle), Size: p.size, NextIndex: p.next, Warming: p.warming, IdleTaps: append([]string(nil), p.idle...)}
}

// Close stops the warm-up and waits for it. Idle taps stay on the host: the next
// daemon adopts them at Open, so a restart does not pay for creating them again.
func (p *TapPool) Close() {
	p.mu.Lock()
	p.closed = true
	p.mu.Unlock()
	p.cancel()
	p.wg.Wait()
}
