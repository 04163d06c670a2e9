package firecracker

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"syscall"
)

// LaunchOptions tune Launch.
type LaunchOptions struct {
	// Stdout and Stderr receive the process's output; nil discards it. An
	// *os.File is handed over as is; any other writer costs a copying goroutine.
	Stdout, Stderr io.Writer
	// NewSession starts the process in its own session (setsid), so that it
	// outlives the launcher's session and terminal signals: right for
	// firecracker started directly. Wrong for the jailer with --daemonize,
	// which calls setsid itself and fails when it already leads a process group.
	NewSession bool
	// Env is the environment; nil inherits the launcher's.
	Env []string
}

// Proc is a process started by Launch. Its exit is collected in the
// background, so Wait may be called any number of times, from any goroutine.
type Proc struct {
	cmd  *exec.Cmd
	done chan struct{}
	// err is cmd.Wait's result; written once before done is closed.
	err error
}

// Launch starts cmd and returns at once. The process is not tied to a
// context: a VMM must outlive the call (and, with NewSession, its caller's
// session); it ends by Shutdown, Kill or on its own.
func Launch(cmd Command, opts LaunchOptions) (*Proc, error) {
	c := exec.Command(cmd.Path, cmd.Args...)
	c.Stdout, c.Stderr, c.Env = opts.Stdout, opts.Stderr, opts.Env
	if opts.NewSession {
		c.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	}
	if err := c.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", cmd, err)
	}
	p := &Proc{cmd: c, done: make(chan struct{})}
	go func() {
		p.err = c.Wait()
		close(p.done)
	}()
	return p, nil
}

// PID is the process id.
func (p *Proc) PID() int { return p.cmd.Process.Pid }

// Done is closed when the process has exited (for Client.WaitReady).
func (p *Proc) Done() <-chan struct{} { return p.done }

// Wait returns nil once the process has exited, or ctx's error.
func (p *Proc) Wait(ctx context.Context) error {
	select {
	case <-p.done:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// ExitError is how the process ended (exec's Wait error: nil for exit 0, an
// *exec.ExitError otherwise). Only meaningful after Done.
func (p *Proc) ExitError() error {
	select {
	case <-p.done:
		return p.err
	default:
		return errors.New("process still running")
	}
}

// State is the exited process's state, nil while it runs.
func (p *Proc) State() *os.ProcessState {
	select {
	case <-p.done:
		return p.cmd.ProcessState
	default:
		return nil
	}
}

// Kill sends SIGKILL; a process already gone is not an error.
func (p *Proc) Kill() error {
	if err := p.cmd.Process.Kill(); err != nil && !errors.Is(err, os.ErrProcessDone) {
		return fmt.Errorf("kill pid %d: %w", p.PID(), err)
	}
	return nil
}
