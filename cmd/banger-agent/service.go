package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"syscall"

	"banger/internal/agent/initsys"
	"banger/internal/agent/proto"
	"banger/internal/agent/server"
	"banger/internal/agent/sshd"
	"banger/internal/agent/users"
	"banger/internal/buildinfo"
)

// serviceOptions configure the control API and SSH server.
type serviceOptions struct {
	controlUnix    string
	controlSerial  string
	controlVsock   int
	sshListen      string
	sshHostKey     string
	authorizedKeys string
	passwd, group  string
	logLevel       slog.Level
	// bootStatus is where init published its boot phases.
	bootStatus string
	// shutdownViaInit makes shutdown a signal to PID 1 (banger-agent init).
	shutdownViaInit bool
}

const (
	defaultHostKey        = "/etc/banger/ssh_host_ed25519_key"
	defaultAuthorizedKeys = "/etc/banger/authorized_keys"
)

// registerServiceFlags defines the service flags on fs; init mode defines them too
// and passes the ones given on to the service it starts.
func registerServiceFlags(fs *flag.FlagSet, o *serviceOptions, level *string) {
	fs.StringVar(&o.controlUnix, "control-unix", "", "serve the control API on this unix socket (tests, debugging)")
	fs.StringVar(&o.controlSerial, "control-serial", "auto", `serve the control API on this serial device; "auto": /dev/virtio-ports/`+proto.SerialPortName+` when present; "" disables`)
	fs.IntVar(&o.controlVsock, "control-vsock", -1, "serve the control API on this vsock port; -1: "+strconv.Itoa(proto.DefaultVsockPort)+" when the guest has vsock; 0 disables")
	fs.StringVar(&o.sshListen, "ssh-listen", ":22", `SSH listen address; "" disables SSH`)
	fs.StringVar(&o.sshHostKey, "ssh-host-key", defaultHostKey, "SSH host key (OpenSSH private key file); SSH listens once it exists, and the host's provision call writes it")
	fs.StringVar(&o.authorizedKeys, "authorized-keys", defaultAuthorizedKeys, "file holding the keys SSH accepts; the host replaces it over the control API")
	fs.StringVar(&o.passwd, "passwd", users.DefaultPasswd, "passwd file for login users")
	fs.StringVar(&o.group, "group", users.DefaultGroup, "group file for supplementary groups")
	fs.StringVar(&o.bootStatus, "boot-status", initsys.DefaultStatusPath, "boot phases published by banger-agent init, reported by health")
	fs.BoolVar(&o.shutdownViaInit, "shutdown-via-init", false, "shut down by signalling PID 1 (set by init mode for the service it starts)")
	fs.StringVar(level, "log-level", "info", "debug, info, warn or error")
}

func parseServiceFlags(args []string, stderr io.Writer) (serviceOptions, error) {
	var o serviceOptions
	var level string
	fs := flag.NewFlagSet("banger-agent service", flag.ContinueOnError)
	fs.SetOutput(stderr)
	registerServiceFlags(fs, &o, &level)
	if err := fs.Parse(args); err != nil {
		return o, errUsage
	}
	if fs.NArg() > 0 {
		return o, fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	l, err := parseLevel(level)
	if err != nil {
		return o, err
	}
	o.logLevel = l
	return o, nil
}

// runService serves until ctx ends. The control API is the host's lifeline: a
// transport or SSH that fails to start is logged and the rest keep serving, and
// only an agent with no control transport at all gives up.
func runService(ctx context.Context, o serviceOptions, log *slog.Logger) error {
	db := users.DB{PasswdPath: o.passwd, GroupPath: o.group}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()

	sshSvc, err := newSSHService(o, db, log)
	if err != nil {
		log.Error("SSH disabled", "err", err)
	}
	cfg := server.Config{
		Logger:   log.With("component", "control"),
		Version:  buildinfo.Get(),
		Users:    db,
		Shutdown: serviceShutdown(),
	}
	if st, err := initsys.ReadBootStatus(o.bootStatus); err == nil {
		cfg.PID1 = st.PID1
		cfg.BootPhases = func() []proto.BootPhase { return st.Phases }
	}
	if o.shutdownViaInit {
		cfg.Shutdown = func(action string) error {
			if err := syscall.Kill(1, initsys.ShutdownSignal(action)); err != nil {
				return fmt.Errorf("signal init for %s: %w", action, err)
			}
			return nil
		}
	}
	if sshSvc != nil { // not a typed nil in the interface
		cfg.SSH = sshSvc
	}
	srv := server.New(cfg)

	var wg sync.WaitGroup
	var mu sync.Mutex // guards failures
	var failures []error
	serve := func(name string, f func() error) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := f(); err != nil {
				log.Error("stopped serving", "transport", name, "err", err)
				mu.Lock()
				failures = append(failures, fmt.Errorf("%s: %w", name, err))
				mu.Unlock()
			}
		}()
	}
	control := 0
	if o.controlUnix != "" {
		_ = os.Remove(o.controlUnix) // a stale socket from a previous run
		if ln, err := net.Listen("unix", o.controlUnix); err != nil {
			log.Error("control socket", "path", o.controlUnix, "err", err)
		} else {
			log.Info("control API listening", "unix", o.controlUnix)
			serve("control on unix socket", func() error { return srv.Serve(ctx, ln) })
			control++
		}
	}
	if serial := serialPath(o.controlSerial); serial != "" {
		log.Info("control API on serial port", "path", serial)
		serve("control on serial port", func() error { return srv.ServeSerial(ctx, serial) })
		control++
	}
	if port := vsockPort(o.controlVsock); port > 0 {
		if ln, err := server.ListenVsock(uint32(port)); err != nil {
			log.Error("control on vsock", "port", port, "err", err)
		} else {
			log.Info("control API listening", "vsock-port", port)
			serve("control on vsock", func() error { return srv.Serve(ctx, ln) })
			control++
		}
	}
	if control == 0 {
		cancel()
		wg.Wait()
		return errors.New("no control transport could start (no -control-unix, no /dev/vsock, no /dev/virtio-ports/" + proto.SerialPortName + "): the host could never reach this agent")
	}
	if sshSvc != nil {
		serve("ssh", func() error { return sshSvc.Run(ctx) })
	}
	<-ctx.Done()
	wg.Wait()
	return errors.Join(failures...)
}

// newSSHService builds the SSH service from its flags; nil, nil when disabled. A
// missing host key is normal (the host provisions it over the control API, and
// SSH listens from then on); an unreadable one is logged and waits the same way.
func newSSHService(o serviceOptions, db users.DB, log *slog.Logger) (*sshd.Service, error) {
	if o.sshListen == "" {
		return nil, nil
	}
	keys, err := sshd.NewKeyStore(o.authorizedKeys)
	if err != nil {
		return nil, err
	}
	hostKeys := sshd.NewHostKeyStore(o.sshHostKey)
	if err := hostKeys.Load(); errors.Is(err, os.ErrNotExist) {
		log.Info("no ssh host key yet; the host provisions it", "path", o.sshHostKey)
	} else if err != nil {
		log.Error("ssh host key unusable; waiting for the host to provision one", "err", err)
	}
	self, err := os.Executable()
	if err != nil {
		return nil, fmt.Errorf("find own executable for the sftp helper: %w", err)
	}
	srv, err := sshd.New(sshd.Config{
		Logger: log.With("component", "ssh"), HostKeys: hostKeys, Keys: keys, Users: db,
		SFTPHelper: []string{self, "sftp-server"}, Version: buildinfo.Get(),
	})
	if err != nil {
		return nil, err
	}
	return sshd.NewService(srv, o.sshListen), nil
}

// serialPath resolves -control-serial: "auto" is the named virtio-serial port when
// the guest has it.
func serialPath(flagValue string) string {
	if flagValue != "auto" {
		return flagValue
	}
	if p := filepath.Join("/dev/virtio-ports", proto.SerialPortName); exists(p) {
		return p
	}
	return ""
}

// vsockPort resolves -control-vsock: negative means the default port when the
// guest has a vsock device.
func vsockPort(flagValue int) int {
	if flagValue >= 0 {
		return flagValue
	}
	if exists("/dev/vsock") {
		return proto.DefaultVsockPort
	}
	return 0
}

// serviceShutdown asks the image's own init to shut down, through systemctl when
// there is one. Without it the call is refused as unsupported (nil).
func serviceShutdown() func(string) error {
	systemctl, err := exec.LookPath("systemctl")
	if err != nil {
		return nil
	}
	return func(action string) error {
		out, err := exec.Command(systemctl, action).CombinedOutput()
		if err != nil {
			return fmt.Errorf("systemctl %s: %w: %s", action, err, out)
		}
		return nil
	}
}

func exists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}
