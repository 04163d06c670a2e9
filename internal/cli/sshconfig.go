package cli

import (
	"fmt"
	"net"
	"os"
	"strings"

	"github.com/spf13/cobra"

	"banger/internal/layout"
	"banger/internal/sshkeys"
)

// sshPaths are banger's SSH files for this root and the calling user.
func sshPaths(l layout.Layout) sshkeys.Paths {
	home, _ := os.UserHomeDir()
	return sshkeys.PathsFor(l, home)
}

func sshConfigPath(l layout.Layout) (string, error) {
	p := sshPaths(l).SSHConfig
	if _, err := os.Stat(p); err != nil {
		return "", fmt.Errorf("banger's ssh_config %s is missing (%w): is bangerd running for this root?", p, err)
	}
	return p, nil
}

func newSSHConfigCmd(env *Env) *cobra.Command {
	var install, uninstall bool
	cmd := &cobra.Command{
		Use:   "ssh-config",
		Short: "Print banger's ssh_config, or include it from ~/.ssh/config (--install) so plain `ssh NAME.vm` works",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			l, err := env.Layout()
			if err != nil {
				return err
			}
			p := sshPaths(l)
			switch {
			case install && uninstall:
				return usageError(fmt.Errorf("--install and --uninstall exclude each other"))
			case install:
				if _, err := os.Stat(p.SSHConfig); err != nil {
					return fmt.Errorf("banger's ssh_config %s is missing: start bangerd first (banger system run)", p.SSHConfig)
				}
				ch, err := sshkeys.InstallInclude(p.UserConfig, p.SSHConfig)
				if err != nil {
					return err
				}
				fmt.Fprintln(env.Out, ch.String())
				return nil
			case uninstall:
				ch, err := sshkeys.UninstallInclude(p.UserConfig, p.SSHConfig)
				if err != nil {
					return err
				}
				fmt.Fprintln(env.Out, ch.String())
				return nil
			}
			b, err := os.ReadFile(p.SSHConfig)
			if err != nil {
				return fmt.Errorf("banger's ssh_config: %w: start bangerd first (banger system run)", err)
			}
			_, err = env.Out.Write(b)
			return err
		},
	}
	cmd.Flags().BoolVar(&install, "install", false, "add `Include <banger ssh_config>` at the top of ~/.ssh/config")
	cmd.Flags().BoolVar(&uninstall, "uninstall", false, "remove that Include line")
	return cmd
}

// newVMSSHProxyCmd is the ProxyCommand banger's ssh_config uses for NAME.vm when
// the host cannot resolve it: ask bangerd for the VM's address and pipe stdio to
// its port.
func newVMSSHProxyCmd(env *Env) *cobra.Command {
	return &cobra.Command{
		Use:    "ssh-proxy HOST PORT",
		Short:  "Connect stdin/stdout to a VM's TCP port (ssh ProxyCommand)",
		Hidden: true,
		Args:   cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			cl, err := env.Client()
			if err != nil {
				return err
			}
			host := args[0]
			if ip := net.ParseIP(host); ip == nil {
				name, _, _ := strings.Cut(host, ".")
				v, err := cl.VM(cmd.Context(), name)
				if err != nil {
					return err
				}
				if v.IP == "" {
					return fmt.Errorf("vm %s has no address", name)
				}
				host = v.IP
			}
			return sshkeys.Proxy(cmd.Context(), net.JoinHostPort(host, args[1]), os.Stdin, os.Stdout)
		},
	}
}
