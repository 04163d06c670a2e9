package firecracker

import (
	"context"
	"fmt"
	"os"

	"banger/internal/vmm/process"
)

// PIDProcess is any process, named by PID and start time: for a Firecracker this
// process did not start (daemonized by the jailer, or found again after bangerd
// restarted). It is a Process over internal/vmm/process, whose pidfd-based Wait
// and Kill never reach another process that reused the PID.
type PIDProcess struct {
	ref process.Ref
}

// OpenPID takes hold of a running process; a process already gone is an error
// wrapping os.ErrProcessDone.
func OpenPID(pid int) (*PIDProcess, error) {
	ref, err := process.Find(pid)
	if err != nil || !ref.Alive() {
		return nil, fmt.Errorf("pid %d: %w", pid, os.ErrProcessDone)
	}
	return &PIDProcess{ref: ref}, nil
}

// PID is the process id.
func (p *PIDProcess) PID() int { return p.ref.PID }

// Close releases nothing: the pidfds are opened per call. It exists so callers
// may treat the process as a resource.
func (p *PIDProcess) Close() error { return nil }

// Wait returns nil once the process has exited (a zombie counts), or ctx's error.
func (p *PIDProcess) Wait(ctx context.Context) error { return process.Wait(ctx, p.ref) }

// Kill sends SIGKILL; a process already gone is not an error.
func (p *PIDProcess) Kill() error { return process.Kill(p.ref) }
