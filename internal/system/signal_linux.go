package system

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strconv"
	"time"

	"golang.org/x/sys/unix"

	"banger/internal/vmm/process"
)

// errNotOurs says a recorded PID now names a process other than the one banger
// started: root refuses to signal it.
var errNotOurs = errors.New("system: not the process banger started")

// recordProcess describes the running process pid for a procRecord: its start time
// and the device and inode of its executable. Called right after the process was
// started (exec has happened once exec.Cmd.Start returns, and it is our unreaped
// child, so its PID cannot have been reused).
func recordProcess(pid int) (procRecord, error) {
	ref, err := process.Find(pid)
	if err != nil {
		return procRecord{}, err
	}
	exe := "/proc/" + strconv.Itoa(pid) + "/exe"
	var st unix.Stat_t
	if err := unix.Stat(exe, &st); err != nil {
		return procRecord{}, fmt.Errorf("stat %s: %w", exe, err)
	}
	target, _ := os.Readlink(exe)
	return procRecord{PID: pid, Start: ref.Start, Exe: target, Dev: st.Dev, Ino: st.Ino}, nil
}

// pinned is a process held by a pidfd and checked against its record: a signal
// sent through it reaches that process or nobody, whatever happens to its PID.
type pinned struct {
	rec procRecord
	fd  int
}

// pin opens a pidfd for rec.PID and, with the process held, checks that it is the
// one recorded: same start time, same executable (device and inode). A process
// that is gone is process.ErrNotRunning; one that is another process is
// errNotOurs, and nothing is signalled.
func pin(rec procRecord) (*pinned, error) {
	fd, err := unix.PidfdOpen(rec.PID, 0)
	if errors.Is(err, unix.ESRCH) {
		return nil, fmt.Errorf("pid %d: %w", rec.PID, process.ErrNotRunning)
	}
	if err != nil {
		return nil, fmt.Errorf("pidfd_open %d: %w", rec.PID, err)
	}
	// Checked after the pidfd is open: if the PID was reused in between, the
	// checks read the newcomer and refuse; the fd can then reach only the one
	// that is gone.
	ref, err := process.Find(rec.PID)
	if err != nil {
		unix.Close(fd)
		return nil, err
	}
	if ref.Start != rec.Start {
		unix.Close(fd)
		return nil, fmt.Errorf("pid %d started at %d, not at %d as recorded: %w", rec.PID, ref.Start, rec.Start, errNotOurs)
	}
	var st unix.Stat_t
	if err := unix.Stat("/proc/"+strconv.Itoa(rec.PID)+"/exe", &st); err != nil {
		unix.Close(fd)
		if errors.Is(err, unix.ENOENT) {
			return nil, fmt.Errorf("pid %d: %w", rec.PID, process.ErrNotRunning)
		}
		return nil, fmt.Errorf("pid %d: executable: %w (not signalled)", rec.PID, err)
	}
	if st.Dev != rec.Dev || st.Ino != rec.Ino {
		unix.Close(fd)
		return nil, fmt.Errorf("pid %d runs another executable than %s: %w", rec.PID, rec.Exe, errNotOurs)
	}
	return &pinned{rec: rec, fd: fd}, nil
}

func (p *pinned) close() { unix.Close(p.fd) }

func (p *pinned) signal(sig unix.Signal) error {
	err := unix.PidfdSendSignal(p.fd, sig, nil, 0)
	if err != nil && !errors.Is(err, unix.ESRCH) {
		return fmt.Errorf("signal %s pid %d: %w", unix.SignalName(sig), p.rec.PID, err)
	}
	return nil
}

// terminate sends SIGTERM to the pinned process, waits up to timeout for it to go,
// then SIGKILLs it through the same pidfd and waits for that.
func (p *pinned) terminate(ctx context.Context, timeout time.Duration) error {
	ref := process.Ref{PID: p.rec.PID, Start: p.rec.Start}
	if err := p.signal(unix.SIGTERM); err != nil {
		return err
	}
	wctx, cancel := context.WithTimeout(ctx, timeout)
	err := process.Wait(wctx, ref)
	cancel()
	if err == nil {
		return nil
	}
	if ctx.Err() != nil {
		return ctx.Err()
	}
	if err := p.signal(unix.SIGKILL); err != nil {
		return err
	}
	return process.Wait(ctx, ref)
}
