package qemu

import (
	"errors"
	"fmt"
	"io/fs"
	"os"

	"golang.org/x/sys/unix"
)

// maxSocketPath is the longest unix socket path the kernel takes (sun_path is
// 108 bytes with the terminating NUL).
const maxSocketPath = 107

// listenUnix creates a listening unix socket at path, for QEMU to inherit. The
// driver, not QEMU, creates its sockets: they exist and accept connections
// (queued until QEMU takes them) before QEMU starts, so nobody polls for a file
// to appear, and they belong to the driver's user with mode 0600 whoever QEMU
// runs as. A stale socket nobody listens on (a QEMU killed with SIGKILL) is
// replaced; a live one is an error, as is any other file at path.
func listenUnix(path string) (*os.File, error) {
	if len(path) > maxSocketPath {
		return nil, fmt.Errorf("socket path %s is %d bytes, more than the %d a unix socket takes: use a shorter runtime directory", path, len(path), maxSocketPath)
	}
	if err := removeStale(path); err != nil {
		return nil, err
	}
	fd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("socket %s: %w", path, err)
	}
	if err := unix.Bind(fd, &unix.SockaddrUnix{Name: path}); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("bind %s: %w", path, err)
	}
	if err := errors.Join(os.Chmod(path, 0o600), unix.Listen(fd, 16)); err != nil {
		unix.Close(fd)
		os.Remove(path)
		return nil, fmt.Errorf("listen %s: %w", path, err)
	}
	return os.NewFile(uintptr(fd), path), nil
}

// removeStale removes a socket at path that nothing listens on.
func removeStale(path string) error {
	fi, err := os.Lstat(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	if fi.Mode().Type() != fs.ModeSocket {
		return fmt.Errorf("%s exists and is not a socket: remove it, or choose another runtime directory", path)
	}
	fd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("probe %s: %w", path, err)
	}
	err = unix.Connect(fd, &unix.SockaddrUnix{Name: path})
	unix.Close(fd)
	if err == nil {
		return fmt.Errorf("%s is in use by a running process (another VMM for this VM?): stop it first", path)
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("remove stale socket: %w", err)
	}
	return nil
}
