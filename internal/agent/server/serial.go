package server

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"time"

	"banger/internal/agent/proto"

	"golang.org/x/sys/unix"
)

// Backoff bounds for a serial port with no host peer: a virtio-serial read returns
// EOF (and poll HUP) at once while nothing is connected on the host side, so
// retrying without a pause would spin a CPU for as long as the host is away.
const (
	serialBackoffMin = 10 * time.Millisecond
	serialBackoffMax = time.Second
)

// backoff doubles a delay from serialBackoffMin up to serialBackoffMax.
type backoff struct{ d time.Duration }

func (b *backoff) reset() { b.d = 0 }

// wait sleeps for the next delay or until ctx ends; it reports whether ctx is live.
func (b *backoff) wait(ctx context.Context) bool {
	if b.d == 0 {
		b.d = serialBackoffMin
	} else if b.d *= 2; b.d > serialBackoffMax {
		b.d = serialBackoffMax
	}
	t := time.NewTimer(b.d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

// ServeSerial serves the control API on a serial-like device (a virtio-serial port
// such as /dev/virtio-ports/banger.agent, an hvc console, or in tests a pty slave)
// until ctx ends. A serial port is one stream shared by successive host peers, so it
// runs one session at a time: wait for a handshake, serve until the session fails,
// reopen the device, wait again. It returns only when ctx ends.
func (s *Server) ServeSerial(ctx context.Context, path string) error {
	var b backoff
	for ctx.Err() == nil {
		f, err := openSerial(path)
		if err != nil {
			s.log.Debug("open serial port", "path", path, "err", err)
			if !b.wait(ctx) {
				break
			}
			continue
		}
		s.serveSerialFile(ctx, f, &b)
		f.Close()
	}
	return nil
}

// serveSerialFile runs handshakes and sessions on one open device until reading it
// fails with something other than EOF, or a session ends (the device is then
// reopened, which also drops whatever a dead session left half-read).
func (s *Server) serveSerialFile(ctx context.Context, f *os.File, b *backoff) {
	stop := context.AfterFunc(ctx, func() { f.Close() })
	defer stop()
	s.serveSerialLink(ctx, f, f.Name(), b)
}

func (s *Server) serveSerialLink(ctx context.Context, rw io.ReadWriter, name string, b *backoff) {
	for ctx.Err() == nil {
		r, err := proto.GuestHandshake(rw, s.cfg.Version)
		if err != nil {
			if errors.Is(err, io.EOF) {
				// no host peer: nothing will arrive until one connects
				if !b.wait(ctx) {
					return
				}
				continue
			}
			s.log.Debug("serial port read failed", "path", name, "err", err)
			b.wait(ctx)
			return
		}
		b.reset()
		err = s.ServeSession(ctx, proto.LinkConn{Reader: r, Writer: rw, Closer: nopCloser{}})
		s.log.Info("control session on serial port ended", "path", name, "err", err)
		return
	}
}

type nopCloser struct{}

func (nopCloser) Close() error { return nil }

// openSerial opens a device for the control stream. A tty (hvc console, pty) is put
// in raw mode: no echo, no line editing, no CR/LF translation, no flow-control
// bytes, 8 bits clean; a virtio-serial port is not a tty and needs none of it.
func openSerial(path string) (*os.File, error) {
	f, err := os.OpenFile(path, os.O_RDWR|unix.O_NOCTTY, 0)
	if err != nil {
		return nil, fmt.Errorf("open serial port %s: %w", path, err)
	}
	rc, err := f.SyscallConn()
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("serial port %s: %w", path, err)
	}
	var terr error
	cerr := rc.Control(func(fd uintptr) { terr = makeRaw(int(fd)) })
	if err := errors.Join(cerr, terr); err != nil {
		f.Close()
		return nil, fmt.Errorf("serial port %s: raw mode: %w", path, err)
	}
	return f, nil
}

// makeRaw is cfmakeraw(3); a device that is not a tty is left alone.
func makeRaw(fd int) error {
	t, err := unix.IoctlGetTermios(fd, unix.TCGETS)
	if errors.Is(err, unix.ENOTTY) || errors.Is(err, unix.EINVAL) {
		return nil
	}
	if err != nil {
		return err
	}
	t.Iflag &^= unix.IGNBRK | unix.BRKINT | unix.PARMRK | unix.ISTRIP | unix.INLCR | unix.IGNCR | unix.ICRNL | unix.IXON | unix.IXOFF
	t.Oflag &^= unix.OPOST
	t.Lflag &^= unix.ECHO | unix.ECHONL | unix.ICANON | unix.ISIG | unix.IEXTEN
	t.Cflag &^= unix.CSIZE | unix.PARENB
	t.Cflag |= unix.CS8
	t.Cc[unix.VMIN] = 1
	t.Cc[unix.VTIME] = 0
	return unix.IoctlSetTermios(fd, unix.TCSETS, t)
}
