package cli

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"time"

	"github.com/spf13/cobra"

	"banger/internal/linuxnet"
	"banger/internal/privileged"
	"banger/internal/system"
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
