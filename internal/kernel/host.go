package kernel

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"golang.org/x/sys/unix"

	"banger/internal/initramfs"
)

// HostOptions say where to look for the host's kernels. The zero value
// looks in /boot and /lib/modules and prefers the running kernel.
type HostOptions struct {
	BootDir    string // default DefaultBootDir
	ModulesDir string // default initramfs.DefaultModulesDir
	Running    string // the running release; default uname -r
}

// HostKernel is a kernel installed on the host, with its modules.
type HostKernel struct {
	Release    string
	Path       string // BootDir/vmlinuz-RELEASE
	ConfigPath string // BootDir/config-RELEASE, "" if absent
	ModulesDir string // holds RELEASE/modules.dep
}

// FindHostKernel picks the host kernel the QEMU driver boots by default: the
// running one if /boot has it and its modules are installed, else the
// newest /boot/vmlinuz-* whose modules are. The running kernel is missing
// from /boot when banger itself runs in a VM or container.
func FindHostKernel(opts HostOptions) (HostKernel, error) {
	if opts.BootDir == "" {
		opts.BootDir = DefaultBootDir
	}
	if opts.ModulesDir == "" {
		opts.ModulesDir = initramfs.DefaultModulesDir
	}
	if opts.Running == "" {
		var u unix.Utsname
		if err := unix.Uname(&u); err == nil {
			opts.Running = unix.ByteSliceToString(u.Release[:])
		}
	}
	matches, err := filepath.Glob(filepath.Join(opts.BootDir, "vmlinuz-*"))
	if err != nil {
		return HostKernel{}, err
	}
	var best *HostKernel
	var without []string
	for _, p := range matches {
		rel := strings.TrimPrefix(filepath.Base(p), "vmlinuz-")
		if fi, err := os.Stat(p); err != nil || !fi.Mode().IsRegular() {
			continue
		}
		if _, err := os.Stat(filepath.Join(opts.ModulesDir, rel, "modules.dep")); err != nil {
			without = append(without, rel)
			continue
		}
		hk := HostKernel{Release: rel, Path: p, ModulesDir: opts.ModulesDir}
		if c := filepath.Join(opts.BootDir, "config-"+rel); fileExists(c) {
			hk.ConfigPath = c
		}
		if rel == opts.Running {
			best = &hk
			break
		}
		if best == nil || compareReleases(rel, best.Release) > 0 {
			best = &hk
		}
	}
	if best == nil {
		msg := fmt.Sprintf("no kernel in %s has its modules in %s", opts.BootDir, opts.ModulesDir)
		if len(without) > 0 {
			msg += fmt.Sprintf(" (%s have none)", strings.Join(without, ", "))
		}
		return HostKernel{}, fmt.Errorf("%s: install a kernel package (apt-get install linux-image-amd64), or import a kernel with `banger kernel import`", msg)
	}
	// Ubuntu installs kernels readable by root only; the daemon is not root.
	f, err := os.Open(best.Path)
	if err != nil {
		return HostKernel{}, fmt.Errorf("host kernel %s: %w: make it readable by banger's owner (chmod 0644 %s) or import a kernel with `banger kernel import`", best.Path, err, best.Path)
	}
	f.Close()
	return *best, nil
}

func fileExists(p string) bool {
	fi, err := os.Stat(p)
	return err == nil && fi.Mode().IsRegular()
}

// compareReleases orders kernel releases: runs of digits compare as
// numbers, the rest as text ("6.1.0-10" < "6.1.0-9" is false).
func compareReleases(a, b string) int {
	for a != "" && b != "" {
		ca, ra := leadingRun(a)
		cb, rb := leadingRun(b)
		if isDigits(ca) && isDigits(cb) {
			ca, cb = strings.TrimLeft(ca, "0"), strings.TrimLeft(cb, "0")
			if len(ca) != len(cb) {
				return len(ca) - len(cb)
			}
		}
		if c := strings.Compare(ca, cb); c != 0 {
			return c
		}
		a, b = ra, rb
	}
	return len(a) - len(b)
}

func leadingRun(s string) (run, rest string) {
	digit := s[0] >= '0' && s[0] <= '9'
	i := 1
	for i < len(s) && (s[i] >= '0' && s[i] <= '9') == digit {
		i++
	}
	return s[:i], s[i:]
}

func isDigits(s string) bool { return s != "" && s[0] >= '0' && s[0] <= '9' }

// QEMUDefaultRequest asks for the QEMU driver's default kernel.
type QEMUDefaultRequest struct {
	Host HostOptions
	// InitBinary is the static banger-init (cmd/banger-init). Required.
	InitBinary string
	// Dir caches built initramfs files (e.g. KernelsDir()/initramfs).
	Dir string
	// Modules overrides initramfs.DefaultModules().
	Modules []string
}

// QEMUDefault is the host kernel and banger's initramfs for it.
type QEMUDefault struct {
	Kernel    HostKernel
	Initramfs initramfs.Result
	// Report is the QEMU report from the kernel's config; zero if it has none.
	Report Report
}

// DefaultQEMU finds the host kernel (FindHostKernel) and builds, or reuses,
// banger's initramfs for it. A kernel whose config says it lacks something
// the guest needs is refused with the QEMU report.
func DefaultQEMU(ctx context.Context, req QEMUDefaultRequest) (QEMUDefault, error) {
	hk, err := FindHostKernel(req.Host)
	if err != nil {
		return QEMUDefault{}, err
	}
	var d QEMUDefault
	d.Kernel = hk
	if hk.ConfigPath != "" {
		cfg, err := ReadConfigFile(hk.ConfigPath)
		if err != nil {
			return QEMUDefault{}, fmt.Errorf("host kernel %s: %w", hk.Release, err)
		}
		d.Report = CheckQEMU(cfg)
		if !d.Report.Ready {
			return QEMUDefault{}, fmt.Errorf("host kernel %s cannot boot a banger guest: %s", hk.Release, d.Report)
		}
	}
	res, err := initramfs.Build(ctx, initramfs.Options{
		KernelVersion: hk.Release,
		ModulesDir:    hk.ModulesDir,
		Modules:       req.Modules,
		InitBinary:    req.InitBinary,
		OutputDir:     req.Dir,
	})
	if err != nil {
		return QEMUDefault{}, fmt.Errorf("host kernel %s: %w", hk.Release, err)
	}
	d.Initramfs = res
	return d, nil
}
