package system

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"banger/internal/buildinfo"
	"banger/internal/layout"
	"banger/internal/privileged"
	"banger/internal/trustfs"
)

// InstallOptions configures Install.
type InstallOptions struct {
	Layout  layout.Layout
	Owner   Owner
	UnitDir string // /etc/systemd/system
	BinDir  string // /usr/local/bin
	// SrcDir holds the freshly built binaries to copy into BinDir; "" when they are
	// already there.
	SrcDir string
	// Start enables and starts the units when systemd runs here.
	Start bool
	Out   io.Writer
}

// Binaries are the host binaries Install copies.
var Binaries = []string{"banger", "bangerd", "banger-helper", "banger-agent"}

// SystemdRunning reports whether systemd is PID 1 (sd_booted's test).
func SystemdRunning() bool {
	st, err := os.Stat("/run/systemd/system")
	return err == nil && st.IsDir()
}

// Install copies the binaries, prepares the root for the owner, records install
// metadata and writes the two units; with systemd running it enables and starts them.
func Install(ctx context.Context, o InstallOptions) error {
	if os.Geteuid() != 0 {
		return errors.New("banger system install writes systemd units and a root-owned helper: run it as root (sudo banger system install --owner $USER)")
	}
	if err := checkOwner(o.Owner); err != nil {
		return err
	}
	// systemd will run banger-helper as root from BinDir: it and every directory up
	// to / must be root's and writable by no one else, checked before root writes
	// anything there.
	binDir, err := trustfs.OpenDir(o.BinDir)
	if err != nil {
		return fmt.Errorf("banger-helper runs as root from --bin-dir %s, so that directory must be root's: %w", o.BinDir, err)
	}
	binDir.Close()
	if o.SrcDir != "" && o.SrcDir != o.BinDir {
		for _, b := range Binaries {
			src := filepath.Join(o.SrcDir, b)
			if _, err := os.Stat(src); errors.Is(err, os.ErrNotExist) && b == "banger-agent" {
				continue // the agent is optional until images need it
			}
			if err := copyFile(src, filepath.Join(o.BinDir, b), 0o755); err != nil {
				return err
			}
		}
	}
	helper, err := trustfs.OpenBinary(filepath.Join(o.BinDir, "banger-helper"))
	if err != nil {
		return fmt.Errorf("banger-helper runs as root from --bin-dir %s, so it must be root's there: %w", o.BinDir, err)
	}
	helper.Close()
	if err := o.Layout.Create(o.Owner.UID, o.Owner.GID); err != nil {
		return err
	}
	md := privileged.InstallMetadata{OwnerUID: o.Owner.UID, OwnerGID: o.Owner.GID, Version: buildinfo.Get(), Root: o.Layout.Root, Created: time.Now().UTC()}
	if err := privileged.WriteInstallMetadata(o.Layout.InstallMetadataPath(), md); err != nil {
		return err
	}
	units, err := RenderUnits(UnitSpec{Root: o.Layout.Root, BinDir: o.BinDir, Owner: o.Owner})
	if err != nil {
		return err
	}
	if err := os.MkdirAll(o.UnitDir, 0o755); err != nil {
		return err
	}
	for name, body := range units {
		if err := writeFileAtomic(filepath.Join(o.UnitDir, name), body, 0o644); err != nil {
			return err
		}
		fmt.Fprintf(o.Out, "wrote %s\n", filepath.Join(o.UnitDir, name))
	}
	if !o.Start {
		return nil
	}
	if !SystemdRunning() {
		fmt.Fprintf(o.Out, "systemd is not running here: the units are installed for the next boot; start banger now with `banger system run -d --root %s`\n", o.Layout.Root)
		return nil
	}
	for _, args := range [][]string{{"daemon-reload"}, {"enable", "--now", HelperUnit, DaemonUnit}} {
		if out, err := exec.CommandContext(ctx, "systemctl", args...).CombinedOutput(); err != nil {
			return fmt.Errorf("systemctl %s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(string(out)))
		}
	}
	fmt.Fprintln(o.Out, "banger-helper and bangerd enabled and started")
	return nil
}

// UninstallOptions configures Uninstall.
type UninstallOptions struct {
	Layout  layout.Layout
	UnitDir string
	// Network removes banger's bridge, taps and nftables table.
	Network interface {
		RemoveNetwork(ctx context.Context, scope privileged.TapScope) error
	}
	// Scope is the bridge and the owner whose taps go.
	Scope privileged.TapScope
	// Purge also deletes the root (store, images, disks, logs).
	Purge bool
	Out   io.Writer
}

// Uninstall stops and removes the units (or a `system run` instance), removes
// banger's network, and with Purge the root.
func Uninstall(ctx context.Context, o UninstallOptions) error {
	if os.Geteuid() != 0 {
		return errors.New("banger system uninstall removes systemd units and host networking: run it as root")
	}
	if SystemdRunning() {
		if out, err := exec.CommandContext(ctx, "systemctl", "disable", "--now", DaemonUnit, HelperUnit).CombinedOutput(); err != nil {
			fmt.Fprintf(o.Out, "systemctl disable: %v: %s (continuing)\n", err, strings.TrimSpace(string(out)))
		}
	}
	if err := Stop(ctx, o.Layout, 15*time.Second, io.Discard); err != nil {
		return err
	}
	for _, u := range []string{HelperUnit, DaemonUnit} {
		p := filepath.Join(o.UnitDir, u)
		if err := os.Remove(p); err == nil {
			fmt.Fprintf(o.Out, "removed %s\n", p)
		} else if !errors.Is(err, os.ErrNotExist) {
			return err
		}
	}
	if o.Network != nil {
		if err := o.Network.RemoveNetwork(ctx, o.Scope); err != nil {
			return fmt.Errorf("remove banger's network: %w", err)
		}
		fmt.Fprintf(o.Out, "removed bridge %s, banger's taps and nftables rules\n", o.Scope.Bridge)
	}
	if o.Purge {
		if err := os.RemoveAll(o.Layout.Root); err != nil {
			return err
		}
		fmt.Fprintf(o.Out, "removed %s\n", o.Layout.Root)
	}
	return nil
}

func copyFile(src, dst string, mode os.FileMode) error {
	in, err := os.Open(src)
	if err != nil {
		return fmt.Errorf("install %s: %w", filepath.Base(src), err)
	}
	defer in.Close()
	tmp := dst + ".tmp"
	out, err := os.OpenFile(tmp, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, mode)
	if err != nil {
		return fmt.Errorf("install %s: %w", dst, err)
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		os.Remove(tmp)
		return fmt.Errorf("install %s: %w", dst, err)
	}
	if err := out.Close(); err != nil {
		os.Remove(tmp)
		return err
	}
	return os.Rename(tmp, dst)
}

func writeFileAtomic(path string, data []byte, mode os.FileMode) error {
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, data, mode); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if err := os.Rename(tmp, path); err != nil {
		os.Remove(tmp)
		return fmt.Errorf("write %s: %w", path, err)
	}
	return nil
}
