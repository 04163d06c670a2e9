package firecracker

import (
	"fmt"
	"strings"
)

// Firecracker has two id alphabets, and they differ on purpose:
//
//   - device ids in API paths and bodies (/drives/{drive_id},
//     /network-interfaces/{iface_id}): ASCII letters, digits and '_' (no '-');
//   - the instance id (firecracker --id, jailer --id, which also names the
//     chroot and the cgroup): 1 to 64 ASCII letters, digits and '-' (no '_').
//
// banger VM ids are lowercase hex, valid in both.

// MaxInstanceIDLen is the longest --id Firecracker and the jailer accept.
const MaxInstanceIDLen = 64

func isAlnum(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9'
}

// ValidateDeviceID checks a drive or interface id against Firecracker's rule.
func ValidateDeviceID(id string) error {
	if id == "" {
		return fmt.Errorf("device id is empty: use ASCII letters, digits and '_'")
	}
	for i := 0; i < len(id); i++ {
		if c := id[i]; !isAlnum(c) && c != '_' {
			return fmt.Errorf("device id %q: %q at %d is not allowed: Firecracker takes only ASCII letters, digits and '_' (see DeviceID)", id, c, i)
		}
	}
	return nil
}

// DeviceID derives a valid drive or interface id from any name: every other
// byte becomes '_' ("root-fs" → "root_fs"); an empty name gives "dev".
func DeviceID(name string) string {
	if name == "" {
		return "dev"
	}
	b := []byte(name)
	for i, c := range b {
		if !isAlnum(c) && c != '_' {
			b[i] = '_'
		}
	}
	return string(b)
}

// ValidateInstanceID checks a --id for Firecracker or the jailer.
func ValidateInstanceID(id string) error {
	if id == "" || len(id) > MaxInstanceIDLen {
		return fmt.Errorf("instance id %q is %d bytes: Firecracker takes 1 to %d", id, len(id), MaxInstanceIDLen)
	}
	for i := 0; i < len(id); i++ {
		if c := id[i]; !isAlnum(c) && c != '-' {
			return fmt.Errorf("instance id %q: %q at %d is not allowed: Firecracker takes only ASCII letters, digits and '-' (see InstanceID)", id, c, i)
		}
	}
	return nil
}

// InstanceID derives a valid --id from any name: every other byte becomes
// '-', the result is cut to 64 bytes; an empty name gives "vm".
func InstanceID(name string) string {
	b := []byte(name)
	for i, c := range b {
		if !isAlnum(c) && c != '-' {
			b[i] = '-'
		}
	}
	if len(b) > MaxInstanceIDLen {
		b = b[:MaxInstanceIDLen]
	}
	if len(b) == 0 {
		return "vm"
	}
	return string(b)
}

// EnsureRebootK returns kernel boot arguments that carry reboot=k, which makes
// a guest's reboot (and so SendCtrlAltDel) end the Firecracker process: any
// other reboot= value is replaced, and reboot=k is added when absent. Only the
// kernel's part is touched, never init's arguments after " -- ".
func EnsureRebootK(args string) string {
	kernel, initArgs := args, ""
	if i := dashDash(args); i >= 0 {
		kernel, initArgs = args[:i], args[i:]
	}
	var out []string
	seen := false
	for _, f := range strings.Fields(kernel) {
		if strings.HasPrefix(f, "reboot=") {
			if seen {
				continue
			}
			f, seen = "reboot=k", true
		}
		out = append(out, f)
	}
	if !seen {
		out = append(out, "reboot=k")
	}
	if initArgs != "" {
		out = append(out, initArgs)
	}
	return strings.Join(out, " ")
}

// dashDash returns the offset of the first "--" word in args, or -1.
func dashDash(args string) int {
	for i := 0; i+1 < len(args); i++ {
		if args[i] == '-' && args[i+1] == '-' &&
			(i == 0 || args[i-1] == ' ') && (i+2 == len(args) || args[i+2] == ' ') {
			return i
		}
	}
	return -1
}
