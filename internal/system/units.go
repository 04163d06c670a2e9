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

// The helper keeps only the capabilities its ops need (network admin for bridge,
// taps and nftables; chown/fowner/dac for handing sockets to the owner; sys_admin for
// loop and device-mapper; kill for VMM signalling). KillMode=process on both units:
// VMM processes must outlive a restart of either (bangerd re-attaches to them).
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
CapabilityBoundingSet=CAP_NET_ADMIN CAP_NET_RAW CAP_CHOWN CAP_FOWNER CAP_DAC_OVERRIDE CAP_SYS_ADMIN CAP_KILL CAP_MKNOD CAP_SETUID CAP_SETGID
ProtectSystem=strict
ReadWritePaths={{.Root}} /proc/sys/net
ProtectHome=yes
PrivateTmp=yes
ProtectKernelModules=yes
ProtectControlGroups=yes
ProtectClock=yes
ProtectHostname=yes
RestrictRealtime=yes
RestrictNamespaces=yes
LockPersonality=yes
MemoryDenyWriteExecute=yes
RestrictAddressFamilies=AF_UNIX AF_NETLINK AF_INET AF_INET6
SystemCallArchitectures=native

[Install]
WantedBy=multi-user.target
`))

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
UMask=0027
NoNewPrivileges=yes
CapabilityBoundingSet=
AmbientCapabilities=
ProtectSystem=strict
ReadWritePaths={{.Root}}
ProtectHome=read-only
PrivateTmp=yes
ProtectKernelTunables=yes
ProtectKernelModules=yes
ProtectControlGroups=yes
ProtectClock=yes
ProtectHostname=yes
RestrictRealtime=yes
RestrictSUIDSGID=yes
LockPersonality=yes
RestrictAddressFamilies=AF_UNIX AF_NETLINK AF_INET AF_INET6 AF_VSOCK
SystemCallArchitectures=native

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
