package privileged

import (
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"strings"
)

var (
	// jailIDRe is a banger VM id as an instance id: lowercase letters, digits, '-'.
	jailIDRe = regexp.MustCompile(`^[a-z0-9][a-z0-9-]{0,63}$`)
	// jailCgroupRe admits only the limits the driver sets.
	jailCgroupRe = regexp.MustCompile(`^(cpu\.max=[1-9][0-9]{0,11} [1-9][0-9]{0,7}|memory\.max=[1-9][0-9]{0,18})$`)
)

// The fixed firecracker flags of a jail; their values are the driver's paths.
const (
	jailAPISocket = "/run/firecracker.socket"
	jailLogPath   = "/firecracker.log"
)

// jailLogLevels are firecracker's --level values.
func jailLogLevels() []string { return []string{"Error", "Warning", "Info", "Debug", "Trace", "Off"} }

func checkJailID(id string) *Error {
	if !jailIDRe.MatchString(id) {
		return invalidf("jail id %q is not a banger VM id: send 1 to 64 lowercase letters, digits or '-'", id)
	}
	return nil
}

// jailLaunchSyntax checks everything in a JailLaunchRequest that needs no filesystem.
func (v validator) jailLaunchSyntax(r *JailLaunchRequest) *Error {
	if e := checkJailID(r.ID); e != nil {
		return e
	}
	if len(r.Files) == 0 || len(r.Files) > 3 {
		return invalidf("jail %s: %d files: send the kernel, the root disk and optionally an initrd", r.ID, len(r.Files))
	}
	seen := map[string]bool{}
	for _, f := range r.Files {
		switch f.Dst {
		case JailDstKernel, JailDstInitrd, JailDstRootfs:
		default:
			return invalidf("jail %s: destination %q is not one of %s, %s, %s", r.ID, f.Dst, JailDstKernel, JailDstInitrd, JailDstRootfs)
		}
		if seen[f.Dst] {
			return invalidf("jail %s: destination %s given twice", r.ID, f.Dst)
		}
		seen[f.Dst] = true
		if f.Writable && f.Dst != JailDstRootfs {
			return invalidf("jail %s: %s may not be writable: only the root disk is", r.ID, f.Dst)
		}
		if e := checkPathSyntax(f.Src, v.root); e != nil {
			return e
		}
	}
	if !seen[JailDstKernel] || !seen[JailDstRootfs] {
		return invalidf("jail %s: send both a kernel (%s) and a root disk (%s)", r.ID, JailDstKernel, JailDstRootfs)
	}
	for _, c := range r.Cgroups {
		if !jailCgroupRe.MatchString(c) {
			return invalidf("jail %s: cgroup %q is not allowed: only cpu.max=<quota> <period> and memory.max=<bytes>", r.ID, c)
		}
	}
	if _, e := jailLogLevel(r.ID, r.FirecrackerArgs); e != nil {
		return e
	}
	if e := checkPathSyntax(r.ConsoleLog, v.logDir); e != nil {
		return e
	}
	if filepath.Dir(r.ConsoleLog) != v.logDir {
		return invalidf("console log %q is not directly under %s", r.ConsoleLog, v.logDir)
	}
	return nil
}

// jailLogLevel parses the firecracker arguments: --api-sock and --log-path with the
// jail's fixed paths (required and optional), --level with a known level.
func jailLogLevel(id string, args []string) (string, *Error) {
	level, sock := "", false
	for i := 0; i < len(args); i += 2 {
		if i+1 >= len(args) {
			return "", invalidf("jail %s: firecracker flag %q has no value", id, args[i])
		}
		flag, val := args[i], args[i+1]
		switch {
		case flag == "--api-sock" && val == jailAPISocket && !sock:
			sock = true
		case flag == "--log-path" && val == jailLogPath:
		case flag == "--level" && level == "" && contains(jailLogLevels(), val):
			level = val
		default:
			return "", invalidf("jail %s: firecracker argument %q %q is not allowed: only --api-sock %s, --log-path %s and --level %s",
				id, flag, val, jailAPISocket, jailLogPath, strings.Join(jailLogLevels(), "|"))
		}
	}
	if !sock {
		return "", invalidf("jail %s: firecracker arguments lack --api-sock %s", id, jailAPISocket)
	}
	return level, nil
}

// jailFileSource resolves one JailFileSpec.Src: a regular file under the root (all
// symlinks resolved, none leaving it), owned by root or the owner; or, for the root
// disk, one of this root's dm snapshots under /dev/mapper, a block device.
func (v validator) jailFileSource(f JailFileSpec) (string, *Error) {
	if name, ok := strings.CutPrefix(f.Src, "/dev/mapper/"); ok {
		n, e := v.checkDMName("src", name)
		if e != nil {
			return "", e
		}
		if n.origin || f.Dst != JailDstRootfs {
			return "", invalidf("src %q: only a VM's snapshot may be placed, and only as the root disk", f.Src)
		}
		real, err := filepath.EvalSymlinks(f.Src)
		if err != nil {
			return "", invalidf("src %q: %v", f.Src, err)
		}
		fi, err := os.Stat(real)
		if err != nil || fi.Mode().Type() != fs.ModeDevice {
			return "", invalidf("src %q is not a block device", f.Src)
		}
		return real, nil
	}
	realRoot, e := v.realRoot()
	if e != nil {
		return "", e
	}
	rel, ok := beneath(v.root, f.Src)
	if !ok {
		if rel, ok = beneath(realRoot, f.Src); !ok {
			return "", invalidf("src %q is not under the banger root %s: the helper places only banger's own files", f.Src, v.root)
		}
	}
	if rel == "." {
		return "", invalidf("src %q is the banger root itself", f.Src)
	}
	real, err := resolveBeneath(realRoot, v.root, rel)
	if err != nil {
		return "", invalidf("src %q: %v", f.Src, err)
	}
	fi, err := os.Lstat(real)
	if err != nil {
		return "", invalidf("src %q: %v", f.Src, err)
	}
	facts := factsOf(fi)
	if !facts.mode.IsRegular() {
		return "", invalidf("src %q is a %s: the helper places only regular files and banger's dm snapshots", f.Src, fileKind(facts.mode))
	}
	if facts.uid != 0 && facts.uid != v.ownerUID {
		return "", invalidf("src %q belongs to uid %d: the helper places only files owned by root or the owner (uid %d)", f.Src, facts.uid, v.ownerUID)
	}
	return real, nil
}

func (v validator) jailSignal(r *JailSignalRequest) *Error {
	if e := checkJailID(r.ID); e != nil {
		return e
	}
	if _, ok := JailSignalByName(r.Signal); !ok {
		return invalidf("signal %q is not allowed: send one of %s", r.Signal, strings.Join(JailSignalNames(), ", "))
	}
	return nil
}

func (v validator) jailRemove(r *JailRemoveRequest) *Error { return checkJailID(r.ID) }
