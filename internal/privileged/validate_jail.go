package privileged

import (
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
	return v.checkConsoleLog(r.ID, r.ConsoleLog)
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

// jailSource is a validated JailFileSpec.Src: a dm snapshot node (Dev, absolute,
// under root-owned /dev), or a file named by Rel beneath the resolved root Root.
type jailSource struct {
	Dev       string
	Root, Rel string
}

// jailFileSource checks where one JailFileSpec.Src is, by its name alone: the VM's
// own files and nothing else. A file must be under state/disks/<id>/ (the VM's
// disk directory, the only place a writable file may come from) or, read-only,
// under state/images/ or state/kernels/; the root disk may also be this root's dm
// snapshot of this VM (/dev/mapper/<prefix><id>). openJailSource then opens the
// file beneath the root with no symlink followed and checks what it found there
// (an owner-owned regular file with one link): a name outside these directories,
// such as install.json, the audit log or another VM's disk, never gets that far.
func (v validator) jailFileSource(id string, f JailFileSpec) (jailSource, *Error) {
	if name, ok := strings.CutPrefix(f.Src, "/dev/mapper/"); ok {
		n, e := v.checkDMName("src", name)
		if e != nil {
			return jailSource{}, e
		}
		if n.origin || f.Dst != JailDstRootfs || n.vmID != id {
			return jailSource{}, invalidf("src %q: only this VM's (%s) snapshot may be placed, and only as the root disk", f.Src, id)
		}
		real, err := filepath.EvalSymlinks(f.Src)
		if err != nil {
			return jailSource{}, invalidf("src %q: %v", f.Src, err)
		}
		return jailSource{Dev: real}, nil
	}
	realRoot, e := v.realRoot()
	if e != nil {
		return jailSource{}, e
	}
	rel, ok := beneath(v.root, f.Src)
	if !ok {
		if rel, ok = beneath(realRoot, f.Src); !ok {
			return jailSource{}, invalidf("src %q is not under the banger root %s: the helper places only the VM's own files", f.Src, v.root)
		}
	}
	vmDir := filepath.Join(v.disksRel, id) + "/"
	switch {
	case strings.HasPrefix(rel, vmDir) && len(rel) > len(vmDir):
	case f.Writable:
		return jailSource{}, invalidf("src %q: a writable file must be the VM's own, under %s/", f.Src, filepath.Join(v.root, v.disksRel, id))
	case strings.HasPrefix(rel, v.imagesRel+"/") || strings.HasPrefix(rel, v.kernelsRel+"/"):
	default:
		return jailSource{}, invalidf("src %q is not one of the VM's files: the helper places only files under %s/ and, read-only, %s/ or %s/",
			f.Src, filepath.Join(v.root, v.disksRel, id), filepath.Join(v.root, v.imagesRel), filepath.Join(v.root, v.kernelsRel))
	}
	return jailSource{Root: realRoot, Rel: rel}, nil
}

// checkConsoleLog refuses any console log but the VM's own: the file bangerd reads, logs/vms/<short id>.console.log, where the short id is the
// VM id's first 12 characters (vmservice's shortID) or the whole id.
func (v validator) checkConsoleLog(id, p string) *Error {
	if e := checkPathSyntax(p, filepath.Join(v.logDir, "vms")); e != nil {
		return e
	}
	name, ok := strings.CutSuffix(filepath.Base(p), ".console.log")
	if filepath.Dir(p) != filepath.Join(v.logDir, "vms") || !ok || name == "" ||
		!strings.HasPrefix(id, name) || len(name) < min(12, len(id)) {
		return invalidf("console log %q is not this VM's: send %s", p, filepath.Join(v.logDir, "vms", id[:min(12, len(id))]+".console.log"))
	}
	return nil
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
