package main

import (
	"context"
	"log/slog"
	"os/exec"
	"time"

	"banger/internal/config"
	"banger/internal/vmm"
	"banger/internal/vmm/firecracker"
	"banger/internal/vmm/qemu"
)

// drivers returns the VMM drivers that can run on this host and the default one:
// the configured driver, or for "auto" Firecracker where it runs, else QEMU.
// A driver that cannot run is logged with its reason (banger doctor shows it too).
func drivers(cfg config.Config, log *slog.Logger) (map[string]vmm.Driver, string) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	qemuBin := cfg.VMM.QEMU
	if p, err := exec.LookPath(qemuBin); err == nil {
		qemuBin = p
	}
	// Firecracker runs directly, as the owner: the jailer (cfg.VMM.Jailer)
	// needs root for its steps, which banger-helper does not offer yet
	// (see firecracker.JailOps).
	candidates := []vmm.Driver{
		firecracker.NewDriver(firecracker.DriverOptions{Binary: cfg.VMM.Firecracker, Logger: log}),
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
