package system

import (
	"bytes"
	"fmt"
	"path/filepath"
	"text/template"
)

// UnitSpec is what the two systemd units are generated from.
type UnitSpec struct {
	Root   string // banger root
	BinDir string // where banger-helper and bangerd are installed
	Owner  Owner
}

// Unit names.
const (
	HelperUnit = "banger-helper.service"
	DaemonUnit = "bangerd.service"
)

// The two units are hardened as far as each one's job allows, and the test suite
// prints `systemd-analyze security --offline=yes` for both and holds them to it
// (TestUnitsSecurity): bangerd at "OK" (exposure <= 2.0), the helper below the
// threshold written there. KillMode=process on both: VMM processes must outlive a
// restart of either (bangerd re-attaches to them).
//
// banger-helper runs as root, and keeps only the capabilities its operations use
// (each listed with why in the unit itself). It needs the host's network (bridge,
// taps, nftables live there), the host's /dev (loop and device-mapper nodes appear
// at run time), /proc/sys/net (ip_forward) and the banger root; everything else is
// read-only or hidden. The namespaces and the mount, chroot and set*id calls it
// keeps are the Firecracker jailer's, which it runs.
var helperUnitTmpl = template.Must(template.New("helper").Parse(`[Unit]
Description=banger root helper: validated privileged steps for bangerd
Documentation=https://example.invalid/banger
After=network.target
Before=bangerd.service

[Service]
Type=simple
ExecStart={{.BinDir}}/banger-helper --root {{.Root}} --owner-uid {{.Owner.UID}} --owner-gid {{.Owner.GID}}
Restart=on-failure
RestartSec=1
KillMode=process
UMask=0077
NoNewPrivileges=yes
# Capabilities the helper keeps, and why:
#   CAP_NET_ADMIN     bridge and taps over netlink and /dev/net/tun, nftables rules,
#                     ip_forward
#   CAP_SYS_ADMIN     loop devices (LOOP_CTL_GET_FREE, LOOP_SET_FD) and
#                     device-mapper (dmsetup create/remove) for copy-on-write disks;
#                     the jailer's mount namespace, bind mounts and pivot_root
#   CAP_DAC_OVERRIDE  opening the owner's disk files and directories (0640/0750,
#                     the owner's) to back loop devices and to build jails
#   CAP_FOWNER        hard-linking the owner's files into a jail
#                     (fs.protected_hardlinks: linking a file one does not own)
#   CAP_DAC_READ_SEARCH  placing a checked file into a jail by its descriptor
#                     (linkat with AT_EMPTY_PATH requires it)
#   CAP_CHOWN         handing the sockets and device nodes it made to the owner, and
#                     the jail's files to the jailed uid
#   CAP_MKNOD         loop and dmsetup device nodes, the VM's disk node inside a
#                     jail, and the jailer's /dev/kvm and /dev/net/tun there
#   CAP_KILL          signalling jailed Firecracker processes, which run as the owner
#   CAP_SETUID CAP_SETGID  the jailer drops Firecracker to the owner's uid and gid
# Not kept: CAP_NET_RAW (no raw or packet sockets), CAP_SYS_PTRACE, CAP_SYS_MODULE,
# CAP_SYS_RAWIO, CAP_SYS_CHROOT, CAP_SYS_RESOURCE, CAP_NET_BIND_SERVICE and the rest.
CapabilityBoundingSet=CAP_NET_ADMIN CAP_SYS_ADMIN CAP_DAC_OVERRIDE CAP_DAC_READ_SEARCH CAP_FOWNER CAP_CHOWN CAP_MKNOD CAP_KILL CAP_SETUID CAP_SETGID
AmbientCapabilities=
ProtectSystem=strict
ReadWritePaths={{.Root}} /proc/sys/net
ProtectHome=yes
PrivateTmp=yes
PrivateMounts=yes
ProtectKernelTunables=yes
ProtectKernelModules=yes
ProtectKernelLogs=yes
ProtectControlGroups=yes
ProtectClock=yes
ProtectHostname=yes
RestrictRealtime=yes
RestrictSUIDSGID=yes
# The jailer's: a mount namespace for the jail, a PID namespace (--new-pid-ns).
RestrictNamespaces=mnt pid
LockPersonality=yes
MemoryDenyWriteExecute=yes
# Netlink for links and nftables, unix for its socket and resolvectl's D-Bus; it
# opens no IP socket, so no IP traffic either.
RestrictAddressFamilies=AF_UNIX AF_NETLINK
IPAddressDeny=any
# Loop and device-mapper nodes come and go at run time, so /dev stays the host's,
# behind a device allow-list: what the loop/dm steps and the jailer's nodes need.
DevicePolicy=closed
DeviceAllow=/dev/loop-control rw
DeviceAllow=block-loop rwm
DeviceAllow=/dev/mapper/control rw
DeviceAllow=block-device-mapper rwm
DeviceAllow=/dev/kvm rwm
DeviceAllow=/dev/net/tun rwm
SystemCallArchitectures=native
# @system-service plus what the jailer needs (mounts, chroot/pivot_root, set*id).
SystemCallFilter=@system-service @mount chroot pivot_root
SystemCallFilter=~@clock @cpu-emulation @debug @module @obsolete @raw-io @reboot @swap
SystemCallErrorNumber=EPERM

[Install]
WantedBy=multi-user.target
`))

// bangerd runs as the owner with no capability at all. What it keeps: the
// network (its DNS server on the bridge address, image pulls from registries), the
// owner's home read-only (the SSH key, file sync), and the devices the VMMs it
// starts need (they inherit this sandbox): /dev/kvm, /dev/net/tun for the taps the
// helper made the owner's, and device-mapper nodes for copy-on-write disks.
// MemoryDenyWriteExecute is left off because QEMU without KVM (TCG) generates code.
var daemonUnitTmpl = template.Must(template.New("daemon").Parse(`[Unit]
Description=banger owner daemon: microVM lifecycle, state, VM DNS
Documentation=https://example.invalid/banger
Requires=banger-helper.service
After=banger-helper.service network.target

[Service]
Type=simple
User={{.Owner.Name}}
Group={{.Owner.GID}}
ExecStart={{.BinDir}}/bangerd --root {{.Root}}
Restart=on-failure
RestartSec=1
KillMode=process
UMask=0077
NoNewPrivileges=yes
CapabilityBoundingSet=
AmbientCapabilities=
ProtectSystem=strict
ReadWritePaths={{.Root}}
ProtectHome=read-only
PrivateTmp=yes
PrivateMounts=yes
ProtectKernelTunables=yes
ProtectKernelModules=yes
ProtectKernelLogs=yes
ProtectControlGroups=yes
ProtectClock=yes
ProtectHostname=yes
ProtectProc=invisible
RestrictRealtime=yes
RestrictSUIDSGID=yes
RestrictNamespaces=yes
LockPersonality=yes
RemoveIPC=yes
RestrictAddressFamilies=AF_UNIX AF_NETLINK AF_INET AF_INET6
DevicePolicy=closed
DeviceAllow=/dev/kvm rw
DeviceAllow=/dev/net/tun rw
DeviceAllow=block-device-mapper rw
SystemCallArchitectures=native
SystemCallFilter=@system-service
SystemCallFilter=~@privileged @resources
SystemCallErrorNumber=EPERM

[Install]
WantedBy=multi-user.target
`))

// RenderUnits returns the unit files' contents by name.
func RenderUnits(s UnitSpec) (map[string][]byte, error) {
	if !filepath.IsAbs(s.Root) || !filepath.IsAbs(s.BinDir) {
		return nil, fmt.Errorf("units need absolute paths (root %q, bin dir %q)", s.Root, s.BinDir)
	}
	if s.Owner.Name == "" {
		return nil, fmt.Errorf("units need the owner's user name")
	}
	out := map[string][]byte{}
	for name, t := range map[string]*template.Template{HelperUnit: helperUnitTmpl, DaemonUnit: daemonUnitTmpl} {
		var b bytes.Buffer
		if err := t.Execute(&b, s); err != nil {
			return nil, fmt.Errorf("render %s: %w", name, err)
		}
		out[name] = b.Bytes()
	}
	return out, nil
}
