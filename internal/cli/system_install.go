package cli

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"time"

	"github.com/spf13/cobra"

	"banger/internal/api"
	"banger/internal/layout"
	"banger/internal/linuxnet"
	"banger/internal/privileged"
	"banger/internal/system"
	"banger/internal/termsafe"
)

func newSystemInstallCmd(env *Env) *cobra.Command {
	var (
		owner, unitDir, binDir string
		noStart                bool
	)
	cmd := &cobra.Command{
		Use:   "install",
		Short: "Install banger-helper and bangerd as systemd services",
		Long: `Copy the binaries to --bin-dir, prepare the root for the owner, record the owner in
ROOT/install.json and write two hardened units (banger-helper as root, bangerd as the
owner). Where systemd runs, enable and start them. Run as root.

bangerd never runs as root: the owner is --owner, else the user who ran sudo;
root is refused.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			l, err := env.Layout()
			if err != nil {
				return err
			}
			o, err := system.ResolveOwner(owner, -1)
			if err != nil {
				return err
			}
			self, err := os.Executable()
			if err != nil {
				return err
			}
			return system.Install(cmd.Context(), system.InstallOptions{
				Layout: l, Owner: o, UnitDir: unitDir, BinDir: binDir, SrcDir: filepath.Dir(self), Start: !noStart, Out: env.Out,
			})
		},
	}
	cmd.Flags().StringVar(&owner, "owner", "", "user (name or uid, never root) bangerd runs as (default: the user who ran sudo)")
	cmd.Flags().StringVar(&unitDir, "unit-dir", "/etc/systemd/system", "where to write the units")
	cmd.Flags().StringVar(&binDir, "bin-dir", "/usr/local/bin", "where to install the binaries")
	cmd.Flags().BoolVar(&noStart, "no-start", false, "write the units but do not enable or start them")
	return cmd
}

func newSystemUninstallCmd(env *Env) *cobra.Command {
	var (
		unitDir string
		purge   bool
	)
	cmd := &cobra.Command{
		Use:   "uninstall",
		Short: "Stop banger and remove its units, bridge, taps and nftables table (--purge: also its root)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			l, err := env.Layout()
			if err != nil {
				return err
			}
			// Root deletes the bridge config.toml names: only root's config counts.
			cfg, err := system.LoadConfig(l)
			if err != nil {
				return err
			}
			n, err := linuxnet.New(linuxnet.Options{Root: l.Root})
			if err != nil {
				return err
			}
			defer n.Close()
			scope := privileged.TapScope{Bridge: cfg.Network.Bridge, OwnerUID: -1}
			if md, err := privileged.ReadTrustedInstallMetadata(l.InstallMetadataPath()); err == nil {
				scope.OwnerUID = md.OwnerUID
			}
			if err := settleVMs(cmd.Context(), env, l, purge); err != nil {
				return err
			}
			return system.Uninstall(cmd.Context(), system.UninstallOptions{
				Layout: l, UnitDir: unitDir, Network: n, Scope: scope, Purge: purge, Out: env.Out,
			})
		},
	}
	cmd.Flags().StringVar(&unitDir, "unit-dir", "/etc/systemd/system", "where the units were written")
	cmd.Flags().BoolVar(&purge, "purge", false, "also delete the root: store, images, disks, logs")
	return cmd
}

func newSystemRestartCmd(env *Env) *cobra.Command {
	var timeout time.Duration
	cmd := &cobra.Command{
		Use:   "restart",
		Short: "Restart banger-helper and bangerd (VMs keep running)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			l, err := env.Layout()
			if err != nil {
				return err
			}
			if system.SystemdRunning() {
				out, err := exec.CommandContext(cmd.Context(), "systemctl", "restart", system.HelperUnit, system.DaemonUnit).CombinedOutput()
				if err != nil {
					return fmt.Errorf("systemctl restart: %w: %s", err, out)
				}
				fmt.Fprintln(env.Out, "restarted")
				return nil
			}
			md, err := privileged.ReadTrustedInstallMetadata(l.InstallMetadataPath())
			if err != nil {
				return fmt.Errorf("no install metadata under %s (%w): start banger with `banger system run -d --owner USER` first", l.Root, err)
			}
			// The recorded owner, not whoever ran sudo: a restart keeps the instance as it was.
			o, err := system.ResolveOwner(strconv.Itoa(md.OwnerUID), -1)
			if err != nil {
				return err
			}
			if err := system.Stop(cmd.Context(), l, timeout, env.Out); err != nil {
				return err
			}
			return runDetached(cmd, env, o, timeout)
		},
	}
	cmd.Flags().DurationVar(&timeout, "timeout", 15*time.Second, "how long to wait for each process to stop before killing it")
	return cmd
}

// settleVMs stops every running VM through bangerd (removes every VM, with --purge)
// before uninstall takes their network away: a VMM left running would keep a tap
// that is gone and, after --purge, a disk that is gone. With bangerd down there is
// no one to ask; uninstall goes on and says so.
func settleVMs(ctx context.Context, env *Env, l layout.Layout, purge bool) error {
	cl := api.NewClient(l.DaemonSocket())
	vms, err := cl.VMs(ctx)
	if isDaemonDown(err) {
		fmt.Fprintln(env.Err, "banger: bangerd is not running, so running VMs (if any) are not stopped: their VMMs keep running without network")
		return nil
	}
	if err != nil {
		return fmt.Errorf("list VMs before uninstalling: %w", err)
	}
	var names []string
	for _, v := range vms {
		if purge || v.State == "running" {
			names = append(names, v.Name)
		}
	}
	verb, past := "stop", "stopped"
	if purge {
		verb, past = "remove", "removed"
	}
	b := newBatch(env.Err, names, "VMs", verb)
	for _, n := range names {
		var err error
		if purge {
			_, err = cl.RemoveVM(ctx, n, true)
		} else {
			_, err = cl.VMAction(ctx, n, "stop", nil)
		}
		if err != nil {
			b.fail(n, err)
			continue
		}
		fmt.Fprintf(env.Out, "%s %s\n", termsafe.String(n), past)
	}
	if err := b.err(); err != nil {
		return fmt.Errorf("%w: nothing was uninstalled; fix or remove those VMs and run uninstall again", err)
	}
	return nil
}
