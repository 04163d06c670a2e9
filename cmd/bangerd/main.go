// Command bangerd is banger's owner daemon: it runs as the owner (never root is
// needed), keeps the state store, the VM DNS server and the TAP pool, and reaches the
// kernel only through banger-helper.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"syscall"
	"time"

	"banger/internal/config"
	"banger/internal/daemon"
	"banger/internal/layout"
	"banger/internal/linuxnet"
	"banger/internal/privileged"
	"banger/internal/system"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "bangerd:", err)
		os.Exit(1)
	}
}

func run() error {
	var (
		rootFlag  = flag.String("root", "", "banger's root directory (default $"+layout.EnvRoot+" or "+layout.DefaultRoot+")")
		logFormat = flag.String("log-format", "text", "log format: text or json")
		agentFlag = flag.String("agent", "", "guest agent binary injected into images (default: banger-agent beside bangerd)")
	)
	flag.Parse()
	log, err := newLogger(*logFormat)
	if err != nil {
		return err
	}
	l, err := layout.Resolve(*rootFlag)
	if err != nil {
		return err
	}
	cfg, err := config.Load(l.ConfigPath())
	if err != nil {
		return err
	}
	if err := checkRoutes(cfg, l.Root); err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()

	if err := l.Create(-1, -1); err != nil {
		return err
	}
	agent := *agentFlag
	if agent == "" {
		if p, err := system.FindBinary("banger-agent"); err == nil {
			agent = p
		} else {
			log.Warn("guest agent not found; image pulls will fail until it is installed", "err", err)
		}
	}
	initBin, err := system.FindBinary("banger-init")
	if err != nil {
		log.Warn("banger-init not found; there is no default kernel until it is installed", "err", err)
		initBin = ""
	}
	bangerBin, _ := system.FindBinary("banger")
	helper := privileged.NewClient(l.HelperSocket())
	drv, defDriver := drivers(cfg, l, helper, log)
	d, err := daemon.Open(ctx, daemon.Options{Layout: l, Config: cfg, Helper: helper, Block: privileged.NewBlockClient(helper), Logger: log, AgentPath: agent, InitPath: initBin, BangerPath: bangerBin,
		Drivers: drv, DefaultDriver: defDriver})
	if err != nil {
		return err
	}
	defer func() {
		cctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
		defer cancel()
		if err := d.Close(cctx); err != nil {
			log.Error("close", "err", err)
		}
	}()

	ln, err := listen(l.DaemonSocket())
	if err != nil {
		return err
	}
	defer os.Remove(l.DaemonSocket())
	log.Info("serving", "socket", l.DaemonSocket())
	if err := d.Serve(ctx, ln); err != nil && !errors.Is(err, net.ErrClosed) {
		return err
	}
	return nil
}

// listen binds the API socket, replacing a stale one but never a live daemon's, with
// mode 0600: only the owner (and root) may drive bangerd.
func listen(path string) (net.Listener, error) {
	if c, err := net.DialTimeout("unix", path, time.Second); err == nil {
		c.Close()
		return nil, fmt.Errorf("another bangerd is already listening on %s: stop it first (banger system stop)", path)
	}
	_ = os.Remove(path)
	old := syscall.Umask(0o177)
	ln, err := net.Listen("unix", path)
	syscall.Umask(old)
	if err != nil {
		return nil, fmt.Errorf("listen on %s: %w", path, err)
	}
	return ln, nil
}

// checkRoutes refuses a bridge CIDR that overlaps a host route, whoever started us
// (`banger system run` checks too, but systemd starts bangerd directly). Reading
// routes over netlink needs no privilege (linuxnet wants the root only to name its
// per-root tables, which reading routes never touches).
func checkRoutes(cfg config.Config, root string) error {
	n, err := linuxnet.New(linuxnet.Options{Root: root})
	if err != nil {
		return err
	}
	defer n.Close()
	routes, err := n.Routes(context.Background())
	if err != nil {
		return fmt.Errorf("read host routes: %w", err)
	}
	return cfg.CheckOverlap(routes)
}

func newLogger(format string) (*slog.Logger, error) {
	switch format {
	case "text":
		return slog.New(slog.NewTextHandler(os.Stderr, nil)).With("proc", "bangerd"), nil
	case "json":
		return slog.New(slog.NewJSONHandler(os.Stderr, nil)).With("proc", "bangerd"), nil
	}
	return nil, fmt.Errorf("--log-format %q: use text or json", format)
}
