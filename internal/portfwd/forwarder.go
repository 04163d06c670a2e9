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
	// Name turns a VM id into the name users know it by, for messages; nil (or an
	// empty answer) shows the id.
	Name func(vmID string) string
}

// Forwarder owns the listening sockets of every published port of every VM, and the
// connections they forward. It is safe for concurrent use.
type Forwarder struct {
	log         *slog.Logger        // never nil
	dialTimeout time.Duration       // > 0
	maxConns    int                 // > 0
	nameOf      func(string) string // may be nil

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
		nameOf:      cfg.Name,
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
	if err := f.conflictLocked("", spec); err != nil {
		return nil, fmt.Errorf("vm %q: %w", f.name(vmID), err)
	}
	var lc net.ListenConfig
	ln, err := lc.Listen(ctx, "tcp", spec.HostAddr().String())
	if err != nil {
		return nil, fmt.Errorf("vm %q: %w", f.name(vmID), listenError(spec, err))
	}
	spec.HostPort = uint16(ln.Addr().(*net.TCPAddr).Port)
	fw := newForward(f, vmID, spec, netip.AddrPortFrom(guest, spec.GuestPort), ln)
	f.byVM[vmID] = append(f.byVM[vmID], fw)
	f.log.Info("port published", "vm", vmID, "host", spec.HostAddr(), "guest", fw.guest)
	return fw, nil
}

// conflictLocked refuses spec when a VM other than except has published an
// overlapping host port. f.mu must be held.
func (f *Forwarder) conflictLocked(except string, spec Spec) error {
	if spec.HostPort == 0 {
		return nil
	}
	for id, fws := range f.byVM {
		if id == except && except != "" {
			continue
		}
		for _, fw := range fws {
			if fw.spec.overlaps(spec) {
				return fmt.Errorf("publish %s: host port %d is already published by VM %q (%s): choose another host port", spec, spec.HostPort, f.name(id), fw.spec)
			}
		}
	}
	return nil
}

// name is how messages call a VM.
func (f *Forwarder) name(vmID string) string {
	if f.nameOf != nil {
		if n := f.nameOf(vmID); n != "" {
			return n
		}
	}
	return vmID
}

// Check says, before a VM boots, whether its specs could be published now: they do
// not collide with each other or with another VM's ports, and each host port can be
// bound (tried and released at once). vmID is the VM's id, or "" for one not created
// yet; its own live forwards (a restart) are not conflicts. Add still checks again:
// this only spares a boot that would fail at the end.
func (f *Forwarder) Check(vmID string, specs []Spec) error {
	if err := CheckConflicts(specs); err != nil {
		return err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.closed {
		return ErrClosed
	}
	for _, spec := range specs {
		if err := checkHostIP(spec.HostIP); err != nil {
			return fmt.Errorf("publish %s: %w", spec, err)
		}
		if err := f.conflictLocked(vmID, spec); err != nil {
			return err
		}
		if f.ownsLocked(vmID, spec) {
			continue // bound by this VM's own forward already
		}
		ln, err := net.Listen("tcp", spec.HostAddr().String())
		if err != nil {
			return listenError(spec, err)
		}
		ln.Close()
	}
	return nil
}

// ownsLocked says whether vmID already listens on spec's host address. f.mu held.
func (f *Forwarder) ownsLocked(vmID string, spec Spec) bool {
	for _, fw := range f.byVM[vmID] {
		if fw.spec.overlaps(spec) {
			return true
		}
	}
	return false
}

// AddAll publishes every spec for vmID, or none: if one fails, those this call added
// are closed again before the error returns. Forwards the VM had before are kept.
func (f *Forwarder) AddAll(ctx context.Context, vmID string, specs []Spec, guest netip.Addr) error {
	if err := CheckConflicts(specs); err != nil {
		return fmt.Errorf("vm %q: %w", f.name(vmID), err)
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
