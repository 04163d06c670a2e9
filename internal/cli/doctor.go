package cli

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"banger/internal/blockdev"
	"banger/internal/config"
	"banger/internal/disk"
	"banger/internal/imageservice"
	"banger/internal/kernel"
	"banger/internal/vmm/qemu"
)

// check is one line of `banger doctor`.
type check struct {
	Area   string `json:"area"`
	OK     bool   `json:"ok"`
	Detail string `json:"detail"`
}

func newDoctorCmd(env *Env) *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "doctor",
		Short: "Say which VMM drivers, disk strategies and tools work on this host, and why not",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx, cancel := context.WithTimeout(cmd.Context(), 20*time.Second)
			defer cancel()
			checks := doctorChecks(ctx, env)
			if asJSON {
				return writeJSON(env.Out, checks)
			}
			w := tabwriter.NewWriter(env.Out, 0, 4, 2, ' ', 0)
			for _, c := range checks {
				mark := "ok"
				if !c.OK {
					mark = "NO"
				}
				fmt.Fprintf(w, "%s\t%s\t%s\n", mark, c.Area, c.Detail)
			}
			return w.Flush()
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	return cmd
}

func doctorChecks(ctx context.Context, env *Env) []check {
	var out []check
	add := func(area string, err error, okDetail string) {
		if err != nil {
			out = append(out, check{area, false, err.Error()})
		} else {
			out = append(out, check{area, true, okDetail})
		}
	}
	cfg := config.Default()
	if l, err := env.Layout(); err == nil {
		if c, err := config.Load(l.ConfigPath()); err == nil {
			cfg = c
		} else {
			add("config", err, "")
		}
	}

	accel := qemu.DetectAccel(qemu.HostPaths{})
	out = append(out, check{"acceleration", accel.Accel == qemu.AccelKVM, string(accel.Accel) + ": " + accel.Reason})
	qd := qemu.New(qemu.Options{Binary: cfg.VMM.QEMU})
	add("driver qemu", qd.Available(ctx), "qemu-system-x86_64 runs ("+string(accel.Accel)+")")
	fcBin, fcErr := exec.LookPath(cfg.VMM.Firecracker)
	switch {
	case fcErr != nil:
		add("driver firecracker", fmt.Errorf("no firecracker binary (%s): install it, or use the qemu driver", cfg.VMM.Firecracker), "")
	case accel.Accel != qemu.AccelKVM:
		add("driver firecracker", fmt.Errorf("firecracker needs KVM: %s", accel.Reason), "")
	default:
		add("driver firecracker", nil, fcBin)
	}

	if hk, err := kernel.FindHostKernel(kernel.HostOptions{}); err != nil {
		add("default kernel", err, "")
	} else {
		add("default kernel", nil, hk.Path+" with modules in "+filepath.Join(hk.ModulesDir, hk.Release))
	}

	// The agent bangerd puts in images sits beside the binaries; a dynamically linked
	// one would fail in every guest.
	if exe, err := os.Executable(); err == nil {
		p := filepath.Join(filepath.Dir(exe), "banger-agent")
		if _, err := imageservice.AgentFromFile(p); err != nil {
			add("guest agent", err, "")
		} else {
			add("guest agent", nil, p+" (static)")
		}
	}

	// Probe the strategies where banger keeps its disks (reflink depends on that
	// filesystem); the dm check only looks for device-mapper, as the helper would.
	dcfg := disk.Config{DisksDir: os.TempDir(), ImagesDir: os.TempDir(), Ops: blockdev.Local{}}
	if l, err := env.Layout(); err == nil {
		if _, err := os.Stat(l.DisksDir()); err == nil {
			dcfg.DisksDir, dcfg.ImagesDir = l.DisksDir(), l.ImagesDir()
		}
	}
	strategies := disk.Strategies(dcfg)
	for _, s := range strategies {
		add("disk "+s.Name(), s.Available(ctx), "available")
	}
	for _, tool := range []string{"mkfs.ext4", "debugfs", "e2fsck", "resize2fs", "qemu-img", "nft", "ssh", "dig"} {
		p, err := exec.LookPath(tool)
		if err != nil {
			if _, serr := os.Stat("/usr/sbin/" + tool); serr == nil {
				p, err = "/usr/sbin/"+tool, nil
			} else {
				err = fmt.Errorf("%s not found: scripts/deps.sh installs it", tool)
			}
		}
		add("tool "+tool, err, p)
	}
	if st, err := os.Stat("/run/systemd/resolve"); err == nil && st.IsDir() {
		add("host names", nil, "systemd-resolved routes the VM domain to banger's DNS")
	} else {
		add("host names", fmt.Errorf("no systemd-resolved: NAME.%s resolves through banger's DNS only (ssh uses banger's ProxyCommand)", cfg.DNS.Domain), "")
	}
	if cl, err := env.Client(); err == nil {
		if v, err := cl.Version(ctx); err != nil {
			add("bangerd", err, "")
		} else {
			add("bangerd", nil, "running, version "+v.Version)
		}
	}
	return out
}
