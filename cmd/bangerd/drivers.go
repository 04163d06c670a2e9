package main

import (
	"context"
	"log/slog"
	"os"
	"os/exec"
	"time"

	"banger/internal/config"
	"banger/internal/layout"
	"banger/internal/privileged"
	"banger/internal/vmm"
	"banger/internal/vmm/firecracker"
	"banger/internal/vmm/firecracker/jailhelper"
	"banger/internal/vmm/qemu"
)

// drivers returns the VMM drivers that can run on this host and the default one:
// the configured driver, or for "auto" Firecracker where it runs, else QEMU.
// A driver that cannot run is logged with its reason (banger doctor shows it too).
func drivers(cfg config.Config, l layout.Layout, helper *privileged.Client, log *slog.Logger) (map[string]vmm.Driver, string) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	qemuBin := cfg.VMM.QEMU
	if p, err := exec.LookPath(qemuBin); err == nil {
		qemuBin = p
	}
	candidates := []vmm.Driver{
		firecracker.NewDriver(firecracker.DriverOptions{Binary: cfg.VMM.Firecracker, Jailer: jailerOptions(cfg, l, helper, log), Logger: log}),
		qemu.New(qemu.Options{Binary: qemuBin, Logger: log}),
	}
	out := map[string]vmm.Driver{}
	for _, d := range candidates {
		if err := d.Available(ctx); err != nil {
			log.Warn("vmm driver unavailable", "driver", d.Name(), "reason", err)
			continue
		}
		out[d.Name()] = d
	}
	def := cfg.VMM.Driver
	if def == "auto" {
		def = "qemu"
		if _, ok := out["firecracker"]; ok {
			def = "firecracker"
		}
	}
	return out, def
}

// jailerOptions runs Firecracker under the jailer (vmm.jailer) when both it and
// Firecracker are installed; the jailer's root-only steps go through banger-helper,
// which builds every jail from its own configuration: the chroot base
// privileged.JailBase and the owner's uid and gid, which are ours. Nil (Firecracker
// runs directly, as the owner) when vmm.jailer is empty or either binary is missing.
func jailerOptions(cfg config.Config, l layout.Layout, helper *privileged.Client, log *slog.Logger) *firecracker.JailerOptions {
	if cfg.VMM.Jailer == "" {
		return nil
	}
	if os.Getuid() == 0 {
		log.Warn("bangerd runs as root: firecracker runs without the jailer, which must switch to an unprivileged owner")
		return nil
	}
	if _, err := exec.LookPath(cfg.VMM.Firecracker); err != nil {
		return nil
	}
	jailer, err := exec.LookPath(cfg.VMM.Jailer)
	if err != nil {
		log.Warn("jailer not found; firecracker runs without it", "jailer", cfg.VMM.Jailer, "err", err)
		return nil
	}
	base := privileged.JailBase(l)
	return &firecracker.JailerOptions{
		Binary:     jailer,
		ChrootBase: base,
		UID:        os.Getuid(),
		GID:        os.Getgid(),
		Ops:        jailhelper.NewClient(helper, base),
	}
}
