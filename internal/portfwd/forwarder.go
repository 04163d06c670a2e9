package portfwd

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// Defaults for Config's zero fields.
const (
	DefaultDialTimeout     = 5 * time.Second
	DefaultMaxConnsPerPort = 256
)

// ErrClosed is returned by Add after Close.
var ErrClosed = errors.New("portfwd: forwarder closed")

// Config tunes a Forwarder. The zero value is usable.
type Config struct {
	// Logger receives per-forward and per-connection events; nil discards them.
	Logger *slog.Logger
	// DialTimeout bounds each connection to the guest; 0 means DefaultDialTimeout.
	DialTimeout time.Duration
	// MaxConnsPerPort bounds the connections one published port forwards at once;
	// further clients wait in the listen backlog. 0 means DefaultMaxConnsPerPort.
	MaxConnsPerPort int
}

// Forwarder owns the listening sockets of every published port of every VM, and the
// connections they forward. It is safe for concurrent use.
type Forwarder struct {
	log         *slog.Logger  // never nil
	dialTimeout time.Duration // > 0
	maxConns    int           // > 0

	mu     sync.Mutex            // guards the fields below
	byVM   map[string][]*forward // live forwards by VM id
	closed bool
}

// Forward describes one live published port, as List reports it.
type Forward struct {
	VMID string
	// Spec is the published port; its HostPort is the port actually bound.
	Spec Spec
	// Guest is where connections go.
	Guest netip.AddrPort
	// Active is the number of connections being forwarded now.
	Active int
}

// New returns a Forwarder with no forwards.
func New(cfg Config) *Forwarder {
	f := &Forwarder{
		log:         cfg.Logger,
		dialTimeout: cfg.DialTimeout,
		maxConns:    cfg.MaxConnsPerPort,
		byVM:        map[string][]*forward{},
	}
	if f.log == nil {
		f.log = slog.New(slog.DiscardHandler)
	}
	if f.dialTimeout <= 0 {
		f.dialTimeout = DefaultDialTimeout
	}
	if f.maxConns <= 0 {
		f.maxConns = DefaultMaxConnsPerPort
	}
	return f
}

// Add publishes spec for the VM vmID whose address is guest: it listens on the host
// now, so a port that is taken or not allowed is an error here, naming the port and
// what to do, and from then on forwards every connection to guest:spec.GuestPort
// until Remove(vmID) or Close. ctx bounds only the setting up, not the forward's life.
//
// A spec.HostPort of 0 picks a free port (List reports it); ParseSpec never yields 0,
// so this is for callers such as tests, not users.
func (f *Forwarder) Add(ctx context.Context, vmID string, spec Spec, guest netip.Addr) error {
	_, err := f.add(ctx, vmID, spec, guest)
	return err
}

func (f *Forwarder) add(ctx context.Context, vmID string, spec Spec, guest netip.Addr) (*forward, error) {
	if vmID == "" {
		return nil, errors.New("portfwd: empty VM id")
	}
	if err := checkHostIP(spec.HostIP); err != nil {
		return nil, fmt.Errorf("vm %q: publish %s: %w", vmID, spec, err)
	}
	if spec.GuestPort == 0 {
		return nil, fmt.Errorf("vm %q: publish %s: no guest port", vmID, spec)
	}
	if !guest.IsValid() || guest.IsUnspecified() {
		return nil, fmt.Errorf("vm %q: publish %s: guest address %v is not usable", vmID, spec, guest)
	}

	// Held across the listen so that the conflict check and the insert are one step.
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.closed {
		return nil, ErrClosed
	}
	if spec.HostPort != 0 {
		for id, fws := range f.byVM {
			for _, fw := range fws {
				if fw.spec.overlaps(spec) {
					return nil, fmt.Errorf("vm %q: publish %s: host port %d is already published by VM %q (%s): choose another host port", vmID, spec, spec.HostPort, id, fw.spec)
				}
			}
		}
	}
	var lc net.ListenConfig
	ln, err := lc.Listen(ctx, "tcp", spec.HostAddr().String())
	if err != nil {
		return nil, fmt.Errorf("vm %q: %w", vmID, listenError(spec, err))
	}
	spec.HostPort = uint16(ln.Addr().(*net.TCPAddr).Port)
	fw := newForward(f, vmID, spec, netip.AddrPortFrom(guest, spec.GuestPort), ln)
	f.byVM[vmID] = append(f.byVM[vmID], fw)
	f.log.Info("port published", "vm", vmID, "host", spec.HostAddr(), "guest", fw.guest)
	return fw, nil
}

// AddAll publishes every spec for vmID, or none: if one fails, those this call added
// are closed again before the error returns. Forwards the VM had before are kept.
func (f *Forwarder) AddAll(ctx context.Context, vmID string, specs []Spec, guest netip.Addr) error {
	if err := CheckConflicts(specs); err != nil {
		return fmt.Errorf("vm %q: %w", vmID, err)
	}
	var added []*forward
	for _, s := range specs {
		fw, err := f.add(ctx, vmID, s, guest)
		if err != nil {
			f.mu.Lock()
			rest := slices.DeleteFunc(f.byVM[vmID], func(fw *forward) bool { return slices.Contains(added, fw) })
			if len(rest) == 0 {
				delete(f.byVM, vmID)
			} else {
				f.byVM[vmID] = rest
			}
			f.mu.Unlock()
			for i := len(added) - 1; i >= 0; i-- {
				added[i].close()
			}
			return err
		}
		added = append(added, fw)
	}
	return nil
}

// Remove stops every forward of vmID: listeners are closed, then every connection they
// forward, and Remove returns once all of it is gone. A VM with no forwards is fine.
func (f *Forwarder) Remove(vmID string) {
	f.mu.Lock()
	fws := f.byVM[vmID]
	delete(f.byVM, vmID)
	f.mu.Unlock()
	for _, fw := range fws {
		fw.close()
		f.log.Info("port unpublished", "vm", vmID, "host", fw.spec.HostAddr(), "guest", fw.guest)
	}
}

// List returns every live forward, ordered by VM id then host address.
func (f *Forwarder) List() []Forward {
	f.mu.Lock()
	var out []Forward
	for id, fws := range f.byVM {
		for _, fw := range fws {
			out = append(out, Forward{VMID: id, Spec: fw.spec, Guest: fw.guest, Active: fw.activeCount()})
		}
	}
	f.mu.Unlock()
	slices.SortFunc(out, func(a, b Forward) int {
		return cmp.Or(strings.Compare(a.VMID, b.VMID), a.Spec.HostAddr().Compare(b.Spec.HostAddr()))
	})
	return out
}

// Close removes every forward; Add fails with ErrClosed afterwards.
func (f *Forwarder) Close() error {
	f.mu.Lock()
	f.closed = true
	ids := make([]string, 0, len(f.byVM))
	for id := range f.byVM {
		ids = append(ids, id)
	}
	f.mu.Unlock()
	for _, id := range ids {
		f.Remove(id)
	}
	return nil
}

// listenError turns the kernel's refusal into what the user should do about it.
func listenError(spec Spec, err error) error {
	port := spec.HostPort
	switch {
	case errors.Is(err, syscall.EADDRINUSE):
		return fmt.Errorf("publish %s: host port %d on %s is already in use by another program: choose another host port (-p %d:%d) or stop what listens there (ss -ltnp 'sport = :%d')",
			spec, port, spec.HostIP, nextPort(port), spec.GuestPort, port)
	case errors.Is(err, syscall.EACCES) && port < 1024:
		start := "1024"
		if b, rerr := os.ReadFile("/proc/sys/net/ipv4/ip_unprivileged_port_start"); rerr == nil {
			start = strings.TrimSpace(string(b))
		}
		return fmt.Errorf("publish %s: host port %d is privileged (below net.ipv4.ip_unprivileged_port_start=%s) and bangerd runs without CAP_NET_BIND_SERVICE: publish a port of 1024 or more (-p %d:%d), or let unprivileged programs bind it with `sysctl net.ipv4.ip_unprivileged_port_start=%d`",
			spec, port, start, 8000+int(port), spec.GuestPort, port)
	case errors.Is(err, syscall.EADDRNOTAVAIL):
		return fmt.Errorf("publish %s: %s is not an address of this machine: use 127.0.0.1 (the default), 0.0.0.0, or an address shown by `ip addr`", spec, spec.HostIP)
	}
	return fmt.Errorf("publish %s: listen: %w", spec, err)
}

// nextPort suggests a neighbouring port for an error message.
func nextPort(p uint16) int {
	if p == 65535 {
		return 65534
	}
	return int(p) + 1
}

// String is "vm VMID host -> guest (N active)", for logs and tables.
func (fw Forward) String() string {
	return "vm " + fw.VMID + " " + fw.Spec.HostAddr().String() + " -> " + fw.Guest.String() + " (" + strconv.Itoa(fw.Active) + " active)"
}
