// Package guestinit is banger-init, the /init of the initramfs that banger
// generates for distribution kernels: as PID 1 it mounts /proc, /sys and
// /dev, loads the modules the initramfs carries in the listed order, waits
// for the root block device without udev, mounts it, switches root and execs
// the real init (banger-agent by default). It imports only the standard
// library and golang.org/x/sys/unix, to keep the binary small.
//
// The steps live here, apart from cmd/banger-init, so that the parts that
// need no PID 1 (command line, module list, device discovery, filesystem
// labels) are unit-tested; the whole sequence is tested by booting a real
// kernel under QEMU (internal/kernel's boot test).
package guestinit

import (
	"strings"
	"time"
)

// Paths inside the initramfs that the builder and /init agree on.
const (
	// ModulesList lists the modules to load, one absolute path a line,
	// each after the modules it needs.
	ModulesList = "/etc/banger-init/modules"
	// NewRoot is where the root filesystem is mounted before the switch.
	NewRoot = "/newroot"
)

// Defaults for what the command line does not say.
const (
	DefaultRoot       = "/dev/vda"
	DefaultRootFSType = "ext4"
	DefaultInit       = "/sbin/banger-agent" // run with the argument "init"
	FallbackInit      = "/sbin/init"
	DefaultRootWait   = 30 * time.Second // TCG boots are slow; KVM ones take milliseconds
)

// Cmdline is what banger-init takes from the kernel command line.
type Cmdline struct {
	Root       string // root=: /dev/NAME, LABEL=x or UUID=x; default DefaultRoot
	RootFSType string // rootfstype=; default DefaultRootFSType
	RootFlags  string // rootflags=: filesystem-specific mount data
	ReadOnly   bool   // "ro" mounts the root read-only; "rw" (the default here) read-write
	// Init is banger.init=: the program to exec in the real root. Empty means
	// DefaultInit with the argument "init" if the root has it, else FallbackInit.
	Init string
	// InitArgs are the words after "--", which the kernel leaves for init.
	InitArgs []string
	// RootWait is banger.rootwait= (a Go duration or whole seconds): how long
	// to wait for the root device; default DefaultRootWait.
	RootWait time.Duration
}

// ParseCmdline reads a kernel command line as the kernel splits it: words
// separated by spaces, double quotes grouping a value with spaces in it.
// Unknown words are ignored; they belong to the kernel or to other tools.
// Unlike the kernel, the root is mounted read-write unless "ro" is given:
// the guest agent needs a writable root, and nothing remounts it later.
func ParseCmdline(s string) Cmdline {
	c := Cmdline{Root: DefaultRoot, RootFSType: DefaultRootFSType, RootWait: DefaultRootWait}
	words := splitCmdline(s)
	for i, w := range words {
		if w == "--" {
			c.InitArgs = append([]string(nil), words[i+1:]...)
			break
		}
		key, val, hasVal := strings.Cut(w, "=")
		switch {
		case key == "ro" && !hasVal:
			c.ReadOnly = true
		case key == "rw" && !hasVal:
			c.ReadOnly = false
		case key == "root" && val != "":
			c.Root = val
		case key == "rootfstype" && val != "":
			c.RootFSType = val
		case key == "rootflags":
			c.RootFlags = val
		case key == "banger.init" && val != "":
			c.Init = val
		case key == "banger.rootwait" && val != "":
			if d, ok := parseWait(val); ok {
				c.RootWait = d
			}
		}
	}
	return c
}

func parseWait(s string) (time.Duration, bool) {
	if d, err := time.ParseDuration(s); err == nil && d > 0 {
		return d, true
	}
	n := 0
	for _, r := range s {
		if r < '0' || r > '9' || n > 1e6 {
			return 0, false
		}
		n = n*10 + int(r-'0')
	}
	if n == 0 {
		return 0, false
	}
	return time.Duration(n) * time.Second, true
}

// splitCmdline splits on spaces outside double quotes and drops the quotes,
// as the kernel's next_arg does.
func splitCmdline(s string) []string {
	var words []string
	var cur strings.Builder
	inQuote, inWord := false, false
	for _, r := range s {
		switch {
		case r == '"':
			inQuote = !inQuote
			inWord = true
		case !inQuote && (r == ' ' || r == '\t' || r == '\n'):
			if inWord {
				words = append(words, cur.String())
				cur.Reset()
				inWord = false
			}
		default:
			cur.WriteRune(r)
			inWord = true
		}
	}
	if inWord {
		words = append(words, cur.String())
	}
	return words
}

// InitCommand returns what to exec in the new root, whose files are under
// root: Init (or DefaultInit init, falling back to FallbackInit) and its
// arguments. exists reports whether a path inside the new root exists.
func (c Cmdline) InitCommand(exists func(path string) bool) (argv []string, ok bool) {
	if c.Init != "" {
		if !exists(c.Init) {
			return []string{c.Init}, false
		}
		return append([]string{c.Init}, c.InitArgs...), true
	}
	if exists(DefaultInit) {
		return append([]string{DefaultInit, "init"}, c.InitArgs...), true
	}
	if exists(FallbackInit) {
		return append([]string{FallbackInit}, c.InitArgs...), true
	}
	return []string{DefaultInit}, false
}
