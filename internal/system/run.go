package system

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"banger/internal/api"
	"banger/internal/buildinfo"
	"banger/internal/config"
	"banger/internal/layout"
	"banger/internal/privileged"
)

// RouteLister reads the host's routes for the bridge CIDR overlap check.
type RouteLister interface {
	Routes(ctx context.Context) ([]config.Route, error)
}

// RunOptions configures Run. Every field is explicit: Run reads no globals.
type RunOptions struct {
	Layout layout.Layout
	Owner  Owner
	// Detach returns once both processes are ready, leaving them running in their own
	// sessions with logs under Layout.LogDir; otherwise Run stays in the foreground
	// until SIGINT/SIGTERM or a process exits, then stops both.
	Detach bool
	// HelperBin and DaemonBin are the binaries to start.
	HelperBin, DaemonBin string
	Routes               RouteLister
	Logger               *slog.Logger
	// Out gets the human progress lines.
	Out io.Writer
	// StartTimeout bounds how long each process may take to become ready.
	StartTimeout time.Duration
}

// FindBinary looks for name next to the running executable, then in PATH.
func FindBinary(name string) (string, error) {
	if self, err := os.Executable(); err == nil {
		p := filepath.Join(filepath.Dir(self), name)
		if st, err := os.Stat(p); err == nil && !st.IsDir() {
			return p, nil
		}
	}
	p, err := exec.LookPath(name)
	if err != nil {
		return "", fmt.Errorf("%s not found next to banger or in PATH: build it (make build) and keep it beside the banger binary", name)
	}
	return p, nil
}

// Run starts the root helper (as root) and bangerd (as the owner). A failed start
// stops whatever it started and leaves no socket or pid file behind.
func Run(ctx context.Context, o RunOptions) (err error) {
	if os.Geteuid() != 0 {
		return errors.New("banger system run starts the root helper, so it must run as root: sudo banger system run --owner $USER")
	}
	if o.StartTimeout == 0 {
		o.StartTimeout = 30 * time.Second
	}
	l := o.Layout
	cfg, err := config.Load(l.ConfigPath())
	if err != nil {
		return err
	}
	if o.Routes != nil {
		routes, err := o.Routes.Routes(ctx)
		if err != nil {
			return fmt.Errorf("read host routes for the bridge overlap check: %w", err)
		}
		if err := cfg.CheckOverlap(routes); err != nil {
			return err
		}
	}
	if pid, ok := running(l); ok {
		return fmt.Errorf("banger is already running under %s (pid %d): stop it with `banger system stop --root %s` first", l.Root, pid, l.Root)
	}
	if err := l.Create(o.Owner.UID, o.Owner.GID); err != nil {
		return err
	}
	md := privileged.InstallMetadata{OwnerUID: o.Owner.UID, OwnerGID: o.Owner.GID, Version: buildinfo.Get(), Root: l.Root, Created: time.Now().UTC()}
	if err := privileged.WriteInstallMetadata(l.InstallMetadataPath(), md); err != nil {
		return err
	}

	var started []*proc
	defer func() {
		if err != nil {
			for i := len(started) - 1; i >= 0; i-- {
				started[i].stop(10 * time.Second)
			}
			cleanupRuntime(l)
		}
	}()

	helper, err := startProc(ctx, procSpec{
		name: "banger-helper", bin: o.HelperBin, log: l.HelperLog(), detach: o.Detach,
		args: []string{"--root", l.Root, "--owner-uid", strconv.Itoa(o.Owner.UID), "--owner-gid", strconv.Itoa(o.Owner.GID)},
	})
	if err != nil {
		return err
	}
	started = append(started, helper)
	if err := helper.waitReady(ctx, o.StartTimeout, func(ctx context.Context) error { return dialUnix(ctx, l.HelperSocket()) }); err != nil {
		return err
	}
	fmt.Fprintf(o.Out, "banger-helper ready (pid %d, socket %s)\n", helper.cmd.Process.Pid, l.HelperSocket())

	daemon, err := startProc(ctx, procSpec{
		name: "bangerd", bin: o.DaemonBin, log: l.DaemonLog(), detach: o.Detach, owner: &o.Owner,
		args: []string{"--root", l.Root},
	})
	if err != nil {
		return err
	}
	started = append(started, daemon)
	cl := api.NewClient(l.DaemonSocket())
	if err := daemon.waitReady(ctx, o.StartTimeout, func(ctx context.Context) error { _, err := cl.Version(ctx); return err }); err != nil {
		return err
	}
	fmt.Fprintf(o.Out, "bangerd ready (pid %d, user %s, socket %s)\n", daemon.cmd.Process.Pid, o.Owner.Name, l.DaemonSocket())

	if err := writePID(l.HelperPIDFile(), helper.cmd.Process.Pid); err != nil {
		return err
	}
	if err := writePID(l.DaemonPIDFile(), daemon.cmd.Process.Pid); err != nil {
		return err
	}
	if o.Detach {
		fmt.Fprintf(o.Out, "running detached; logs in %s; stop with `banger system stop --root %s`\n", l.LogDir, l.Root)
		return nil
	}

	// Foreground: stop both on a signal or when either exits.
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM)
	defer signal.Stop(sigs)
	select {
	case s := <-sigs:
		o.Logger.Info("stopping", "signal", s.String())
	case <-helper.exited:
		o.Logger.Error("banger-helper exited; stopping bangerd", "err", helper.exitErr)
	case <-daemon.exited:
		o.Logger.Error("bangerd exited; stopping banger-helper", "err", daemon.exitErr)
	case <-ctx.Done():
	}
	daemon.stop(15 * time.Second)
	helper.stop(10 * time.Second)
	cleanupRuntime(l)
	return nil
}

// Stop ends a detached instance: SIGTERM to bangerd, then to the helper, each waited
// for and killed after timeout; then removes pid files and stale sockets.
func Stop(ctx context.Context, l layout.Layout, timeout time.Duration, out io.Writer) error {
	stopped := 0
	for _, f := range []struct{ name, pidfile string }{{"bangerd", l.DaemonPIDFile()}, {"banger-helper", l.HelperPIDFile()}} {
		pid, err := readPID(f.pidfile)
		if err != nil {
			continue
		}
		if err := terminate(ctx, pid, timeout); err != nil {
			return fmt.Errorf("stop %s (pid %d): %w", f.name, pid, err)
		}
		fmt.Fprintf(out, "%s stopped (pid %d)\n", f.name, pid)
		stopped++
	}
	cleanupRuntime(l)
	if stopped == 0 {
		fmt.Fprintf(out, "banger is not running under %s\n", l.Root)
	}
	return nil
}

// running reports a live daemon or helper recorded in the pid files.
func running(l layout.Layout) (int, bool) {
	for _, f := range []string{l.DaemonPIDFile(), l.HelperPIDFile()} {
		if pid, err := readPID(f); err == nil && alive(pid) {
			return pid, true
		}
	}
	for _, s := range []string{l.DaemonSocket(), l.HelperSocket()} {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		err := dialUnix(ctx, s)
		cancel()
		if err == nil {
			return 0, true
		}
	}
	return 0, false
}

// cleanupRuntime removes pid files and sockets nothing listens on any more.
func cleanupRuntime(l layout.Layout) {
	for _, f := range []string{l.DaemonPIDFile(), l.HelperPIDFile()} {
		if pid, err := readPID(f); err != nil || !alive(pid) {
			_ = os.Remove(f)
		}
	}
	for _, s := range []string{l.DaemonSocket(), l.HelperSocket()} {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		if dialUnix(ctx, s) != nil {
			_ = os.Remove(s)
		}
		cancel()
	}
}

func dialUnix(ctx context.Context, path string) error {
	var d net.Dialer
	c, err := d.DialContext(ctx, "unix", path)
	if err != nil {
		return err
	}
	return c.Close()
}

func writePID(path string, pid int) error {
	if err := os.WriteFile(path, []byte(strconv.Itoa(pid)+"\n"), 0o644); err != nil {
		return fmt.Errorf("write pid file: %w", err)
	}
	return nil
}

func readPID(path string) (int, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0, err
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil || pid <= 0 {
		return 0, fmt.Errorf("pid file %s: bad content %q", path, b)
	}
	return pid, nil
}

// alive reports whether pid runs. A zombie (exited, not yet reaped by whoever
// inherited it) does not count.
func alive(pid int) bool {
	err := syscall.Kill(pid, 0)
	return (err == nil || errors.Is(err, syscall.EPERM)) && !isZombie(pid)
}

// terminate sends SIGTERM and waits up to timeout for pid to go, then SIGKILLs it.
func terminate(ctx context.Context, pid int, timeout time.Duration) error {
	if err := syscall.Kill(pid, syscall.SIGTERM); err != nil {
		if errors.Is(err, syscall.ESRCH) {
			return nil
		}
		return err
	}
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-deadline.C:
			_ = syscall.Kill(pid, syscall.SIGKILL)
			return nil
		case <-tick.C:
			if !alive(pid) {
				return nil
			}
		}
	}
}

// isZombie is true for a process that exited but was not reaped yet (a detached child
// of a process that is gone is reaped by init; until then it still answers kill -0).
func isZombie(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	return i > 0 && i+2 < len(s) && s[i+2] == 'Z'
}
