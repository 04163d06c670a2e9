package qemu

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"banger/internal/agent/client"
	"banger/internal/agent/proto"
	"banger/internal/vmm"
	"banger/internal/vmm/process"
)

// Stop shuts the guest down gracefully if it can within timeout, and ends QEMU
// by force if it must (SIGTERM, then SIGKILL after TermGrace). Stopping an
// exited VMM succeeds and removes its sockets. If ctx ends first, Stop returns
// ctx's error and leaves QEMU as it is: the caller gave up, it did not ask for
// force.
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
	if err := removeSockets(h.APISocket, h.AgentSocket); err != nil {
		return fmt.Errorf("qemu pid %d stopped, but: %w", h.PID, err)
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
		if err := powerdown(wctx, h.APISocket); err != nil && wctx.Err() == nil {
			d.log.Debug("ACPI power-down not delivered", "pid", h.PID, "err", err)
		}
	}()
	go func() {
		defer wg.Done()
		if err := d.agentPoweroff(wctx, h); err != nil && wctx.Err() == nil {
			d.log.Debug("agent power-off not delivered", "pid", h.PID, "err", err)
		}
	}()
	err := process.Wait(wctx, ref)
	if err == nil {
		return nil
	}
	if ctx.Err() != nil {
		return fmt.Errorf("qemu pid %d: stop: %w", h.PID, ctx.Err())
	}
	if !errors.Is(err, context.DeadlineExceeded) {
		return fmt.Errorf("qemu pid %d: stop: %w", h.PID, err)
	}
	d.log.Warn("guest did not power off in time; terminating qemu", "pid", h.PID, "timeout", timeout)
	forced, err := process.Terminate(ctx, ref, unix.SIGTERM, d.o.TermGrace)
	if err != nil {
		return fmt.Errorf("qemu pid %d: stop: %w", h.PID, err)
	}
	if forced {
		d.log.Warn("qemu ignored SIGTERM; killed it", "pid", h.PID, "grace", d.o.TermGrace)
	}
	return nil
}

// powerdown presses the ACPI power button, resuming a paused guest first (a
// paused guest cannot react to anything).
func powerdown(ctx context.Context, qmpPath string) error {
	ctx, cancel := context.WithTimeout(ctx, qmpCallTimeout)
	defer cancel()
	q, err := dialQMP(ctx, qmpPath)
	if err != nil {
		return err
	}
	defer q.Close()
	var st qmpStatus
	if err := q.execute(ctx, "query-status", nil, &st); err != nil {
		return err
	}
	if st.Status == "paused" {
		if err := q.execute(ctx, "cont", nil, nil); err != nil {
			return err
		}
	}
	return q.execute(ctx, "system_powerdown", nil, nil)
}

// agentPoweroff asks the guest agent to power off. While another host peer
// holds the serial port (a VMService session), this connection waits its turn
// and ends with ctx; the ACPI request and the timeout cover that case.
func (d *Driver) agentPoweroff(ctx context.Context, h vmm.Handle) error {
	conn, err := d.DialAgent(ctx, h)
	if err != nil {
		return err
	}
	c, err := client.Dial(ctx, conn, client.Options{Logger: d.log})
	if err != nil {
		return err
	}
	defer c.Close()
	if err := c.Shutdown(ctx, proto.ActionPoweroff); err != nil {
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

// Kill ends QEMU at once (SIGKILL), waits for it to go and removes its sockets.
// Killing an exited VMM succeeds.
func (d *Driver) Kill(ctx context.Context, h vmm.Handle) error {
	ref, err := refOf(h)
	if err != nil {
		return err
	}
	if ref.Alive() {
		if err := process.Kill(ref); err != nil {
			return fmt.Errorf("qemu pid %d: %w", h.PID, err)
		}
		if err := process.Wait(ctx, ref); err != nil {
			return fmt.Errorf("qemu pid %d: wait after SIGKILL: %w", h.PID, err)
		}
	}
	if err := removeSockets(h.APISocket, h.AgentSocket); err != nil {
		return fmt.Errorf("qemu pid %d killed, but: %w", h.PID, err)
	}
	return nil
}
