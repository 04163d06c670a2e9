package process

import (
	"context"
	"errors"
	"fmt"
	"os"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// errNoPidfd says the kernel has no pidfd_open (before Linux 5.3): Wait then
// polls and Signal validates the Ref just before kill(2).
var errNoPidfd = errors.New("pidfd_open unsupported")

// pidfd holds one process for good: once open it keeps naming the same process
// even if that process exits and its PID is reused, so neither a wait nor a
// signal through it can reach a stranger.
type pidfd struct {
	ref Ref
	f   *os.File
	rc  syscall.RawConn
}

// openPidfd opens a pidfd for r and only then checks r's start time: checked
// before, a PID reused in between would slip through; checked after, the fd
// already pins whichever process it is, and the check says whether that one is
// r's. A process that is gone, or a zombie, is ErrNotRunning.
func openPidfd(r Ref) (*pidfd, error) {
	if r.PID <= 0 {
		return nil, fmt.Errorf("%s: %w", r, ErrNotRunning)
	}
	fd, err := unix.PidfdOpen(r.PID, unix.PIDFD_NONBLOCK)
	if errors.Is(err, unix.EINVAL) {
		// PIDFD_NONBLOCK came with Linux 5.10; set O_NONBLOCK by hand before that.
		if fd, err = unix.PidfdOpen(r.PID, 0); err == nil {
			err = unix.SetNonblock(fd, true)
			if err != nil {
				unix.Close(fd)
			}
		}
	}
	switch {
	case errors.Is(err, unix.ESRCH):
		return nil, fmt.Errorf("%s: %w", r, ErrNotRunning)
	case errors.Is(err, unix.ENOSYS):
		return nil, errNoPidfd
	case err != nil:
		return nil, fmt.Errorf("pidfd_open %s: %w", r, err)
	}
	// O_NONBLOCK makes os.NewFile register the fd with the runtime poller, so a
	// wait parks the goroutine instead of a thread, and deadlines work.
	f := os.NewFile(uintptr(fd), fmt.Sprintf("pidfd:%d", r.PID))
	if err := r.Validate(); err != nil {
		f.Close()
		return nil, err
	}
	rc, err := f.SyscallConn()
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("pidfd %s: %w", r, err)
	}
	return &pidfd{ref: r, f: f, rc: rc}, nil
}

func (p *pidfd) close() { p.f.Close() }

// wait returns nil once the process has exited (a zombie counts: a pidfd turns
// readable at exit, not at reaping), or ctx's error.
func (p *pidfd) wait(ctx context.Context) error {
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
		return n > 0 // false: park in the poller until the pidfd is readable
	})
	switch {
	case err != nil && ctx.Err() != nil:
		return ctx.Err()
	case err != nil:
		return fmt.Errorf("wait for %s: %w", p.ref, err)
	case pollErr != nil:
		return fmt.Errorf("wait for %s: poll: %w", p.ref, pollErr)
	}
	return nil
}

func (p *pidfd) signal(sig unix.Signal) error {
	var err error
	if cerr := p.rc.Control(func(fd uintptr) { err = unix.PidfdSendSignal(int(fd), sig, nil, 0) }); cerr != nil {
		return cerr
	}
	return err
}

// Wait returns nil once the process r names has exited, at once if it is gone
// already (or its PID now belongs to another process), or ctx's error. It works
// for any process, our child or not: through a pidfd where the kernel has them,
// else by checking r every few milliseconds.
func Wait(ctx context.Context, r Ref) error {
	p, err := openPidfd(r)
	switch {
	case errors.Is(err, ErrNotRunning):
		return nil
	case errors.Is(err, errNoPidfd):
		return waitPoll(ctx, r)
	case err != nil:
		return err
	}
	defer p.close()
	return p.wait(ctx)
}

// waitPoll is Wait without pidfds: r is checked with a delay that grows from
// 5ms to 200ms, so a short-lived wait reacts quickly and a long one costs little.
func waitPoll(ctx context.Context, r Ref) error {
	delay := 5 * time.Millisecond
	t := time.NewTimer(0)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C:
		}
		if !r.Alive() {
			return nil
		}
		t.Reset(delay)
		delay = min(delay*2, 200*time.Millisecond)
	}
}

// Signal sends sig to the process r names. A process that is gone (or whose
// PID was reused) is not an error: there is nothing left to signal.
func Signal(r Ref, sig unix.Signal) error {
	p, err := openPidfd(r)
	switch {
	case errors.Is(err, ErrNotRunning):
		return nil
	case errors.Is(err, errNoPidfd):
		return signalUnpinned(r, sig)
	case err != nil:
		return err
	}
	defer p.close()
	err = p.signal(sig)
	if errors.Is(err, unix.ENOSYS) {
		return signalUnpinned(r, sig)
	}
	if err != nil && !errors.Is(err, unix.ESRCH) {
		return fmt.Errorf("signal %s %s: %w", unix.SignalName(sig), r, err)
	}
	return nil
}

// signalUnpinned is Signal without pidfds: r is checked just before kill(2),
// which leaves a window of microseconds for a PID reuse, where pidfds leave none.
func signalUnpinned(r Ref, sig unix.Signal) error {
	if !r.Alive() {
		return nil
	}
	if err := unix.Kill(r.PID, sig); err != nil && !errors.Is(err, unix.ESRCH) {
		return fmt.Errorf("signal %s %s: %w", unix.SignalName(sig), r, err)
	}
	return nil
}

// Kill sends SIGKILL to the process r names; a process already gone is not an
// error. It does not wait: follow it with Wait.
func Kill(r Ref) error { return Signal(r, unix.SIGKILL) }

// Signaller sends sig to r: Direct for a process this one may signal, or a
// privileged route (the helper, for a jailed Firecracker running as another user).
type Signaller func(ctx context.Context, r Ref, sig unix.Signal) error

// Direct signals r itself (through a pidfd, see Signal).
func Direct(_ context.Context, r Ref, sig unix.Signal) error { return Signal(r, sig) }

// Terminate is the graceful-then-forced end of a process: sig (SIGTERM for
// QEMU, which then exits cleanly, flushing its disks), up to grace for the
// process to exit, then SIGKILL and a wait for it to go. forced says the kill
// was needed. If ctx ends first Terminate returns ctx's error and kills nothing
// more: the caller gave up waiting, it did not ask for more force.
func Terminate(ctx context.Context, r Ref, sig unix.Signal, grace time.Duration) (forced bool, err error) {
	return TerminateWith(ctx, r, sig, grace, Direct)
}

// TerminateWith is Terminate with the signals sent through signal.
func TerminateWith(ctx context.Context, r Ref, sig unix.Signal, grace time.Duration, signal Signaller) (forced bool, err error) {
	if err := signal(ctx, r, sig); err != nil {
		return false, err
	}
	gctx, cancel := context.WithTimeout(ctx, grace)
	err = Wait(gctx, r)
	cancel()
	if err == nil {
		return false, nil
	}
	if ctx.Err() != nil {
		return false, ctx.Err()
	}
	if err := signal(ctx, r, unix.SIGKILL); err != nil {
		return true, err
	}
	if err := Wait(ctx, r); err != nil {
		return true, fmt.Errorf("%s after SIGKILL: %w", r, err)
	}
	return true, nil
}

// Shutdown is a VMM's graceful stop: every ask (a way of asking the guest to go:
// an ACPI button, Ctrl+Alt+Del, the agent) runs at once, bounded by timeout,
// while Shutdown waits for r to exit; a VMM still running then is terminated
// (SIGTERM through signal, grace, SIGKILL). timedOut says the guest did not go in
// time, forced that SIGKILL was needed. If ctx ends first its error is returned
// and nothing is killed.
func Shutdown(ctx context.Context, r Ref, timeout, grace time.Duration, signal Signaller, asks ...func(context.Context)) (timedOut, forced bool, err error) {
	var wg sync.WaitGroup
	defer wg.Wait() // after cancel below: the asks end with wctx
	wctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	for _, ask := range asks {
		wg.Add(1)
		go func() { defer wg.Done(); ask(wctx) }()
	}
	err = Wait(wctx, r)
	switch {
	case err == nil:
		return false, false, nil
	case ctx.Err() != nil:
		return false, false, ctx.Err()
	case !errors.Is(err, context.DeadlineExceeded):
		return false, false, err
	}
	forced, err = TerminateWith(ctx, r, unix.SIGTERM, grace, signal)
	return true, forced, err
}
