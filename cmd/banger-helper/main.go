// Command banger-helper is banger's root helper: a small process, run as root, that
// performs only validated privileged steps (bridge, taps, NAT, resolver routing,
// socket ownership, loop devices and device-mapper devices for copy-on-write root
// disks, Firecracker under its jailer) for one owner, over a unix socket only that
// owner can use, and writes one audit line per call.
//
//	banger-helper [--root DIR] [--owner-uid N --owner-gid N] [--log-format text|json]
//
// The owner comes from the flags or, without them, from ROOT/install.json. The socket
// is ROOT/helper/helper.sock, the audit log ROOT/system/helper-audit.log; operational logs
// go to stderr. SIGTERM or SIGINT stops it cleanly and removes the socket.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"os/signal"
	"os/user"
	"path/filepath"
	"strconv"
	"syscall"

	"golang.org/x/sys/unix"

	"banger/internal/blockdev"
	"banger/internal/buildinfo"
	"banger/internal/config"
	"banger/internal/jailrun"
	"banger/internal/layout"
	"banger/internal/linuxnet"
	"banger/internal/privileged"
	"banger/internal/trustfs"
)

func main() {
	if err := run(os.Args[1:], os.Stderr); err != nil {
		fmt.Fprintln(os.Stderr, "banger-helper:", err)
		os.Exit(1)
	}
}

func run(args []string, stderr io.Writer) error {
	fs := flag.NewFlagSet("banger-helper", flag.ContinueOnError)
	fs.SetOutput(stderr)
	rootFlag := fs.String("root", "", "banger root directory (default $"+layout.EnvRoot+", else "+layout.DefaultRoot+")")
	ownerUID := fs.Int("owner-uid", -1, "uid of the only user allowed to call the helper (default: owner_uid from ROOT/install.json)")
	ownerGID := fs.Int("owner-gid", -1, "gid given with the owner's taps, socket and files (default: owner_gid from ROOT/install.json, or the owner's primary group)")
	logFormat := fs.String("log-format", "text", "stderr log format: text or json")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil
		}
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected arguments %q: banger-helper takes only flags (see --help)", fs.Args())
	}
	logger, err := newLogger(*logFormat, stderr)
	if err != nil {
		return err
	}
	if os.Geteuid() != 0 {
		return fmt.Errorf("must run as root (it creates bridges, taps and nftables rules), but runs as uid %d: start it with `sudo banger system run`, or install the service with `sudo banger system install`", os.Geteuid())
	}
	lay, err := layout.Resolve(*rootFlag)
	if err != nil {
		return err
	}
	uid, gid, err := resolveOwner(lay, *ownerUID, *ownerGID)
	if err != nil {
		return err
	}
	cfg, err := loadConfig(lay)
	if err != nil {
		return err
	}
	prefix, err := cfg.BridgePrefix()
	if err != nil {
		return err
	}
	auditFile, err := openAuditLog(lay, uid, gid)
	if err != nil {
		return err
	}
	defer auditFile.Close()

	deny, err := cfg.EgressDenyPrefixes()
	if err != nil {
		return err
	}
	dnsListen, err := cfg.DNSListen()
	if err != nil {
		return err
	}
	// The guest policy comes from this root-owned config.toml, never from requests.
	nl, err := linuxnet.New(linuxnet.Options{Root: lay.Root, Policy: linuxnet.Policy{
		IsolateVMs: cfg.Network.IsolateVMs, EgressDeny: deny, DNSPort: dnsListen.Port(),
	}})
	if err != nil {
		return fmt.Errorf("kernel networking: %w", err)
	}
	defer nl.Close()
	// ResolverRouting sets up only this domain and server, from the root-owned config.
	helperDNS, err := cfg.DNSListen()
	if err != nil {
		return err
	}
	consoleMax, err := cfg.ConsoleMaxBytes()
	if err != nil {
		return err
	}
	srv, err := privileged.NewServer(privileged.ServerConfig{
		Layout:       lay,
		OwnerUID:     uid,
		OwnerGID:     gid,
		Bridge:       cfg.Network.Bridge,
		BridgePrefix: prefix,
		MTU:          cfg.Network.MTU,
		DNSDomain:    cfg.DNS.Domain,
		DNSListen:    helperDNS,
		Net:          nl,
		Resolver:     nl,
		Block:        blockdev.Local{},
		Jail:         jailRuntime(cfg, lay, uid, gid, logger),
		ConsoleMax:   consoleMax,
		Audit:        privileged.NewAuditLogger(auditFile),
		Logger:       logger,
	})
	if err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	logger.Info("starting", "version", buildinfo.Get(), "root", lay.Root, "owner_uid", uid, "owner_gid", gid,
		"socket", lay.HelperSocket(), "audit", lay.AuditLog())
	return srv.ListenAndServe(ctx)
}

// jailRuntime runs the jailer for the jail ops with the helper's own configuration
// (vmm.jailer, vmm.firecracker): both binaries are resolved and checked now
// (jailrun.New); untrusted or missing ones leave the jail ops answering why. Nil
// when vmm.jailer is empty.
func jailRuntime(cfg config.Config, lay layout.Layout, uid, gid int, log *slog.Logger) privileged.JailRuntime {
	if cfg.VMM.Jailer == "" {
		return nil
	}
	r := jailrun.New(jailrun.Options{
		Jailer: cfg.VMM.Jailer, Firecracker: cfg.VMM.Firecracker,
		ChrootBase: privileged.JailBase(lay), UID: uid, GID: gid,
	})
	r.LogStart(log)
	return r
}

func newLogger(format string, w io.Writer) (*slog.Logger, error) {
	switch format {
	case "text":
		return slog.New(slog.NewTextHandler(w, nil)), nil
	case "json":
		return slog.New(slog.NewJSONHandler(w, nil)), nil
	}
	return nil, fmt.Errorf("--log-format %q is unknown: use text or json", format)
}

// resolveOwner picks the owner from the flags, else from install.json. A uid given
// without a gid takes the user's primary group.
func resolveOwner(lay layout.Layout, uid, gid int) (int, int, error) {
	if uid < 0 {
		if gid >= 0 {
			return 0, 0, errors.New("--owner-gid given without --owner-uid: give both, or neither to use ROOT/install.json")
		}
		m, err := privileged.ReadTrustedInstallMetadata(lay.InstallMetadataPath())
		if errors.Is(err, trustfs.ErrUntrusted) {
			return 0, 0, fmt.Errorf("refusing to start: %w", err)
		}
		if err != nil {
			return 0, 0, fmt.Errorf("no owner known: %w", err)
		}
		return m.OwnerUID, m.OwnerGID, nil
	}
	// The owner comes from the flags, but a present install.json must still be
	// root's: one the owner can write is a sign the root was given away.
	if _, err := privileged.ReadTrustedInstallMetadata(lay.InstallMetadataPath()); errors.Is(err, trustfs.ErrUntrusted) {
		return 0, 0, fmt.Errorf("refusing to start: %w", err)
	}
	if gid >= 0 {
		return uid, gid, nil
	}
	u, err := user.LookupId(strconv.Itoa(uid))
	if err != nil {
		return 0, 0, fmt.Errorf("--owner-uid %d: %w: pass --owner-gid too", uid, err)
	}
	g, err := strconv.Atoi(u.Gid)
	if err != nil {
		return 0, 0, fmt.Errorf("--owner-uid %d: primary group %q is not numeric: pass --owner-gid", uid, u.Gid)
	}
	return uid, g, nil
}

// maxConfig bounds config.toml: a real one is a few hundred bytes.
const maxConfig = 1 << 20

// loadConfig reads ROOT/config.toml, which decides what root does (the bridge it
// manages, the jailer it runs), so only a file nobody but root could have written
// is read (trustfs.OpenRootFile), through the descriptor that was checked. A
// missing file means the defaults.
func loadConfig(lay layout.Layout) (config.Config, error) {
	data, err := trustfs.ReadRootFile(lay.ConfigPath(), maxConfig)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		data = nil
	case errors.Is(err, trustfs.ErrUntrusted):
		return config.Config{}, fmt.Errorf("refusing to start: %w", err)
	case err != nil:
		return config.Config{}, fmt.Errorf("config: %w", err)
	}
	return config.Parse(data, lay.ConfigPath())
}

// openAuditLog opens ROOT/system/helper-audit.log for appending. ROOT/system is
// root's (layout.CreateSystemDir makes it, checking ROOT), so the owner can neither
// rewrite nor delete the trail; the file is still opened beneath the root with
// symlinks refused, and must be a root-owned regular file with one link.
func openAuditLog(lay layout.Layout, uid, gid int) (*os.File, error) {
	if _, err := os.Stat(lay.LogDir); errors.Is(err, os.ErrNotExist) {
		if err := os.MkdirAll(lay.LogDir, 0o750); err != nil {
			return nil, fmt.Errorf("create log directory: %w", err)
		}
		if err := os.Chown(lay.LogDir, uid, gid); err != nil {
			return nil, fmt.Errorf("chown %s to the owner %d:%d: %w", lay.LogDir, uid, gid, err)
		}
	}
	if err := lay.CreateSystemDir(); err != nil {
		return nil, err
	}
	rootFD, err := unix.Open(lay.Root, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("open banger root %s: %w", lay.Root, err)
	}
	defer unix.Close(rootFD)
	rel, err := filepath.Rel(lay.Root, lay.AuditLog())
	if err != nil {
		return nil, fmt.Errorf("audit log: %w", err)
	}
	fd, err := unix.Openat2(rootFD, rel, &unix.OpenHow{
		Flags:   unix.O_WRONLY | unix.O_APPEND | unix.O_CREAT | unix.O_NOFOLLOW | unix.O_CLOEXEC,
		Mode:    0o640,
		Resolve: unix.RESOLVE_BENEATH | unix.RESOLVE_NO_SYMLINKS | unix.RESOLVE_NO_MAGICLINKS,
	})
	if err != nil {
		return nil, fmt.Errorf("open audit log %s: %w (a symlink on the way is refused)", lay.AuditLog(), err)
	}
	f := os.NewFile(uintptr(fd), lay.AuditLog())
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		f.Close()
		return nil, fmt.Errorf("audit log: %w", err)
	}
	if st.Mode&unix.S_IFMT != unix.S_IFREG || st.Nlink != 1 || st.Uid != 0 {
		f.Close()
		return nil, fmt.Errorf("audit log %s must be a root-owned regular file with one link: move it away and start again", lay.AuditLog())
	}
	return f, nil
}
