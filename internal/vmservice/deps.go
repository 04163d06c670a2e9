// Package vmservice is bangerd's VMService: it owns VM records and their handles,
// and drives a VM through its lifecycle — create, start, readiness, stop, remove —
// using the other services only through the small interfaces below.
//
// Every creation step is undone, in reverse order, when a later one fails; so is
// every start step. A VMM outlives bangerd: Open re-attaches to the live ones and
// releases what dead ones held.
package vmservice

import (
	"context"
	"encoding/json"
	"log/slog"
	"net/netip"
	"time"

	"banger/internal/disk"
	"banger/internal/layout"
	"banger/internal/store"
	"banger/internal/vmm"
)

// Store is the part of the state store VMs need.
type Store interface {
	CreateVMWithLease(ctx context.Context, vm store.VM, bridge netip.Prefix) (netip.Addr, error)
	GetVM(ctx context.Context, idOrName string) (store.VM, error)
	ListVMs(ctx context.Context) ([]store.VM, error)
	UpdateVMState(ctx context.Context, id string, state store.VMState) error
	SetVMSpec(ctx context.Context, id string, spec json.RawMessage) error
	SetVMDisk(ctx context.Context, id string, disk json.RawMessage) error
	DeleteVM(ctx context.Context, id string) error
	SetHandle(ctx context.Context, h store.Handle) error
	GetHandle(ctx context.Context, vmID string) (store.Handle, error)
	ListHandles(ctx context.Context) ([]store.Handle, error)
	ClearHandle(ctx context.Context, vmID string) error
	LeaseOf(ctx context.Context, vmID string) (store.Lease, error)
	ListLeases(ctx context.Context) ([]store.Lease, error)
}

// Images resolves an image and brings its guest agent up to date.
type Images interface {
	EnsureAgent(ctx context.Context, ref string) (store.Image, error)
}

// Kernels resolves a kernel reference ("" for the default one).
type Kernels interface {
	Resolve(ctx context.Context, ref string) (store.Kernel, error)
}

// Network is what a VM needs from HostNetwork.
type Network interface {
	AcquireTap(ctx context.Context, vmID string) (string, error)
	ReleaseTap(ctx context.Context, tap string) error
	// SetNAT adds or removes the guest's network rules; mac is the VM's own MAC (its
	// tap may send only from it and guest), needed when enabling.
	SetNAT(ctx context.Context, guest netip.Addr, mac, tap string, enable bool) error
	Bridge() netip.Prefix
}

// DNS holds the VM name records.
type DNS interface {
	Set(name string, ip netip.Addr) error
	Remove(name string)
}

// Disks makes and removes copy-on-write root disks.
type Disks interface {
	Clone(ctx context.Context, strategy, driver, base string, req disk.CloneRequest) (disk.Disk, error)
	Remove(ctx context.Context, d disk.Disk) error
	Activate(ctx context.Context, d disk.Disk) (disk.Disk, error)
}

// SSH is the SSH material: the user's key for authorized_keys, a host key per
// VM, and the known_hosts entries that make `ssh NAME.vm` prompt-free.
type SSH interface {
	AuthorizedKey() (string, error)
	HostKey(vmID string) (privatePEM []byte, publicLine string, err error)
	DeleteHostKey(vmID string) error
	Trust(names []string, publicLine string) error
	Forget(names []string) error
}

// Ports publishes guest TCP ports on the host.
type Ports interface {
	// Check says whether specs could be published now, before anything starts;
	// vmID is "" for a VM not created yet.
	Check(vmID string, specs []string) error
	Publish(ctx context.Context, vmID string, specs []string, guest netip.Addr) error
	Unpublish(vmID string)
}

// Deps are the service's explicit dependencies; all are required unless noted.
type Deps struct {
	Store   Store
	Images  Images
	Kernels Kernels
	Network Network
	DNS     DNS
	Disks   Disks
	SSH     SSH
	Ports   Ports
	// Drivers by name; DefaultDriver is used when a create names none.
	Drivers       map[string]vmm.Driver
	DefaultDriver string
	// DefaultDiskStrategy is used when a create names none ([disk] strategy);
	// "" means auto.
	DefaultDiskStrategy string
	Layout              layout.Layout
	Domain              string // DNS domain, e.g. "vm"
	MTU                 int
	// ReadyTimeout bounds kernel start to agent ready (TCG boots are slow).
	ReadyTimeout time.Duration
	// ConsoleMaxBytes caps each VM's console log (console.max_size); 0 is
	// consolelog.DefaultMax.
	ConsoleMaxBytes int64
	// Logger is required.
	Logger *slog.Logger
	// Now is the clock (tests); nil is time.Now.
	Now func() time.Time
}
