package vmservice

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"sync"
	"time"

	"banger/internal/agent/client"
	"banger/internal/disk"
	"banger/internal/keylock"
	"banger/internal/store"
	"banger/internal/vmm"
)

// Service is the VMService. Build it with New; call Open once, Close once.
type Service struct {
	d   Deps
	log *slog.Logger

	locks keylock.Map // per VM id: one lifecycle operation at a time

	mu      sync.Mutex                // guards the following
	agents  map[string]*client.Client // live agent sessions, per VM id
	closing bool
}

// New checks deps.
func New(d Deps) (*Service, error) {
	switch {
	case d.Store == nil, d.Images == nil, d.Kernels == nil, d.Network == nil, d.DNS == nil, d.Disks == nil, d.SSH == nil, d.Ports == nil:
		return nil, errors.New("vmservice: every dependency is required")
	case d.Logger == nil:
		return nil, errors.New("vmservice: Logger is required")
	}
	if d.ReadyTimeout == 0 {
		d.ReadyTimeout = 3 * time.Minute
	}
	if d.Now == nil {
		d.Now = time.Now
	}
	if d.MTU == 0 {
		d.MTU = 1500
	}
	return &Service{d: d, log: d.Logger, agents: map[string]*client.Client{}}, nil
}

// lockVM serialises lifecycle operations on one VM; different VMs proceed in
// parallel.
func (s *Service) lockVM(id string) func() { return s.locks.Lock(id) }

// Errors callers can test for.
var (
	ErrInvalid    = errors.New("invalid request")
	ErrConflict   = errors.New("conflict")
	ErrNotRunning = errors.New("vm is not running")
	ErrNotReady   = errors.New("vm did not become ready")
)

// VM is a VM with everything the API shows.
type VM struct {
	store.VM
	IP       netip.Addr
	Handle   *store.Handle // nil when not running
	DiskInfo disk.Disk
	Timings  *Timings
	Env      []string
	Publish  []string
	// StartError is the last failed start's reason.
	StartError string
	// ConsoleLog is the guest's serial console log.
	ConsoleLog string
}

func (s *Service) view(ctx context.Context, vm store.VM) (VM, error) {
	var lease store.Lease
	if l, err := s.d.Store.LeaseOf(ctx, vm.ID); err == nil {
		lease = l
	}
	var handle store.Handle
	if h, err := s.d.Store.GetHandle(ctx, vm.ID); err == nil {
		handle = h
	}
	return s.assemble(vm, lease, handle), nil
}

// assemble builds the view of vm from its lease and handle (zero when none).
func (s *Service) assemble(vm store.VM, lease store.Lease, h store.Handle) VM {
	v := VM{VM: vm, IP: lease.Addr, ConsoleLog: s.consoleLog(vm.ID)}
	if h.PID != 0 {
		v.Handle = &h
	}
	_ = json.Unmarshal(vm.Disk, &v.DiskInfo)
	sp := decodeSpec(vm.Spec)
	v.Timings, v.Env, v.Publish, v.StartError = sp.Timings, sp.Env, sp.Publish, sp.StartError
	return v
}

// Get returns one VM by id or name.
func (s *Service) Get(ctx context.Context, ref string) (VM, error) {
	vm, err := s.d.Store.GetVM(ctx, ref)
	if err != nil {
		return VM{}, err
	}
	return s.view(ctx, vm)
}

// List returns every VM: three reads of the store, whatever the number of VMs.
func (s *Service) List(ctx context.Context) ([]VM, error) {
	vms, err := s.d.Store.ListVMs(ctx)
	if err != nil {
		return nil, err
	}
	leases, err := s.d.Store.ListLeases(ctx)
	if err != nil {
		return nil, err
	}
	handles, err := s.d.Store.ListHandles(ctx)
	if err != nil {
		return nil, err
	}
	leaseOf := make(map[string]store.Lease, len(leases))
	for _, l := range leases {
		leaseOf[l.VMID] = l
	}
	handleOf := make(map[string]store.Handle, len(handles))
	for _, h := range handles {
		handleOf[h.VMID] = h
	}
	out := make([]VM, 0, len(vms))
	for _, vm := range vms {
		out = append(out, s.assemble(vm, leaseOf[vm.ID], handleOf[vm.ID]))
	}
	return out, nil
}

func (s *Service) driver(name string) (vmm.Driver, error) {
	if len(s.d.Drivers) == 0 {
		return nil, fmt.Errorf("no VMM can run on this host: see `banger doctor`: %w", ErrInvalid)
	}
	d, ok := s.d.Drivers[name]
	if !ok {
		return nil, fmt.Errorf("vmm driver %q is not available here (have: %s): %w", name, driverNames(s.d.Drivers), ErrInvalid)
	}
	return d, nil
}

func driverNames(m map[string]vmm.Driver) string {
	var names []string
	for n := range m {
		names = append(names, n)
	}
	if len(names) == 0 {
		return "none"
	}
	return fmt.Sprint(names)
}

// runDir is the VM's runtime directory for sockets: short, under the run dir.
func (s *Service) runDir(id string) string {
	return filepath.Join(s.d.Layout.VMSocketDir(), shortID(id))
}

// consoleLog is the VM's serial console log.
func (s *Service) consoleLog(id string) string {
	return filepath.Join(s.d.Layout.LogDir, "vms", shortID(id)+".console.log")
}

func (s *Service) dnsNames(vm store.VM, ip netip.Addr) []string {
	names := []string{vm.Name + "." + s.d.Domain}
	if ip.IsValid() {
		names = append(names, ip.String())
	}
	return names
}

// ConsoleLog returns the path of a VM's console log (for `vm logs`).
func (s *Service) ConsoleLog(ctx context.Context, ref string) (string, error) {
	vm, err := s.d.Store.GetVM(ctx, ref)
	if err != nil {
		return "", err
	}
	return s.consoleLog(vm.ID), nil
}

// Close ends the agent sessions. VMs keep running: their VMMs are not bangerd's
// children, and the next Open re-attaches.
func (s *Service) Close() {
	s.mu.Lock()
	s.closing = true
	agents := s.agents
	s.agents = map[string]*client.Client{}
	s.mu.Unlock()
	for _, c := range agents {
		c.Close()
	}
}

func (s *Service) removeRuntime(id string) {
	if err := os.RemoveAll(s.runDir(id)); err != nil {
		s.log.Warn("remove vm runtime dir", "vm", id, "err", err)
	}
}
