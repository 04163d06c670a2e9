// Package initsys is what banger-agent does as a guest's PID 1: mount the kernel
// filesystems, grow the root filesystem when the host asks, set the hostname,
// bring up the network, write the resolver configuration, link virtio-serial
// ports, start the agent service and the image's workload, reap orphans, and shut
// the guest down cleanly.
package initsys

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"strconv"
	"strings"
)

// BootConfig is the per-VM configuration the host passes on the kernel command
// line. The command line is used because it is there before anything else (no
// network, no disk beyond the root) under both Firecracker and QEMU, and the Debian
// kernel has no ip= autoconfiguration to lean on. Parameters:
//
//	banger.hostname=dev
//	banger.iface=eth0              (default eth0)
//	banger.ip=172.16.0.5/24        guest address and prefix
//	banger.gw=172.16.0.1           default gateway
//	banger.mtu=1500
//	banger.dns=172.16.0.1[,...]    resolvers for /etc/resolv.conf
//	banger.search=vm[,...]         search domains
//	banger.growroot=1              grow the root ext4 online to fill its disk
//
// Nothing secret belongs here: the command line is readable by every process in
// the guest (/proc/cmdline). SSH keys come over the control channel instead.
type BootConfig struct {
	Hostname string
	Iface    string
	Address  netip.Prefix // invalid when the host configured no network
	Gateway  netip.Addr
	MTU      int
	DNS      []netip.Addr
	Search   []string
	// GrowRoot asks init to grow the root filesystem to its disk: the host made
	// the disk larger but could not grow the filesystem in it (see GrowFS).
	GrowRoot bool
	// PoweroffReboots makes a power-off a reboot (banger.poweroff=reboot). Under
	// Firecracker a halted guest leaves its VMM running, while a reboot (with
	// reboot=k) ends it; the Firecracker driver asks for this.
	PoweroffReboots bool
}

// ParseCmdline extracts the banger.* parameters from a kernel command line. Other
// parameters are ignored; a banger.* parameter with a bad value is an error, since
// the host wrote it and a silent default would hide the host's bug.
func ParseCmdline(cmdline string) (BootConfig, error) {
	c := BootConfig{Iface: "eth0"}
	for _, f := range strings.Fields(cmdline) {
		key, val, ok := strings.Cut(f, "=")
		if !ok || !strings.HasPrefix(key, "banger.") {
			continue
		}
		var err error
		switch key {
		case "banger.hostname":
			if !validHostname(val) {
				err = errors.New("not a valid hostname")
			}
			c.Hostname = val
		case "banger.iface":
			c.Iface = val
		case "banger.ip":
			c.Address, err = netip.ParsePrefix(val)
		case "banger.gw":
			c.Gateway, err = netip.ParseAddr(val)
		case "banger.mtu":
			c.MTU, err = strconv.Atoi(val)
			if err == nil && (c.MTU < 576 || c.MTU > 65535) {
				err = errors.New("out of range 576-65535")
			}
		case "banger.dns":
			for _, s := range strings.Split(val, ",") {
				a, perr := netip.ParseAddr(s)
				if perr != nil {
					err = perr
					break
				}
				c.DNS = append(c.DNS, a)
			}
		case "banger.search":
			c.Search = strings.Split(val, ",")
		case "banger.growroot":
			c.GrowRoot, err = strconv.ParseBool(val)
		case "banger.poweroff":
			switch val {
			case "reboot":
				c.PoweroffReboots = true
			case "halt":
				c.PoweroffReboots = false
			default:
				err = errors.New("want reboot or halt")
			}
		}
		if err != nil {
			return BootConfig{}, fmt.Errorf("kernel parameter %s: %w", f, err)
		}
	}
	if c.Gateway.IsValid() && !c.Address.IsValid() {
		return BootConfig{}, errors.New("kernel parameters: banger.gw without banger.ip")
	}
	return c, nil
}

func validHostname(s string) bool {
	if s == "" || len(s) > 64 {
		return false
	}
	for _, r := range s {
		if !(r == '-' || r == '.' || r >= '0' && r <= '9' || r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z') {
			return false
		}
	}
	return true
}

// Workload is what the image runs, written into the root filesystem by banger's
// image conversion (/etc/banger/init.json) from the OCI image config.
type Workload struct {
	// Handover, when set, is the image's own init (e.g. /lib/systemd/systemd): after
	// the mounts and network, PID 1 executes it and the agent runs as its service.
	Handover string `json:"handover,omitempty"`
	// Entrypoint and Cmd are concatenated into the argv, as OCI does.
	Entrypoint []string `json:"entrypoint,omitempty"`
	Cmd        []string `json:"cmd,omitempty"`
	Env        []string `json:"env,omitempty"`
	WorkDir    string   `json:"workdir,omitempty"`
	User       string   `json:"user,omitempty"`
}

// Argv is Entrypoint followed by Cmd; empty means there is no workload and the
// guest just idles, reachable over SSH and the control API.
func (w Workload) Argv() []string { return append(append([]string(nil), w.Entrypoint...), w.Cmd...) }

// LoadWorkload reads the workload file; a missing file means no workload.
func LoadWorkload(path string) (Workload, error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return Workload{}, nil
	}
	if err != nil {
		return Workload{}, fmt.Errorf("workload %s: %w", path, err)
	}
	var w Workload
	dec := json.NewDecoder(strings.NewReader(string(b)))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&w); err != nil {
		return Workload{}, fmt.Errorf("workload %s: %w", path, err)
	}
	return w, nil
}
