package server

import (
	"fmt"
	"os"

	"github.com/creack/pty"
	"golang.org/x/sys/unix"
)

// openPTY opens a pty pair whose master is in Go's poller, so that read deadlines
// work on it: the output grace period cuts a master that a leftover child keeps
// open through its copy of the slave (a pty sees no hangup when its session
// leader exits). creack/pty leaves the master in blocking mode (its ioctls call
// Fd()), where SetReadDeadline fails with os.ErrNoDeadline and a read waits for
// the last slave holder; so the master is duplicated, made non-blocking, and
// wrapped anew.
func openPTY() (master, slave *os.File, err error) {
	m, s, err := pty.Open()
	if err != nil {
		return nil, nil, err
	}
	defer m.Close()
	fd, err := unix.FcntlInt(m.Fd(), unix.F_DUPFD_CLOEXEC, 0)
	if err != nil {
		s.Close()
		return nil, nil, fmt.Errorf("duplicate pty master: %w", err)
	}
	if err := unix.SetNonblock(fd, true); err != nil {
		unix.Close(fd)
		s.Close()
		return nil, nil, fmt.Errorf("pty master non-blocking: %w", err)
	}
	return os.NewFile(uintptr(fd), m.Name()), s, nil
}

// setPTYSize sets the terminal size without Fd(), which would take the master
// out of the poller again.
func setPTYSize(master *os.File, rows, cols uint16) error {
	rc, err := master.SyscallConn()
	if err != nil {
		return err
	}
	var ierr error
	if err := rc.Control(func(fd uintptr) {
		ierr = unix.IoctlSetWinsize(int(fd), unix.TIOCSWINSZ, &unix.Winsize{Row: rows, Col: cols})
	}); err != nil {
		return err
	}
	return ierr
}
