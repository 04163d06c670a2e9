package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"banger/internal/api"
	"banger/internal/disk"
	"banger/internal/image/progress"
	"banger/internal/termsafe"
	"banger/internal/vmservice"
)

func newVMCmd(env *Env) *cobra.Command {
	cmd := &cobra.Command{
		Use:     "vm",
		Aliases: []string{"vms"},
		Short:   "Create, run and manage microVMs",
	}
	cmd.AddCommand(newVMRunCmd(env), newVMCreateCmd(env), newVMLsCmd(env), newVMInspectCmd(env),
		newVMActionCmd(env, "start", "Start VMs"), newVMStopCmd(env, "stop", "Stop VMs gracefully (killed after --timeout)"),
		newVMStopCmd(env, "restart", "Restart VMs"), newVMActionCmd(env, "kill", "Kill VMs at once"),
		newVMRmCmd(env), newVMLogsCmd(env), newVMWaitCmd(env), newVMExecCmd(env), newVMSSHCmd(env), newVMCpCmd(env),
		newVMSSHProxyCmd(env))
	return cmd
}

// createFlags are shared by create and run.
type createFlags struct {
	name, kernel, driver, memory, disk string
	diskStrategy                       string
	cpus                               int
	env, publish                       []string
}

func (f *createFlags) register(cmd *cobra.Command) {
	cmd.Flags().StringVar(&f.name, "name", "", "VM name, a DNS label (default: generated)")
	cmd.Flags().IntVar(&f.cpus, "cpus", 0, "virtual CPUs (default 1)")
	cmd.Flags().StringVar(&f.memory, "memory", "", "memory, e.g. 512M or 2G (default 512M)")
	cmd.Flags().StringVar(&f.disk, "disk", "", "root disk size, e.g. 10G (default: the image's size)")
	cmd.Flags().StringVar(&f.diskStrategy, "disk-strategy", "", "how the copy-on-write root disk is made: auto, dm-snapshot, reflink, qcow2 or copy (default: [disk] strategy in config.toml, else auto)")
	cmd.Flags().StringVar(&f.kernel, "kernel", "", "kernel name or id (default: the host's kernel with banger's initramfs)")
	cmd.Flags().StringVar(&f.driver, "driver", "", "VMM driver: firecracker or qemu (default: the configured one)")
	cmd.Flags().StringArrayVarP(&f.env, "env", "e", nil, "KEY=VALUE for commands run in the VM (repeatable)")
	cmd.Flags().StringArrayVarP(&f.publish, "publish", "p", nil, "publish a guest TCP port: [IP:]HOST:GUEST (repeatable)")
}

func (f *createFlags) request(image string) (api.VMCreateRequest, error) {
	req := api.VMCreateRequest{Name: f.name, Image: image, Kernel: f.kernel, Driver: f.driver, CPUs: f.cpus, Env: f.env, Publish: f.publish, DiskStrategy: f.diskStrategy}
	if f.memory != "" {
		m, err := vmservice.ParseMemory(f.memory)
		if err != nil {
			return req, usageError(fmt.Errorf("--memory: %w", err))
		}
		req.MemoryMiB = m
	}
	if f.disk != "" {
		d, err := disk.ParseSize(f.disk)
		if err != nil {
			return req, usageError(fmt.Errorf("--disk: %w", err))
		}
		req.DiskBytes = d
	}
	return req, nil
}

func newVMCreateCmd(env *Env) *cobra.Command {
	var f createFlags
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "create [flags] IMAGE",
		Short: "Create a VM (its disk, address and name) without starting it",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			cl, err := env.Client()
			if err != nil {
				return err
			}
			req, err := f.request(args[0])
			if err != nil {
				return err
			}
			vm, err := cl.CreateVM(cmd.Context(), req)
			if err != nil {
				return err
			}
			if asJSON {
				return writeJSON(env.Out, vm)
			}
			fmt.Fprintf(env.Out, "%s  %s  %s\n", vm.Name, vm.IP, vm.State)
			return nil
		},
	}
	f.register(cmd)
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	return cmd
}

func newVMRunCmd(env *Env) *cobra.Command {
	var (
		f                  createFlags
		asJSON, ssh, times bool
		rm                 bool
	)
	cmd := &cobra.Command{
		Use:   "run [flags] IMAGE [-- CMD...]",
		Short: "Create and start a VM, wait until it is ready, then run CMD or ssh in if asked",
		Example: `  banger vm run --name dev debian
  banger vm run --name web -p 8080:80 debian
  banger vm run debian -- uname -a
  banger vm run --ssh --name dev debian`,
		Args: cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			cl, err := env.Client()
			if err != nil {
				return err
			}
			image, command := args[0], args[1:]
			if n := cmd.ArgsLenAtDash(); n >= 0 {
				if n != 1 {
					return usageError(errors.New("vm run takes one IMAGE before --"))
				}
			} else if len(command) > 0 {
				return usageError(fmt.Errorf("put the command after --: banger vm run %s -- %s", image, strings.Join(command, " ")))
			}
			req, err := f.request(image)
			if err != nil {
				return err
			}
			req.Start = true
			stop := spinner(env, "starting VM")
			vm, err := cl.CreateVM(cmd.Context(), req)
			stop()
			if err != nil {
				return err
			}
			if asJSON {
				if err := writeJSON(env.Out, vm); err != nil {
					return err
				}
			} else {
				fmt.Fprintf(env.Err, "%s is running at %s (%s) in %s\n", vm.Name, vm.IP, vm.DNSName, durationOf(vm.Timings))
			}
			if times {
				printTimings(env.Err, vm.Timings)
			}
			code := 0
			switch {
			case len(command) > 0:
				st, err := runExec(cmd.Context(), cl, vm.Name, execOptions{Argv: command, Out: env.Out, ErrOut: env.Err})
				if err != nil {
					return err
				}
				code = st.Code
			case ssh:
				code, err = sshInto(cmd.Context(), env, vm.Name, nil)
				if err != nil {
					return err
				}
			}
			if rm {
				if _, err := cl.RemoveVM(context.WithoutCancel(cmd.Context()), vm.Name, true); err != nil {
					return err
				}
			}
			if code != 0 {
				return commandExit(code, "")
			}
			return nil
		},
	}
	f.register(cmd)
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the VM as JSON")
	cmd.Flags().BoolVar(&ssh, "ssh", false, "ssh into the VM once it is ready")
	cmd.Flags().BoolVar(&times, "timings", false, "print where start-up time went")
	cmd.Flags().BoolVar(&rm, "rm", false, "remove the VM when the command or ssh session ends")
	return cmd
}

// spinner shows that a long step is under way on a terminal; returns its stop.
func spinner(env *Env, what string) func() {
	if !isTerminal(env.Err) {
		return func() {}
	}
	done := make(chan struct{})
	finished := make(chan struct{})
	go func() {
		defer close(finished)
		start := time.Now()
		frames := `|/-\`
		for i := 0; ; i++ {
			fmt.Fprintf(env.Err, "\r%c %s %.1fs", frames[i%4], what, time.Since(start).Seconds())
			select {
			case <-done:
				fmt.Fprint(env.Err, "\r\033[K")
				return
			case <-time.After(100 * time.Millisecond):
			}
		}
	}()
	return func() { close(done); <-finished }
}

func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	st, err := f.Stat()
	return err == nil && st.Mode()&os.ModeCharDevice != 0
}

func durationOf(t *api.Timings) string {
	if t == nil {
		return "?"
	}
	return t.Total.Round(time.Millisecond).String()
}

func printTimings(w io.Writer, t *api.Timings) {
	if t == nil {
		fmt.Fprintln(w, "no start-up timings recorded")
		return
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	ms := func(d time.Duration) string { return fmt.Sprintf("%8.1f ms", float64(d)/1e6) }
	fmt.Fprintf(tw, "  host setup\t%s\t(tap %.1f, nat %.1f, disk %.1f ms)\n", ms(t.HostSetup), float64(t.Tap)/1e6, float64(t.NAT)/1e6, float64(t.Disk)/1e6)
	fmt.Fprintf(tw, "  vmm launch\t%s\t\n", ms(t.VMMLaunch))
	fmt.Fprintf(tw, "  kernel → agent ready\t%s\t\n", ms(t.AgentReady))
	fmt.Fprintf(tw, "  agent → ssh ready\t%s\t\n", ms(t.SSHReady))
	fmt.Fprintf(tw, "  total\t%s\t\n", ms(t.Total))
	tw.Flush()
}

func newVMLsCmd(env *Env) *cobra.Command {
	cmd := newListCmd(env, listing[api.VM]{
		short:  "List VMs",
		fetch:  (*api.Client).VMs,
		id:     func(v api.VM) string { return v.Name },
		header: "NAME\tSTATE\tIP\tCPUS\tMEMORY\tDRIVER\tIMAGE\tCREATED",
		row: func(v api.VM) string {
			return fmt.Sprintf("%s\t%s\t%s\t%d\t%dM\t%s\t%s\t%s", v.Name, v.State, orNone(v.IP), v.CPUs, v.MemoryMiB, v.Driver, imageLabel(v), ago(v.CreatedAt))
		},
	})
	cmd.Aliases = append(cmd.Aliases, "ps")
	return cmd
}

func newVMInspectCmd(env *Env) *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "inspect NAME",
		Short: "Show a VM: resources, address, disk strategy, runtime and start-up timings",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			cl, err := env.Client()
			if err != nil {
				return err
			}
			v, err := cl.VM(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			if asJSON {
				return writeJSON(env.Out, v)
			}
			w := tabwriter.NewWriter(env.Out, 0, 4, 2, ' ', 0)
			fmt.Fprintf(w, "name\t%s\nid\t%s\nstate\t%s\naddress\t%s (%s)\n", v.Name, v.ID, v.State, orNone(v.IP), v.DNSName)
			image := v.Image
			if v.ImageName != "" {
				image = v.ImageName + " (" + v.Image + ")"
			}
			fmt.Fprintf(w, "resources\t%d cpu, %d MiB\ndriver\t%s\nimage\t%s\nkernel\t%s\n", v.CPUs, v.MemoryMiB, v.Driver, image, v.Kernel)
			fmt.Fprintf(w, "disk\t%s, %s %s, %s\n", v.Disk.Strategy, v.Disk.Format, progress.HumanBytes(v.Disk.SizeBytes), v.Disk.Path)
			if v.Disk.Note != "" {
				fmt.Fprintf(w, "disk note\t%s\n", v.Disk.Note)
			}
			if len(v.Published) > 0 {
				fmt.Fprintf(w, "published\t%s\n", strings.Join(v.Published, ", "))
			} else if len(v.Publish) > 0 {
				fmt.Fprintf(w, "published\t%s\n", strings.Join(v.Publish, ", "))
			}
			if len(v.Env) > 0 {
				fmt.Fprintf(w, "env\t%s\n", strings.Join(v.Env, " "))
			}
			if v.PID != 0 {
				fmt.Fprintf(w, "vmm pid\t%d\ntap\t%s\nvsock cid\t%d\nagent socket\t%s\n", v.PID, v.Tap, v.VsockCID, v.AgentSocket)
			}
			fmt.Fprintf(w, "console log\t%s\n", v.ConsoleLog)
			if v.StartError != "" {
				fmt.Fprintf(w, "last start error\t%s\n", strings.ReplaceAll(v.StartError, "\n", "\n\t"))
			}
			w.Flush()
			if v.Timings != nil {
				fmt.Fprintln(env.Out, "start-up timings:")
				printTimings(env.Out, v.Timings)
			}
			return nil
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	return cmd
}

// imageLabel names a VM's image by its tag, or by its short ID when it has none.
func imageLabel(v api.VM) string {
	if v.ImageName != "" {
		return v.ImageName
	}
	return shortID(v.Image)
}

// forEach runs fn on each named VM, reporting failures and continuing; action is
// the verb ("stop"), printed in the past tense for each success.
func forEach(env *Env, names []string, fn func(name string) (api.VM, error), action string) error {
	b := newBatch(env.Err, names, "VMs", action)
	for _, n := range names {
		v, err := fn(n)
		if err != nil {
			b.fail(n, err)
			continue
		}
		fmt.Fprintf(env.Out, "%s %s\n", v.Name, pastTense(action))
	}
	return b.err()
}

func newVMActionCmd(env *Env, action, short string) *cobra.Command {
	return &cobra.Command{
		Use:   action + " NAME...",
		Short: short,
		Args:  cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			cl, err := env.Client()
			if err != nil {
				return err
			}
			return forEach(env, args, func(n string) (api.VM, error) { return cl.VMAction(cmd.Context(), n, action, nil) }, action)
		},
	}
}

func newVMStopCmd(env *Env, action, short string) *cobra.Command {
	var timeout time.Duration
	cmd := &cobra.Command{
		Use:   action + " NAME...",
		Short: short,
		Args:  cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			cl, err := env.Client()
			if err != nil {
				return err
			}
			return forEach(env, args, func(n string) (api.VM, error) {
				return cl.VMAction(cmd.Context(), n, action, &api.VMStopRequest{Timeout: timeout})
			}, action)
		},
	}
	cmd.Flags().DurationVar(&timeout, "timeout", 30*time.Second, "how long the guest may take to shut down before it is killed")
	return cmd
}

func pastTense(action string) string {
	switch action {
	case "stop":
		return "stopped"
	case "kill":
		return "killed"
	case "start":
		return "started"
	case "restart":
		return "restarted"
	case "remove":
		return "removed"
	}
	return action
}

func newVMRmCmd(env *Env) *cobra.Command {
	var force bool
	cmd := &cobra.Command{
		Use:     "rm NAME...",
		Aliases: []string{"remove", "delete"},
		Short:   "Remove VMs and everything they hold (-f: even running ones)",
		Args:    cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			cl, err := env.Client()
			if err != nil {
				return err
			}
			return forEach(env, args, func(n string) (api.VM, error) { return cl.RemoveVM(cmd.Context(), n, force) }, "remove")
		},
	}
	cmd.Flags().BoolVarP(&force, "force", "f", false, "kill and remove running VMs")
	return cmd
}

func newVMLogsCmd(env *Env) *cobra.Command {
	var follow, raw bool
	cmd := &cobra.Command{
		Use:   "logs NAME",
		Short: "Print a VM's serial console (-f follows it)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			cl, err := env.Client()
			if err != nil {
				return err
			}
			resp, err := cl.Logs(cmd.Context(), args[0], follow)
			if err != nil {
				return err
			}
			defer resp.Body.Close()
			// The console is the guest's text: a guest could otherwise drive the
			// owner's terminal (set its title, write its clipboard, redraw what
			// was shown). --raw is for a file or a pipe.
			out := env.Out
			if !raw {
				tw := termsafe.NewWriter(env.Out)
				defer tw.Close()
				out = tw
			}
			_, err = io.Copy(out, resp.Body)
			if cmd.Context().Err() != nil {
				return nil // ^C while following
			}
			return err
		},
	}
	cmd.Flags().BoolVarP(&follow, "follow", "f", false, "keep printing as the console writes")
	cmd.Flags().BoolVar(&raw, "raw", false, "print the bytes as the guest wrote them, escape sequences included (default: control characters shown as ^[ and the like)")
	return cmd
}

func newVMWaitCmd(env *Env) *cobra.Command {
	var timeout time.Duration
	cmd := &cobra.Command{
		Use:   "wait NAME",
		Short: "Wait until a VM's agent is ready",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			cl, err := env.Client()
			if err != nil {
				return err
			}
			ctx, cancel := context.WithTimeout(cmd.Context(), timeout+5*time.Second)
			defer cancel()
			v, err := cl.WaitVM(ctx, args[0], timeout)
			if err != nil {
				return err
			}
			fmt.Fprintf(env.Out, "%s ready at %s\n", v.Name, v.IP)
			return nil
		},
	}
	cmd.Flags().DurationVar(&timeout, "timeout", 5*time.Minute, "how long to wait")
	return cmd
}

func newVMExecCmd(env *Env) *cobra.Command {
	var (
		tty, interactive bool
		user, dir        string
		envs             []string
	)
	cmd := &cobra.Command{
		Use:   "exec [flags] NAME -- CMD [ARGS...]",
		Short: "Run a command in a VM through its agent; exits with the command's code",
		Args:  cobra.MinimumNArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			cl, err := env.Client()
			if err != nil {
				return err
			}
			st, err := runExec(cmd.Context(), cl, args[0], execOptions{
				Argv: args[1:], Env: envs, Dir: dir, User: user, TTY: tty, Stdin: interactive || tty,
				Out: env.Out, ErrOut: env.Err, In: os.Stdin,
			})
			if err != nil {
				return err
			}
			if st.Code != 0 {
				return commandExit(st.Code, st.Signal)
			}
			return nil
		},
	}
	cmd.Flags().BoolVarP(&tty, "tty", "t", false, "run on a pty (interactive programs)")
	cmd.Flags().BoolVarP(&interactive, "interactive", "i", false, "pass stdin to the command")
	cmd.Flags().StringVarP(&user, "user", "u", "", "run as this guest user (default root)")
	cmd.Flags().StringVarP(&dir, "workdir", "w", "", "working directory in the guest")
	cmd.Flags().StringArrayVarP(&envs, "env", "e", nil, "KEY=VALUE (repeatable)")
	return cmd
}

func newVMSSHCmd(env *Env) *cobra.Command {
	return &cobra.Command{
		Use:   "ssh NAME [-- CMD...]",
		Short: "ssh into a VM with banger's key and known_hosts (real OpenSSH)",
		Args:  cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			code, err := sshInto(cmd.Context(), env, args[0], args[1:])
			if err != nil {
				return err
			}
			if code != 0 {
				return commandExit(code, "")
			}
			return nil
		},
	}
}

// sshInto runs the real ssh with banger's ssh_config.
func sshInto(ctx context.Context, env *Env, name string, command []string) (int, error) {
	l, err := env.Layout()
	if err != nil {
		return 0, err
	}
	cl, err := env.Client()
	if err != nil {
		return 0, err
	}
	v, err := cl.VM(ctx, name)
	if err != nil {
		return 0, err
	}
	cfg, err := sshConfigPath(l)
	if err != nil {
		return 0, err
	}
	args := append([]string{"-F", cfg, v.DNSName}, command...)
	c := exec.CommandContext(ctx, "ssh", args...)
	c.Stdin, c.Stdout, c.Stderr = os.Stdin, env.Out, env.Err
	err = c.Run()
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		return ee.ExitCode(), nil
	}
	return 0, err
}

func newVMCpCmd(env *Env) *cobra.Command {
	return &cobra.Command{
		Use:   "cp SRC DST",
		Short: "Copy files between the host and a VM (NAME:/path names the guest side)",
		Example: `  banger vm cp ./app dev:/opt/          # into /opt
  banger vm cp ./app.conf dev:/etc/app.conf
  banger vm cp dev:/var/log/syslog ./`,
		Args: cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			cl, err := env.Client()
			if err != nil {
				return err
			}
			srcVM, srcPath, srcRemote := splitVMPath(args[0])
			dstVM, dstPath, dstRemote := splitVMPath(args[1])
			switch {
			case srcRemote && !dstRemote:
				return copyFrom(cmd.Context(), cl, srcVM, srcPath, args[1])
			case !srcRemote && dstRemote:
				return copyTo(cmd.Context(), cl, args[0], dstVM, dstPath)
			default:
				return usageError(errors.New("vm cp copies between the host and one VM: exactly one of SRC and DST must be NAME:/path"))
			}
		},
	}
}
