// Package agenttest holds helpers for the agent's tests: a pty pair standing in for
// a QEMU virtio-serial port, and SSH material for driving the real OpenSSH client.
// Only tests import it.
package agenttest

import (
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"sync"

	"github.com/creack/pty"
	"golang.org/x/sys/unix"
)

// SerialRelay plays QEMU's part for a virtio-serial port backed by a chardev socket:
// the agent opens SlavePath as its serial port; each Dial is a new host peer whose
// bytes are relayed to the pty master. Like QEMU, the relay drops what the guest
// writes while no peer is attached, and a new peer replaces the old one (the old
// connection is closed), so tests can disconnect and reconnect at will.
type SerialRelay struct {
	SlavePath string

	master *os.File
	slave  *os.File // kept open so the pty survives while the agent reopens it

	mu  sync.Mutex // guards cur
	cur net.Conn   // relay end of the current peer, nil when none

	done chan struct{}
}

// NewSerialRelay opens a pty pair and starts relaying.
func NewSerialRelay() (*SerialRelay, error) {
	master, slave, err := pty.Open()
	if err != nil {
		return nil, fmt.Errorf("open pty: %w", err)
	}
	r := &SerialRelay{SlavePath: slave.Name(), master: master, slave: slave, done: make(chan struct{})}
	go r.fromGuest()
	return r, nil
}

// fromGuest is the only reader of the master, so no dead peer can steal bytes.
func (r *SerialRelay) fromGuest() {
	defer close(r.done)
	buf := make([]byte, 64<<10)
	for {
		n, err := r.master.Read(buf)
		if n > 0 {
			r.mu.Lock()
			c := r.cur
			r.mu.Unlock()
			if c != nil {
				_, _ = c.Write(buf[:n]) // a failed peer just loses these bytes
			}
		}
		if err != nil {
			return
		}
	}
}

// Dial attaches a new host peer and returns its end of the stream. Closing it
// detaches the peer.
func (r *SerialRelay) Dial() (net.Conn, error) {
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("socketpair: %w", err)
	}
	host, err1 := fileConn(fds[0], "host")
	relay, err2 := fileConn(fds[1], "relay")
	if err := errors.Join(err1, err2); err != nil {
		return nil, err
	}
	r.mu.Lock()
	old := r.cur
	r.cur = relay
	r.mu.Unlock()
	if old != nil {
		old.Close()
	}
	go func() {
		// toward the guest; ends when the peer closes or is replaced
		_, _ = io.Copy(r.master, relay)
		r.mu.Lock()
		if r.cur == relay {
			r.cur = nil
		}
		r.mu.Unlock()
		relay.Close()
	}()
	return host, nil
}

func fileConn(fd int, name string) (net.Conn, error) {
	f := os.NewFile(uintptr(fd), name)
	defer f.Close()
	c, err := net.FileConn(f)
	if err != nil {
		return nil, fmt.Errorf("socketpair %s: %w", name, err)
	}
	return c, nil
}

// Close detaches any peer and closes the pty pair.
func (r *SerialRelay) Close() error {
	r.mu.Lock()
	if r.cur != nil {
		r.cur.Close()
		r.cur = nil
	}
	r.mu.Unlock()
	err := errors.Join(r.master.Close(), r.slave.Close())
	<-r.done
	return err
}
