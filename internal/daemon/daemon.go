// Package daemon is bangerd's thin facade: it opens the services in order, routes API
// calls to them and closes them in reverse. Each service owns its own state; the
// Daemon holds no VM, image or network state of its own.
package daemon

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"time"

	"banger/internal/config"
	"banger/internal/disk"
	"banger/internal/hostnetwork"
	"banger/internal/image"
	"banger/internal/imageservice"
	"banger/internal/layout"
	"banger/internal/portfwd"
	"banger/internal/store"
	"banger/internal/vmdns"
	"banger/internal/vmm"
	"banger/internal/vmservice"
)

// Options are the daemon's explicit dependencies.
type Options struct {
	Layout layout.Layout
	Config config.Config
	Helper hostnetwork.Helper // the root helper's client; never nil
	Logger *slog.Logger
	// Upstreams overrides the DNS forwarders (tests); nil means dns.upstreams, or
	// when that is empty the host's resolvers.
	Upstreams []string
	// Block performs the disk layer's loop and device-mapper steps (the helper's
	// BlockClient); nil leaves only the strategies that need no privilege.
	Block disk.BlockOps
	// Drivers are the VMM drivers that can run here, by name; DefaultDriver is used
	// when a create names none.
	Drivers       map[string]vmm.Driver
	DefaultDriver string
	// Home is the owner's home directory (its ~/.ssh holds the SSH user key); ""
	// is $HOME.
	Home string
	// BangerPath is the banger CLI, which banger's ssh_config runs as ProxyCommand.
	BangerPath string
	// ReadyTimeout bounds kernel start to agent ready; 0 is the VM service's default.
	ReadyTimeout time.Duration
	// InitPath is banger-init, the initramfs init of the default kernel; "" leaves
	// no default kernel.
	InitPath string
	// AgentPath is the guest agent binary injected into images; "" leaves image
	// pulls and imports refusing with a message that says how to fix it.
	AgentPath string
}

// Daemon is an open bangerd. Build it with Open; Close it once.
type Daemon struct {
	opts    Options
	log     *slog.Logger
	started time.Time

	store   *store.Store          // immutable after Open; never nil
	dns     *vmdns.Server         // immutable after Open; never nil
	net     *hostnetwork.Service  // immutable after Open; never nil
	images  *imageservice.Service // immutable after Open; never nil
	kernels *imageservice.Kernels // immutable after Open; never nil
	disks   *diskLayer            // immutable after Open; never nil
	vms     *vmservice.Service    // immutable after Open; nil when no VMM driver can run here
	fwd     *portfwd.Forwarder    // immutable after Open; never nil

	// ctx lives as long as the daemon: long-lived work started by a request (an
	// attach) outlives that request.
	ctx    context.Context
	cancel context.CancelFunc
}

// Open recovers bangerd's state: it opens the store, makes sure the bridge and NAT
// table exist, seeds the TAP pool from the taps VMs hold, starts the DNS server and
// fills it from the VMs that are actually alive. A failure undoes what was opened.
func Open(ctx context.Context, o Options) (_ *Daemon, err error) {
	log := o.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	d := &Daemon{opts: o, log: log, started: time.Now()}
	d.ctx, d.cancel = context.WithCancel(context.Background())
	var undo []func()
	defer func() {
		if err != nil {
			for i := len(undo) - 1; i >= 0; i-- {
				undo[i]()
			}
		}
	}()

	if d.store, err = store.Open(ctx, o.Layout.StorePath()); err != nil {
		return nil, err
	}
	undo = append(undo, func() { _ = d.store.Close() })

	if d.images, err = openImages(o, d.store, log); err != nil {
		return nil, err
	}
	d.disks = newDiskLayer(disk.Config{DisksDir: o.Layout.DisksDir(), ImagesDir: o.Layout.ImagesDir(), Ops: o.Block, Logger: log.With("component", "disk")})
	if vms, err := d.store.ListVMs(ctx); err != nil {
		return nil, err
	} else if err := d.disks.reap(ctx, vms); err != nil {
		log.Warn("reap leftover disk devices", "err", err) // not fatal: VMs still work
	}
	if d.kernels, err = imageservice.NewKernels(imageservice.KernelDeps{Store: d.store, KernelsDir: o.Layout.KernelsDir(), InitBinary: o.InitPath}); err != nil {
		return nil, err
	}

	listen, err := o.Config.DNSListen()
	if err != nil {
		return nil, err
	}
	upstreams := o.Upstreams
	if upstreams == nil && len(o.Config.DNS.Upstreams) > 0 {
		upstreams = o.Config.DNS.Upstreams
	}
	if upstreams == nil {
		src := vmdns.UpstreamSource{ResolvConf: vmdns.DefaultResolvConf, ResolvedConf: vmdns.DefaultResolvedConf, Exclude: []netip.AddrPort{listen}}
		if upstreams, err = src.Upstreams(); err != nil {
			log.Warn("no upstream resolvers: names outside the VM domain will not resolve for guests", "err", err)
		}
	}
	if d.dns, err = vmdns.New(vmdns.Options{
		Domain: o.Config.DNS.Domain, Upstreams: upstreams,
		MaxInFlight: o.Config.DNS.MaxInFlight, MaxInFlightPerSource: o.Config.DNS.MaxInFlightPerSource,
		Logger: log.With("component", "dns"),
	}); err != nil {
		return nil, err
	}

	if d.net, err = hostnetwork.New(hostnetwork.Deps{
		Helper: o.Helper, DNS: d.dns, Network: o.Config.Network, Domain: o.Config.DNS.Domain,
		DNSListen: listen, ResolveHint: vmdns.ResolveHint, Logger: log.With("component", "hostnetwork"),
		Root: o.Layout.Root,
	}); err != nil {
		return nil, err
	}
	handles, err := d.store.ListHandles(ctx)
	if err != nil {
		return nil, err
	}
	var inUse []string
	for _, h := range handles {
		if h.Tap != "" {
			inUse = append(inUse, h.Tap)
		}
	}
	if err := d.net.Open(ctx, inUse); err != nil {
		return nil, err
	}
	undo = append(undo, func() { _ = d.net.Close(context.Background()) })

	// The bridge address exists now, so the DNS server can bind it.
	if err := d.dns.Start(ctx, listen.String()); err != nil {
		return nil, fmt.Errorf("dns server on %s: %w", listen, err)
	}
	undo = append(undo, func() { _ = d.dns.Close(context.Background()) })
	if err := d.openVMs(ctx); err != nil {
		return nil, err
	}
	undo = append(undo, func() { d.vms.Close(); _ = d.fwd.Close() })
	if err := d.rebuildDNS(ctx); err != nil {
		return nil, err
	}
	log.Info("bangerd open", "root", o.Layout.Root, "bridge", o.Config.Network.Bridge, "dns", listen, "pid", os.Getpid())
	return d, nil
}

// openImages builds the ImageService. Missing image tools or agent do not stop the
// daemon: the service explains them when asked for an image.
func openImages(o Options, st *store.Store, log *slog.Logger) (*imageservice.Service, error) {
	builder, berr := image.New(image.Config{Logger: log.With("component", "image")})
	var agent imageservice.Agent
	var agentErr error
	if o.AgentPath != "" {
		agent, agentErr = imageservice.AgentFromFile(o.AgentPath)
		if agentErr != nil {
			log.Warn("guest agent unusable; image pulls will fail until it is installed", "err", agentErr)
		}
	}
	deps := imageservice.Deps{Store: st, ImagesDir: o.Layout.ImagesDir(), Agent: agent, AgentErr: agentErr, Logger: log.With("component", "images")}
	if berr == nil {
		deps.Builder = builder
	} else {
		deps.BuilderErr = berr
		log.Warn("image tools missing; image pulls will fail", "err", berr)
	}
	return imageservice.New(deps)
}

// openVMs builds the VMService over the other services and re-attaches to the
// VMs that survived the last daemon.
func (d *Daemon) openVMs(ctx context.Context) error {
	ssh, err := openSSH(d.opts)
	if err != nil {
		return fmt.Errorf("ssh material: %w", err)
	}
	d.fwd = portfwd.New(portfwd.Config{Logger: d.log.With("component", "ports"), Name: d.vmName})
	drivers := d.opts.Drivers
	if drivers == nil {
		drivers = map[string]vmm.Driver{}
	}
	def := d.opts.DefaultDriver
	var consoleMax int64 // 0: the VM service's default
	if d.opts.Config.Console.MaxSize != "" {
		if consoleMax, err = d.opts.Config.ConsoleMaxBytes(); err != nil {
			return err
		}
	}
	d.vms, err = vmservice.New(vmservice.Deps{
		Store: d.store, Images: d.images, Kernels: d.kernels, Network: d.net, DNS: d.dns, Disks: d.disks,
		SSH: ssh, Ports: ports{d.fwd}, Drivers: drivers, DefaultDriver: def, DefaultDiskStrategy: d.opts.Config.Disk.Strategy,
		Layout: d.opts.Layout, Domain: d.opts.Config.DNS.Domain, MTU: d.opts.Config.Network.MTU,
		ReadyTimeout: d.opts.ReadyTimeout, ConsoleMaxBytes: consoleMax, Logger: d.log.With("component", "vms"),
	})
	if err != nil {
		return err
	}
	return d.vms.Open(ctx)
}

// rebuildDNS replaces the DNS records with one per VM whose VMM is alive, so names
// of VMs that died while bangerd was down stop resolving.
func (d *Daemon) rebuildDNS(ctx context.Context) error {
	vms, err := d.store.ListVMs(ctx)
	if err != nil {
		return err
	}
	handles, err := d.store.ListHandles(ctx)
	if err != nil {
		return err
	}
	byVM := make(map[string]store.Handle, len(handles))
	for _, h := range handles {
		byVM[h.VMID] = h
	}
	leases, err := d.store.ListLeases(ctx)
	if err != nil {
		return err
	}
	ips := make(map[string]netip.Addr, len(leases))
	for _, l := range leases {
		ips[l.VMID] = l.Addr
	}
	recs := map[string]netip.Addr{}
	for _, vm := range vms {
		h, ok := byVM[vm.ID]
		ip, leased := ips[vm.ID]
		if ok && leased && hostnetwork.ProcessAlive(h.PID, h.PIDStart) {
			recs[vm.Name] = ip
		}
	}
	return d.dns.Replace(recs)
}

// Close stops the DNS server and background work and closes the store. VMs keep
// running: their VMMs are not children of bangerd, and the next Open re-attaches.
func (d *Daemon) Close(ctx context.Context) error {
	d.cancel()
	d.vms.Close()
	_ = d.fwd.Close()
	var errs []error
	if err := d.dns.Close(ctx); err != nil {
		errs = append(errs, fmt.Errorf("dns: %w", err))
	}
	if err := d.net.Close(ctx); err != nil {
		errs = append(errs, fmt.Errorf("hostnetwork: %w", err))
	}
	if err := d.store.Close(); err != nil {
		errs = append(errs, fmt.Errorf("store: %w", err))
	}
	d.log.Info("bangerd closed")
	return errors.Join(errs...)
}

// Network returns the HostNetwork service (for tests and the API).
func (d *Daemon) Network() *hostnetwork.Service { return d.net }

// VMs returns the VMService (for tests).
func (d *Daemon) VMs() *vmservice.Service { return d.vms }

// DNSAddr is where the DNS server listens.
func (d *Daemon) DNSAddr() netip.AddrPort { return d.dns.Addr() }

// vmName is the name of the VM with id, for messages; "" when it cannot be read.
func (d *Daemon) vmName(id string) string {
	ctx, cancel := context.WithTimeout(d.ctx, 2*time.Second)
	defer cancel()
	v, err := d.store.GetVM(ctx, id)
	if err != nil {
		return ""
	}
	return v.Name
}
