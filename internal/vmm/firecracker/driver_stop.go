package firecracker

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"banger/internal/agent/client"
	"banger/internal/agent/proto"
	"banger/internal/vmm"
	"banger/internal/vmm/process"
)

// Stop shuts the guest down gracefully if it can within timeout, and ends
// Firecracker by force if it must (SIGTERM, then SIGKILL after TermGrace).
// Stopping an exited VMM succeeds and removes its sockets (and its jail). If
// ctx ends first, Stop returns ctx's error and leaves Firecracker as it is:
// the caller gave up, it did not ask for force.
func (d *Driver) Stop(ctx context.Context, h vmm.Handle, timeout time.Duration) error {
	ref, err := refOf(h)
	if err != nil {
		return err
	}
	if ref.Alive() {
		if err := d.shutdown(ctx, h, ref, timeout); err != nil {
			return err
		}
	}
	if err := d.cleanup(ctx, h); err != nil {
		return fmt.Errorf("firecracker pid %d stopped, but: %w", h.PID, err)
	}
	return nil
}

func (d *Driver) shutdown(ctx context.Context, h vmm.Handle, ref process.Ref, timeout time.Duration) error {
	var wg sync.WaitGroup
	defer wg.Wait() // after cancel below: the requests end with wctx
	wctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	wg.Add(2)
	go func() {
		defer wg.Done()
		if err := ctrlAltDel(wctx, h.APISocket); err != nil && wctx.Err() == nil {
			d.log.Debug("Ctrl+Alt+Del not delivered", "pid", h.PID, "err", err)
		}
	}()
	go func() {
		defer wg.Done()
		if err := d.agentReboot(wctx, h); err != nil && wctx.Err() == nil {
			d.log.Debug("agent reboot not delivered", "pid", h.PID, "err", err)
		}
	}()
	err := process.Wait(wctx, ref)
	if err == nil {
		return nil
	}
	if ctx.Err() != nil {
		return fmt.Errorf("firecracker pid %d: stop: %w", h.PID, ctx.Err())
	}
	if !errors.Is(err, context.DeadlineExceeded) {
		return fmt.Errorf("firecracker pid %d: stop: %w", h.PID, err)
	}
	d.log.Warn("guest did not shut down in time; terminating firecracker", "pid", h.PID, "timeout", timeout)
	forced, err := d.terminate(ctx, h, ref)
	if err != nil {
		return fmt.Errorf("firecracker pid %d: stop: %w", h.PID, err)
	}
	if forced {
		d.log.Warn("firecracker ignored SIGTERM; killed it", "pid", h.PID, "grace", d.o.TermGrace)
	}
	return nil
}

// terminate is SIGTERM, up to TermGrace for the exit, then SIGKILL, through
// whatever may signal h's process (the jail's ops for a jailed one).
func (d *Driver) terminate(ctx context.Context, h vmm.Handle, ref process.Ref) (forced bool, err error) {
	signal := d.signaller(h)
	if err := signal(ctx, ref, unix.SIGTERM); err != nil {
		return false, err
	}
	gctx, cancel := context.WithTimeout(ctx, d.o.TermGrace)
	err = process.Wait(gctx, ref)
	cancel()
	if err == nil {
		return false, nil
	}
	if ctx.Err() != nil {
		return false, ctx.Err()
	}
	if err := signal(ctx, ref, unix.SIGKILL); err != nil {
		return true, err
	}
	if err := process.Wait(ctx, ref); err != nil {
		return true, fmt.Errorf("%s after SIGKILL: %w", ref, err)
	}
	return true, nil
}

// ctrlAltDel sends SendCtrlAltDel (x86 only: the keyboard controller's
// reset), resuming a paused microVM first: a paused guest cannot react.
func ctrlAltDel(ctx context.Context, apiSocket string) error {
	if runtime.GOARCH != ctrlAltDelArch {
		return nil
	}
	ctx, cancel := context.WithTimeout(ctx, apiCallTimeout)
	defer cancel()
	c := NewClient(apiSocket)
	defer c.Close()
	info, err := c.InstanceInfo(ctx)
	if err != nil {
		return err
	}
	if info.State == "Paused" {
		if err := c.PatchVM(ctx, VMResumed); err != nil {
			return err
		}
	}
	return c.Action(ctx, ActionSendCtrlAltDel)
}

// agentReboot asks the guest agent to reboot: a reboot ends Firecracker on
// every architecture, where a power-off does not on x86 (no ACPI power-off:
// the guest halts and the process lives on).
func (d *Driver) agentReboot(ctx context.Context, h vmm.Handle) error {
	conn, err := d.DialAgent(ctx, h)
	if err != nil {
		return err
	}
	c, err := client.Dial(ctx, conn, client.Options{Logger: d.log})
	if err != nil {
		return err
	}
	defer c.Close()
	if err := c.Shutdown(ctx, proto.ActionReboot); err != nil {
		return err
	}
	// Hold the session until the guest ends it. Hanging up at once races the
	// agent: it may see the hang-up before its answer's write completes, take
	// the write as failed and not shut down at all.
	select {
	case <-c.Done():
	case <-ctx.Done():
	}
	return nil
}

// Kill ends Firecracker at once (SIGKILL), waits for it to go and removes its
// sockets (and its jail). Killing an exited VMM succeeds.
func (d *Driver) Kill(ctx context.Context, h vmm.Handle) error {
	ref, err := refOf(h)
	if err != nil {
		return err
	}
	if ref.Alive() {
		if err := d.signaller(h)(ctx, ref, unix.SIGKILL); err != nil {
			return fmt.Errorf("firecracker pid %d: %w", h.PID, err)
		}
		if err := process.Wait(ctx, ref); err != nil {
			return fmt.Errorf("firecracker pid %d: wait after SIGKILL: %w", h.PID, err)
		}
	}
	if err := d.cleanup(ctx, h); err != nil {
		return fmt.Errorf("firecracker pid %d killed, but: %w", h.PID, err)
	}
	return nil
}

// signaller is how h's process is signalled: directly, or through the jail's
// ops for a jailed Firecracker (it runs as another user).
func (d *Driver) signaller(h vmm.Handle) func(context.Context, process.Ref, unix.Signal) error {
	if j, ok := d.jailOf(h); ok {
		ops := d.o.Jailer.Ops
		return func(ctx context.Context, r process.Ref, sig unix.Signal) error {
			if err := ops.Signal(ctx, r, sig); err != nil {
				return fmt.Errorf("jail %s: %w", j.ID, err)
			}
			return nil
		}
	}
	return func(_ context.Context, r process.Ref, sig unix.Signal) error { return process.Signal(r, sig) }
}

// cleanup removes what an exited Firecracker left: its sockets, and for a
// jailed one the whole jail.
func (d *Driver) cleanup(ctx context.Context, h vmm.Handle) error {
	if j, ok := d.jailOf(h); ok {
		return d.o.Jailer.Ops.Remove(ctx, j)
	}
	return removeSockets(h.APISocket, h.AgentSocket)
}
