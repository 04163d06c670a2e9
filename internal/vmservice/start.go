package vmservice

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"time"

	"banger/internal/agent/client"
	"banger/internal/agent/proto"
	"banger/internal/consolelog"
	"banger/internal/disk"
	"banger/internal/hostnetwork"
	"banger/internal/store"
	"banger/internal/termsafe"
	"banger/internal/vmm"
)

// Start boots a created or stopped VM and waits until its agent answers and SSH
// takes the provisioned key. A failure undoes every start step (no VMM, tap, NAT
// rule or DNS record is left) and records why, with the console's last lines.
func (s *Service) Start(ctx context.Context, ref string) (VM, error) {
	vm, err := s.d.Store.GetVM(ctx, ref)
	if err != nil {
		return VM{}, err
	}
	unlock := s.lockVM(vm.ID)
	defer unlock()
	if err := s.start(ctx, vm); err != nil {
		return VM{}, err
	}
	return s.Get(ctx, vm.ID)
}

func (s *Service) start(ctx context.Context, vm store.VM) (err error) {
	drv, err := s.driver(vm.Driver)
	if err != nil {
		return err
	}
	if h, herr := s.d.Store.GetHandle(ctx, vm.ID); herr == nil && h.PID != 0 && hostnetwork.ProcessAlive(h.PID, h.PIDStart) {
		return fmt.Errorf("vm %q is already running (pid %d): %w", vm.Name, h.PID, ErrConflict)
	}
	lease, err := s.d.Store.LeaseOf(ctx, vm.ID)
	if err != nil {
		return fmt.Errorf("vm %q: its IP lease is missing: %w", vm.Name, err)
	}
	ip := lease.Addr
	var dsk disk.Disk
	if err := json.Unmarshal(vm.Disk, &dsk); err != nil || dsk.Path == "" {
		return fmt.Errorf("vm %q has no root disk record: remove and recreate it", vm.Name)
	}
	kern, err := s.d.Kernels.Resolve(ctx, vm.KernelID)
	if err != nil {
		return fmt.Errorf("vm %q: kernel: %w", vm.Name, err)
	}
	sp := decodeSpec(vm.Spec)
	if err := s.d.Ports.Check(vm.ID, sp.Publish); err != nil {
		return fmt.Errorf("vm %q: %w: %w", vm.Name, err, ErrConflict)
	}

	var undo []func()
	cleanup := context.WithoutCancel(ctx)
	defer func() {
		if err != nil {
			for i := len(undo) - 1; i >= 0; i-- {
				undo[i]()
			}
			sp.StartError = err.Error()
			_ = s.d.Store.SetVMSpec(cleanup, vm.ID, sp.encode())
			_ = s.d.Store.UpdateVMState(cleanup, vm.ID, store.VMFailed)
		}
	}()

	t := &Timings{At: s.d.Now()}
	t0 := time.Now()
	// Host setup: tap, NAT, DNS, disk.
	tap, err := s.d.Network.AcquireTap(ctx, vm.ID)
	if err != nil {
		return fmt.Errorf("vm %q: tap: %w", vm.Name, err)
	}
	undo = append(undo, func() { _ = s.d.Network.ReleaseTap(cleanup, tap) })
	t.Tap = time.Since(t0)
	tn := time.Now()
	if err := s.d.Network.SetNAT(ctx, ip, macFor(vm.ID), tap, true); err != nil {
		return err
	}
	undo = append(undo, func() { _ = s.d.Network.SetNAT(cleanup, ip, "", tap, false) })
	t.NAT = time.Since(tn)
	if err := s.d.DNS.Set(vm.Name, ip); err != nil {
		return fmt.Errorf("vm %q: dns record: %w", vm.Name, err)
	}
	undo = append(undo, func() { s.d.DNS.Remove(vm.Name) })
	td := time.Now()
	if dsk, err = s.d.Disks.Activate(ctx, dsk); err != nil {
		return fmt.Errorf("vm %q: activate root disk: %w", vm.Name, err)
	}
	t.Disk = time.Since(td)
	if err := os.MkdirAll(s.runDir(vm.ID), 0o700); err != nil {
		return err
	}
	undo = append(undo, func() { s.removeRuntime(vm.ID) })
	if err := os.MkdirAll(dirOf(s.consoleLog(vm.ID)), 0o750); err != nil {
		return err
	}
	_ = consolelog.Remove(s.consoleLog(vm.ID)) // each boot gets a fresh console log
	t.HostSetup = time.Since(t0)

	// VMM launch.
	tl := time.Now()
	spec := vmm.Spec{
		ID: vm.ID, Name: vm.Name, CPUs: vm.CPUs, MemoryMiB: vm.MemoryMiB,
		Kernel: kern.Path, Initrd: kern.InitrdPath, Cmdline: s.cmdline(vm, ip, dsk),
		Root: vmm.Disk{Path: dsk.Path, Format: string(dsk.Format)},
		Tap:  tap, MAC: macFor(vm.ID), VsockCID: s.cid(ip),
		RunDir: s.runDir(vm.ID), ConsoleLog: s.consoleLog(vm.ID), ConsoleMaxBytes: s.d.ConsoleMaxBytes,
	}
	h, err := drv.Start(ctx, spec)
	if err != nil {
		return fmt.Errorf("vm %q: start %s: %w%s", vm.Name, vm.Driver, err, s.consoleTail(vm.ID))
	}
	undo = append(undo, func() {
		_ = drv.Kill(cleanup, h)
		_ = s.d.Store.ClearHandle(cleanup, vm.ID)
	})
	if err := s.d.Store.SetHandle(ctx, storeHandle(vm.ID, h, tap, spec)); err != nil {
		return err
	}
	if err := s.d.Store.UpdateVMState(ctx, vm.ID, store.VMStarting); err != nil {
		return err
	}
	t.VMMLaunch = time.Since(tl)

	// Kernel to agent ready.
	ta := time.Now()
	rctx, cancel := context.WithTimeout(ctx, s.d.ReadyTimeout)
	defer cancel()
	ag, err := s.waitAgent(rctx, vm.ID, drv, h)
	if errors.Is(err, errVMMExited) {
		return fmt.Errorf("vm %q: the VMM exited before the guest agent answered (the guest kernel failed or powered off): %w%s", vm.Name, ErrNotReady, s.consoleTail(vm.ID))
	}
	if err != nil {
		return fmt.Errorf("vm %q: the guest agent did not answer within %s (%v): %w%s", vm.Name, s.d.ReadyTimeout, err, ErrNotReady, s.consoleTail(vm.ID))
	}
	undo = append(undo, func() { s.dropAgent(vm.ID) })
	t.AgentReady = time.Since(ta)

	// Provision SSH, then wait for port 22 to answer.
	ts := time.Now()
	if err := s.provision(rctx, vm, ag); err != nil {
		return fmt.Errorf("vm %q: provision ssh: %w", vm.Name, err)
	}
	if err := waitTCP(rctx, netip.AddrPortFrom(ip, 22)); err != nil {
		return fmt.Errorf("vm %q: ssh on %s:22 did not answer: %w%s", vm.Name, ip, err, s.consoleTail(vm.ID))
	}
	t.SSHReady = time.Since(ts)

	if len(sp.Publish) > 0 {
		if err := s.d.Ports.Publish(ctx, vm.ID, sp.Publish, ip); err != nil {
			return fmt.Errorf("vm %q: %w", vm.Name, err)
		}
		undo = append(undo, func() { s.d.Ports.Unpublish(vm.ID) })
	}
	t.Total = time.Since(t0)
	sp.Timings, sp.StartError = t, ""
	if err := s.d.Store.SetVMSpec(ctx, vm.ID, sp.encode()); err != nil {
		return err
	}
	if err := s.d.Store.UpdateVMState(ctx, vm.ID, store.VMRunning); err != nil {
		return err
	}
	s.log.Info("vm started", "vm", vm.Name, "ip", ip, "tap", tap, "pid", h.PID, "total", t.Total.Round(time.Millisecond), "agent_ready", t.AgentReady.Round(time.Millisecond))
	return nil
}

func dirOf(p string) string {
	if i := strings.LastIndexByte(p, '/'); i > 0 {
		return p[:i]
	}
	return "."
}

// storeHandle records what re-attaching and cleaning up need.
func storeHandle(id string, h vmm.Handle, tap string, spec vmm.Spec) store.Handle {
	sh := store.Handle{
		VMID: id, PID: h.PID, PIDStart: h.PIDStart, Tap: tap,
		APISocket: h.APISocket, AgentSocket: h.AgentSocket,
		VsockCID: spec.VsockCID, DiskPath: spec.Root.Path,
	}
	if h.AgentPort != 0 {
		sh.VsockPath = h.AgentSocket
	}
	return sh
}

// vmmHandle rebuilds the driver's handle from the stored one.
func vmmHandle(driver string, h store.Handle, console string) vmm.Handle {
	vh := vmm.Handle{Driver: driver, PID: h.PID, PIDStart: h.PIDStart, APISocket: h.APISocket, AgentSocket: h.AgentSocket, ConsoleLog: console}
	if h.VsockPath != "" {
		vh.AgentSocket, vh.AgentPort = h.VsockPath, 1024
	}
	return vh
}

// cmdline is the kernel command line the VM service wants; drivers add their own.
func (s *Service) cmdline(vm store.VM, ip netip.Addr, d disk.Disk) string {
	b := s.d.Network.Bridge()
	parts := []string{
		"root=/dev/vda", "rw",
		"banger.hostname=" + vm.Name,
		"banger.ip=" + netip.PrefixFrom(ip, b.Bits()).String(),
		"banger.gw=" + b.Addr().String(),
		"banger.mtu=" + strconv.Itoa(s.d.MTU),
		"banger.dns=" + b.Addr().String(),
		"banger.search=" + s.d.Domain,
	}
	if d.NeedsOnlineResize {
		parts = append(parts, "banger.growroot=1")
	}
	return strings.Join(parts, " ")
}

// cid derives the vsock CID from the guest address: 10000 + its offset in the
// bridge network (the last octet on a /24), unique because leases are.
func (s *Service) cid(ip netip.Addr) uint32 {
	a, n := ip.As4(), s.d.Network.Bridge().Masked().Addr().As4()
	off := (uint32(a[0])<<24 | uint32(a[1])<<16 | uint32(a[2])<<8 | uint32(a[3])) -
		(uint32(n[0])<<24 | uint32(n[1])<<16 | uint32(n[2])<<8 | uint32(n[3]))
	return 10000 + off
}

var errVMMExited = errors.New("the VMM exited")

// waitAgent dials the agent until it answers a health call or ctx ends.
func (s *Service) waitAgent(ctx context.Context, id string, drv vmm.Driver, h vmm.Handle) (*client.Client, error) {
	delay := 50 * time.Millisecond
	var last error
	for {
		if st, err := drv.State(ctx, h); err == nil && st == vmm.StateExited {
			return nil, errVMMExited
		}
		c, err := s.dialAgent(ctx, drv, h)
		if err == nil {
			hctx, cancel := context.WithTimeout(ctx, 5*time.Second)
			_, err = c.Health(hctx)
			cancel()
			if err == nil {
				s.mu.Lock()
				s.agents[id] = c
				s.mu.Unlock()
				return c, nil
			}
			c.Close()
		}
		last = err
		select {
		case <-ctx.Done():
			if last != nil {
				return nil, fmt.Errorf("%w (last attempt: %v)", ctx.Err(), last)
			}
			return nil, ctx.Err()
		case <-time.After(delay):
		}
		delay = min(delay*2, 500*time.Millisecond)
	}
}

func (s *Service) dialAgent(ctx context.Context, drv vmm.Driver, h vmm.Handle) (*client.Client, error) {
	dctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	conn, err := drv.DialAgent(dctx, h)
	if err != nil {
		return nil, err
	}
	return client.Dial(dctx, conn, client.Options{Logger: s.log.With("component", "agent-client")})
}

// agent returns a live session with the VM's agent, dialling a new one when the
// old one ended (the agent accepts a fresh handshake at any time).
func (s *Service) agent(ctx context.Context, vm store.VM) (*client.Client, error) {
	s.mu.Lock()
	c := s.agents[vm.ID]
	s.mu.Unlock()
	if c != nil {
		select {
		case <-c.Done():
		default:
			return c, nil
		}
	}
	h, err := s.d.Store.GetHandle(ctx, vm.ID)
	if err != nil || h.PID == 0 || !hostnetwork.ProcessAlive(h.PID, h.PIDStart) {
		return nil, fmt.Errorf("vm %q is not running: start it (banger vm start %s): %w", vm.Name, vm.Name, ErrNotRunning)
	}
	drv, err := s.driver(vm.Driver)
	if err != nil {
		return nil, err
	}
	c, err = s.dialAgent(ctx, drv, vmmHandle(vm.Driver, h, s.consoleLog(vm.ID)))
	if err != nil {
		return nil, fmt.Errorf("vm %q: reach the guest agent: %w", vm.Name, err)
	}
	s.mu.Lock()
	if old := s.agents[vm.ID]; old != nil {
		old.Close()
	}
	s.agents[vm.ID] = c
	s.mu.Unlock()
	return c, nil
}

func (s *Service) dropAgent(id string) {
	s.mu.Lock()
	c := s.agents[id]
	delete(s.agents, id)
	s.mu.Unlock()
	if c != nil {
		c.Close()
	}
}

// provision gives the agent the VM's SSH host key and the user's public key.
func (s *Service) provision(ctx context.Context, vm store.VM, c *client.Client) error {
	priv, _, err := s.d.SSH.HostKey(vm.ID)
	if err != nil {
		return err
	}
	user, err := s.d.SSH.AuthorizedKey()
	if err != nil {
		return err
	}
	keys := []string{user}
	_, err = c.Provision(ctx, proto.ProvisionArgs{HostKey: string(priv), AuthorizedKeys: &keys})
	return err
}

// waitTCP waits until addr accepts a TCP connection.
func waitTCP(ctx context.Context, addr netip.AddrPort) error {
	delay := 20 * time.Millisecond
	for {
		var d net.Dialer
		dctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		c, err := d.DialContext(dctx, "tcp", addr.String())
		cancel()
		if err == nil {
			return c.Close()
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%w (last: %v)", ctx.Err(), err)
		case <-time.After(delay):
		}
		delay = min(delay*2, 250*time.Millisecond)
	}
}

// consoleTail returns the console's last lines, formatted to end an error. The
// console is the guest's text, so it is neutralised (termsafe) before it goes
// into an error that a terminal will show. It first waits briefly for the
// console logger: after the VMM exits, the logger may still be writing the
// panic that explains why.
func (s *Service) consoleTail(id string) string {
	path := s.consoleLog(id)
	consolelog.Settle(path, 2*time.Second)
	b, err := consolelog.Tail(path, 64<<10)
	if err != nil || b == nil {
		if _, serr := os.Stat(path); serr != nil {
			return ""
		}
	}
	var lines []string
	sc := bufio.NewScanner(bytes.NewReader(b))
	sc.Buffer(make([]byte, 0, 64<<10), 64<<10)
	for sc.Scan() {
		lines = append(lines, termsafe.String(strings.TrimRight(sc.Text(), "\r")))
		if len(lines) > 20 {
			lines = lines[1:]
		}
	}
	if len(lines) == 0 {
		return "\nthe console printed nothing"
	}
	return "\nlast console lines:\n  " + strings.Join(lines, "\n  ")
}
