package firecracker

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"time"
)

// Process is a VMM process as Shutdown needs it. *Proc (a child started by
// Launch) and *PIDProcess (any process, by pidfd) are two; a caller that
// reaches processes another way (through the root helper) brings its own.
type Process interface {
	// Wait returns nil once the process has exited, or ctx's error.
	Wait(ctx context.Context) error
	// Kill sends SIGKILL; a process already gone is not an error.
	Kill() error
}

// ctrlAltDelArch: SendCtrlAltDel exists on x86 only (it is the i8042
// keyboard controller's reset); elsewhere the guest agent must be asked.
const ctrlAltDelArch = "amd64"

// Shutdown stops the microVM gracefully if it can and by force if it must:
//
//  1. SendCtrlAltDel (x86): a guest booted with reboot=k (Configure sees to
//     it) reboots, and Firecracker exits on a guest reboot. Elsewhere, the
//     caller asks the guest agent to power off before calling Shutdown.
//  2. Wait up to timeout for the process to exit: graceful, true.
//  3. Otherwise SIGKILL it and wait for it to go: graceful, false.
//
// If Firecracker refuses the action (not started, say), waiting is pointless
// and the kill comes at once; if the API cannot be reached (the process may
// be exiting already) the wait still runs. If ctx ends first Shutdown
// returns its error without killing: the caller gave up, it did not ask for
// force. A paused microVM cannot react to Ctrl+Alt+Del: resume it first.
func (m *Machine) Shutdown(ctx context.Context, timeout time.Duration, proc Process) (graceful bool, err error) {
	wait := true
	if runtime.GOARCH == ctrlAltDelArch {
		if err := m.client.Action(ctx, ActionSendCtrlAltDel); err != nil {
			var apiErr *APIError
			if errors.As(err, &apiErr) {
				wait = false
			}
			m.log.Warn("firecracker: Ctrl+Alt+Del not delivered", "socket", m.client.SocketPath(), "err", err)
		}
	}
	if wait {
		wctx, cancel := context.WithTimeout(ctx, timeout)
		err := proc.Wait(wctx)
		cancel()
		if err == nil {
			return true, nil
		}
		if ctx.Err() != nil {
			return false, fmt.Errorf("firecracker shutdown: %w", ctx.Err())
		}
		m.log.Warn("firecracker: guest did not shut down in time; killing", "socket", m.client.SocketPath(), "timeout", timeout)
	}
	if err := proc.Kill(); err != nil {
		return false, fmt.Errorf("firecracker shutdown: kill: %w", err)
	}
	if err := proc.Wait(ctx); err != nil {
		return false, fmt.Errorf("firecracker shutdown: after SIGKILL: %w", err)
	}
	return false, nil
}
