package system

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"syscall"
	"time"

	"banger/internal/api"
	"banger/internal/buildinfo"
	"banger/internal/config"
	"banger/internal/layout"
	"banger/internal/privileged"
	"banger/internal/trustfs"
	"banger/internal/vmm/process"
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
// stops whatever it started and leaves no socket or pid record behind.
//
// Root trusts nothing the owner can write (see package layout): the root must be
// root's, the helper binary root's in root's directories (it is executed through
// the descriptor that was checked), the logs are opened by descriptor, and what
// `system stop` will signal is recorded in ROOT/system, which only root writes.
func Run(ctx context.Context, o RunOptions) (err error) {
	if os.Geteuid() != 0 {
		return errors.New("banger system run starts the root helper, so it must run as root: sudo banger system run --owner $USER")
	}
	if err := checkOwner(o.Owner); err != nil {
		return err
	}
	if o.StartTimeout == 0 {
		o.StartTimeout = 30 * time.Second
	}
	l := o.Layout
	// Checked here, before anything is made, then again as the copy's source.
	src, err := trustfs.OpenBinary(o.HelperBin)
	if err != nil {
		return fmt.Errorf("banger-helper runs as root, so its binary must be root's: %w", err)
	}
	src.Close()
	cfg, err := LoadConfig(l)
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
	if err := l.Create(o.Owner.UID, o.Owner.GID); err != nil {
		return err
	}
	// Run from root's ROOT/bin, where the owner can always execute bangerd.
	helperPath, daemonPath, err := InstallRunBinaries(l, o.HelperBin, o.DaemonBin)
	if err != nil {
		return err
	}
	helperBin, err := trustfs.OpenBinary(helperPath)
	if err != nil {
		return fmt.Errorf("banger-helper runs as root, so its binary must be root's: %w", err)
	}
	defer helperBin.Close()
	rfs, err := openRootFS(l)
	if err != nil {
		return err
	}
	defer rfs.Close()
	if what, ok := running(rfs); ok {
		return fmt.Errorf("banger is already running under %s (%s): stop it with `banger system stop --root %s` first", l.Root, what, l.Root)
	}
	md := privileged.InstallMetadata{OwnerUID: o.Owner.UID, OwnerGID: o.Owner.GID, Version: buildinfo.Get(), Root: l.Root, Created: time.Now().UTC()}
	if err := privileged.WriteInstallMetadata(l.InstallMetadataPath(), md); err != nil {
		return err
	}
	var helperLog, daemonLog *os.File
	if o.Detach {
		// Both opened before anything starts: a planted log refuses the start cleanly.
		if helperLog, err = rfs.openRootLog(l.HelperLog()); err != nil {
			return err
		}
		defer helperLog.Close() // the child holds its own descriptor
		if daemonLog, err = rfs.openOwnerLog(l.DaemonLog(), o.Owner); err != nil {
			return err
		}
		defer daemonLog.Close()
	}

	var started []*proc
	defer func() {
		if err != nil {
			for i := len(started) - 1; i >= 0; i-- {
				started[i].stop(10 * time.Second)
			}
			cleanupRuntime(rfs)
		}
	}()

	helper, err := startProc(ctx, procSpec{
		name: "banger-helper", path: helperBin.ExecPath(), argv0: helperBin.Path, log: helperLog,
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
		name: "bangerd", path: daemonPath, argv0: daemonPath, log: daemonLog, owner: &o.Owner,
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

	for _, r := range []struct {
		p    *proc
		path string
	}{{helper, l.HelperPIDFile()}, {daemon, l.DaemonPIDFile()}} {
		rec, err := recordProcess(r.p.cmd.Process.Pid)
		if err != nil {
			return fmt.Errorf("record %s: %w", r.p.name, err)
		}
		if err := rfs.writeRecord(r.path, rec); err != nil {
			return err
		}
	}
	if o.Detach {
		fmt.Fprintf(o.Out, "running detached; logs in %s (bangerd) and %s (banger-helper); stop with `banger system stop --root %s`\n", l.DaemonLog(), l.HelperLog(), l.Root)
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
	cleanupRuntime(rfs)
	return nil
}

// checkOwner refuses root as the owner: bangerd never runs as root.
func checkOwner(o Owner) error {
	if o.UID == 0 {
		return ErrRootOwner
	}
	if o.UID < 0 || o.GID < 0 {
		return fmt.Errorf("owner uid/gid %d:%d must be set: pass --owner USER", o.UID, o.GID)
	}
	return nil
}

// Stop ends a detached instance: SIGTERM to bangerd, then to the helper, each waited
// for and killed after timeout; then removes the records and stale sockets. A
// process is signalled only through a pidfd, after checking it is the very process
// `system run` recorded (start time and executable): a record whose PID now names
// another process is refused, reported, and that process is left alone.
func Stop(ctx context.Context, l layout.Layout, timeout time.Duration, out io.Writer) error {
	rfs, err := openRootFS(l)
	if errors.Is(err, fs.ErrNotExist) {
		fmt.Fprintf(out, "banger is not running under %s\n", l.Root)
		return nil
	}
	if err != nil {
		return err
	}
	defer rfs.Close()
	stopped := 0
	for _, f := range []struct{ name, record string }{{"bangerd", l.DaemonPIDFile()}, {"banger-helper", l.HelperPIDFile()}} {
		rec, err := rfs.readRecord(f.record)
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err != nil {
			return fmt.Errorf("stop %s: %w", f.name, err)
		}
		p, err := pin(rec)
		switch {
		case errors.Is(err, process.ErrNotRunning):
			rfs.removeRecord(f.record)
			continue
		case errors.Is(err, errNotOurs):
			fmt.Fprintf(out, "refusing to signal %s's recorded pid %d: %v; it was left alone and the stale record %s removed\n", f.name, rec.PID, err, f.record)
			rfs.removeRecord(f.record)
			continue
		case err != nil:
			return fmt.Errorf("stop %s (pid %d): %w", f.name, rec.PID, err)
		}
		err = p.terminate(ctx, timeout)
		p.close()
		if err != nil {
			return fmt.Errorf("stop %s (pid %d): %w", f.name, rec.PID, err)
		}
		rfs.removeRecord(f.record)
		fmt.Fprintf(out, "%s stopped (pid %d)\n", f.name, rec.PID)
		stopped++
	}
	cleanupRuntime(rfs)
	if stopped == 0 {
		fmt.Fprintf(out, "banger is not running under %s\n", l.Root)
	}
	return nil
}

// running reports a live daemon or helper: one recorded (and still the recorded
// process), or one answering on its socket.
func running(rfs *rootFS) (string, bool) {
	l := rfs.l
	for _, f := range []string{l.DaemonPIDFile(), l.HelperPIDFile()} {
		if rec, err := rfs.readRecord(f); err == nil {
			if p, err := pin(rec); err == nil {
				p.close()
				return fmt.Sprintf("pid %d", rec.PID), true
			}
		}
	}
	for _, s := range []string{l.DaemonSocket(), l.HelperSocket()} {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		err := dialUnix(ctx, s)
		cancel()
		if err == nil {
			return "listening on " + s, true
		}
	}
	return "", false
}

// cleanupRuntime removes records of processes that are gone and sockets nothing
// listens on any more.
func cleanupRuntime(rfs *rootFS) {
	l := rfs.l
	for _, f := range []string{l.DaemonPIDFile(), l.HelperPIDFile()} {
		rec, err := rfs.readRecord(f)
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err == nil {
			if p, err := pin(rec); err == nil {
				p.close()
				continue // still running
			}
		}
		rfs.removeRecord(f)
	}
	for _, s := range []string{l.DaemonSocket(), l.HelperSocket()} {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		if dialUnix(ctx, s) != nil {
			rfs.removeSocket(s)
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
