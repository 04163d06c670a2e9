package cli

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"banger/internal/api"
	"banger/internal/linuxnet"
	"banger/internal/privileged"
	"banger/internal/system"
	"banger/internal/termsafe"
)

func newSystemCmd(env *Env) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "system",
		Short: "Run, stop and inspect banger's helper and daemon",
	}
	cmd.AddCommand(newSystemRunCmd(env), newSystemStopCmd(env), newSystemStatusCmd(env),
		newSystemInstallCmd(env), newSystemUninstallCmd(env), newSystemRestartCmd(env))
	return cmd
}

func newSystemRunCmd(env *Env) *cobra.Command {
	var (
		owner   string
		detach  bool
		timeout time.Duration
	)
	cmd := &cobra.Command{
		Use:   "run",
		Short: "Start the root helper and bangerd without systemd (foreground, or -d detached)",
		Long: `Start banger-helper (as root) and bangerd (as the owner) directly, for hosts and
containers without systemd. In the foreground both stop on Ctrl-C; with -d they keep
running, logging under ROOT/logs, until ` + "`banger system stop`" + `.

Must run as root. bangerd runs as the owner: --owner, else the user who ran sudo,
else the owner recorded by an earlier run. It never runs as root: without any of
these (a root shell, no --owner) the command refuses; pass --owner USER, or run it
via sudo from your account.

Root trusts nothing the owner can write: ROOT must be root's, banger-helper root's
in root's directories, and a symlink, hard link or FIFO the owner planted in
run/, state/ or logs/ is refused, not followed.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			l, err := env.Layout()
			if err != nil {
				return err
			}
			fallback := -1
			if md, err := privileged.ReadTrustedInstallMetadata(l.InstallMetadataPath()); err == nil {
				fallback = md.OwnerUID
			}
			o, err := system.ResolveOwner(owner, fallback)
			if err != nil {
				return err
			}
			return startInstance(cmd, env, o, detach, timeout)
		},
	}
	cmd.Flags().StringVar(&owner, "owner", "", "user (name or uid, never root) bangerd runs as and the helper accepts")
	cmd.Flags().BoolVarP(&detach, "detach", "d", false, "return once both are ready, leaving them running")
	cmd.Flags().DurationVar(&timeout, "start-timeout", 30*time.Second, "how long each process may take to become ready")
	return cmd
}

// startInstance runs `system run` for owner o.
func startInstance(cmd *cobra.Command, env *Env, o system.Owner, detach bool, timeout time.Duration) error {
	l, err := env.Layout()
	if err != nil {
		return err
	}
	helperBin, err := system.FindBinary("banger-helper")
	if err != nil {
		return err
	}
	daemonBin, err := system.FindBinary("bangerd")
	if err != nil {
		return err
	}
	routes, err := linuxnet.New(linuxnet.Options{Root: l.Root})
	if err != nil {
		return fmt.Errorf("open netlink: %w", err)
	}
	defer routes.Close()
	return system.Run(cmd.Context(), system.RunOptions{
		Layout: l, Owner: o, Detach: detach,
		HelperBin: helperBin, DaemonBin: daemonBin,
		Routes: routes, Logger: env.Logger, Out: env.Out, StartTimeout: timeout,
	})
}

func runDetached(cmd *cobra.Command, env *Env, o system.Owner, timeout time.Duration) error {
	return startInstance(cmd, env, o, true, 2*timeout)
}

func newSystemStopCmd(env *Env) *cobra.Command {
	var timeout time.Duration
	cmd := &cobra.Command{
		Use:   "stop",
		Short: "Stop a helper and daemon started with `banger system run -d`",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			l, err := env.Layout()
			if err != nil {
				return err
			}
			return system.Stop(cmd.Context(), l, timeout, env.Out)
		},
	}
	cmd.Flags().DurationVar(&timeout, "timeout", 15*time.Second, "how long to wait for each process before killing it")
	return cmd
}

func newSystemStatusCmd(env *Env) *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "status",
		Short: "Show whether the helper and daemon run, and the state of the host network and DNS",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cl, err := env.Client()
			if err != nil {
				return err
			}
			ctx, cancel := context.WithTimeout(cmd.Context(), 10*time.Second)
			defer cancel()
			st, err := cl.Status(ctx)
			if err != nil {
				if errors.Is(err, api.ErrDaemonDown) && !asJSON {
					fmt.Fprintln(env.Out, "bangerd: not running")
				}
				return err
			}
			if asJSON {
				return writeJSON(env.Out, st)
			}
			printStatus(env, st)
			return nil
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	return cmd
}

// printStatus prints what bangerd reported. bangerd is the owner's, and this may
// run as root: every string it sent is made safe for a terminal first.
func printStatus(env *Env, st api.StatusResponse) {
	st.Version, st.Root, st.Binary = termsafe.String(st.Version), termsafe.String(st.Root), termsafe.String(st.Binary)
	st.Helper.Version, st.Helper.Error = termsafe.String(st.Helper.Version), termsafe.String(st.Helper.Error)
	sn := &st.Network
	sn.Bridge, sn.Address, sn.NFTName = termsafe.String(sn.Bridge), termsafe.String(sn.Address), termsafe.String(sn.NFTName)
	for i, t := range sn.TapPool.IdleTaps {
		sn.TapPool.IdleTaps[i] = termsafe.String(t)
	}
	sd := &st.DNS
	sd.Domain, sd.Listen, sd.ResolverRouting, sd.Hint = termsafe.String(sd.Domain), termsafe.String(sd.Listen), termsafe.String(sd.ResolverRouting), termsafe.String(sd.Hint)
	w := tabwriter.NewWriter(env.Out, 0, 4, 2, ' ', 0)
	defer w.Flush()
	fmt.Fprintf(w, "bangerd\tup %s, pid %d, version %s\n", st.Uptime.Round(time.Second), st.PID, st.Version)
	if st.Helper.Reachable {
		fmt.Fprintf(w, "banger-helper\tup, pid %d, version %s, owner uid %d\n", st.Helper.PID, st.Helper.Version, st.Helper.OwnerUID)
	} else {
		fmt.Fprintf(w, "banger-helper\tNOT REACHABLE: %s\n", st.Helper.Error)
	}
	fmt.Fprintf(w, "root\t%s\n", st.Root)
	if st.Binary != "" {
		fmt.Fprintf(w, "binaries\t%s\n", filepath.Dir(st.Binary))
	}
	n := st.Network
	fmt.Fprintf(w, "bridge\t%s %s (%s)\n", n.Bridge, n.Address, upDown(n.BridgeUp))
	fmt.Fprintf(w, "tap pool\t%d/%d idle%s\n", n.TapPool.Idle, n.TapPool.Size, warming(n.TapPool.Warming))
	fmt.Fprintf(w, "nat\tnftables table %s %s, ip forwarding %s\n", n.NFTName, present(n.NFTTable), onOff(n.IPForward))
	fmt.Fprintf(w, "dns\t*.%s on %s, %d record(s), host routing: %s\n", st.DNS.Domain, st.DNS.Listen, st.DNS.Records, st.DNS.ResolverRouting)
	if st.DNS.Hint != "" {
		fmt.Fprintf(w, "\t%s\n", strings.ReplaceAll(st.DNS.Hint, "\n", "\n\t"))
	}
	fmt.Fprintf(w, "vms\t%d\n", st.VMs)
}

func upDown(b bool) string {
	if b {
		return "up"
	}
	return "DOWN"
}

func onOff(b bool) string {
	if b {
		return "on"
	}
	return "OFF"
}

func present(b bool) string {
	if b {
		return "present"
	}
	return "MISSING"
}

func warming(b bool) string {
	if b {
		return ", warming up"
	}
	return ""
}
