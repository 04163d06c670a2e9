package vmservice

import (
	"context"
	"fmt"
	"time"

	"banger/internal/store"
)

// Wait blocks until the VM is running with its agent answering, or ctx ends. A
// VM that is stopped, or whose start failed, is an error at once rather than a
// wait for the deadline.
func (s *Service) Wait(ctx context.Context, ref string) (VM, error) {
	for {
		vm, err := s.d.Store.GetVM(ctx, ref)
		if err != nil {
			return VM{}, err
		}
		switch vm.State {
		case store.VMRunning:
			c, err := s.agent(ctx, vm)
			if err == nil {
				hctx, cancel := context.WithTimeout(ctx, 5*time.Second)
				_, err = c.Health(hctx)
				cancel()
				if err == nil {
					return s.Get(ctx, vm.ID)
				}
			}
		case store.VMFailed:
			v, _ := s.view(ctx, vm)
			return VM{}, fmt.Errorf("vm %q failed to start: %s: %w", vm.Name, v.StartError, ErrNotReady)
		case store.VMCreated, store.VMStopped:
			return VM{}, fmt.Errorf("vm %q is %s: start it (banger vm start %s): %w", vm.Name, vm.State, vm.Name, ErrNotRunning)
		}
		select {
		case <-ctx.Done():
			return VM{}, fmt.Errorf("vm %q: still %s: %w", vm.Name, vm.State, ctx.Err())
		case <-time.After(200 * time.Millisecond):
		}
	}
}
