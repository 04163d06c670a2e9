package firecracker

import (
	"context"
	"errors"
	"fmt"
	"os"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// PIDProcess is any process, held by a pidfd: for a Firecracker this process
// did not start (daemonized by the jailer, or found again after bangerd
// restarted). A pidfd names one process for good, so neither Wait nor Kill
// can reach another process that reused the PID. Wait blocks in the Go
// poller (the pidfd turns readable when the process exits), no polling loop.
// Not safe for concurrent Wait calls.
type PIDProcess struct {
	pid int
	f   *os.File
	rc  syscall.RawConn
}

// OpenPID takes hold of a running process. The caller must Close it.
func OpenPID(pid int) (*PIDProcess, error) {
	fd, err := unix.PidfdOpen(pid, unix.PIDFD_NONBLOCK)
	if err != nil {
		if errors.Is(err, unix.ESRCH) {
			return nil, fmt.Errorf("pid %d: %w", pid, os.ErrProcessDone)
		}
		return nil, fmt.Errorf("pidfd_open %d: %w", pid, err)
	}
	f := os.NewFile(uintptr(fd), fmt.Sprintf("pidfd:%d", pid))
	rc, err := f.SyscallConn()
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("pidfd %d: %w", pid, err)
	}
	return &PIDProcess{pid: pid, f: f, rc: rc}, nil
}

// PID is the process id.
func (p *PIDProcess) PID() int { return p.pid }

// Close releases the pidfd.
func (p *PIDProcess) Close() error { return p.f.Close() }

// Wait returns nil once the process has exited (a zombie counts), or ctx's error.
func (p *PIDProcess) Wait(ctx context.Context) error {
	if err := p.f.SetReadDeadline(time.Time{}); err != nil {
		return fmt.Errorf("pidfd %d: %w", p.pid, err)
	}
	stop := context.AfterFunc(ctx, func() { _ = p.f.SetReadDeadline(time.Now()) })
	defer stop()
	var pollErr error
	err := p.rc.Read(func(fd uintptr) bool {
		fds := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}
		n, err := unix.Poll(fds, 0)
		if err != nil && !errors.Is(err, unix.EINTR) {
			pollErr = err
			return true
		}
		return n > 0 // false: wait in the poller until the pidfd is readable
	})
	switch {
	case ctx.Err() != nil && err != nil:
		return ctx.Err()
	case err != nil:
		return fmt.Errorf("wait for pid %d: %w", p.pid, err)
	case pollErr != nil:
		return fmt.Errorf("wait for pid %d: poll: %w", p.pid, pollErr)
	}
	return nil
}

// Kill sends SIGKILL through the pidfd; a process already gone is not an error.
func (p *PIDProcess) Kill() error {
	var err error
	cerr := p.rc.Control(func(fd uintptr) {
		err = unix.PidfdSendSignal(int(fd), unix.SIGKILL, nil, 0)
	})
	if cerr != nil {
		return fmt.Errorf("kill pid %d: %w", p.pid, cerr)
	}
	if err != nil && !errors.Is(err, unix.ESRCH) {
		return fmt.Errorf("kill pid %d: %w", p.pid, err)
	}
	return nil
}
