// Package jailhelper is bangerd's side of running Firecracker under its jailer
// through banger-helper: Client implements firecracker.JailOps with the helper's
// jail ops. The helper's side is internal/jailrun, a leaf package, so that the
// root binary does not link the Firecracker driver.
package jailhelper

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"

	"banger/internal/privileged"
	"banger/internal/vmm/firecracker"
	"banger/internal/vmm/process"
)

// Client is bangerd's firecracker.JailOps through banger-helper. The helper builds
// each jail from its own configuration, so the driver's JailerOptions must agree
// with it: ChrootBase privileged.JailBase(layout), UID and GID the owner's, the
// firecracker binary of the same name, no NetNS. Safe for concurrent use.
type Client struct {
	c *privileged.Client // never nil
	// base is the chroot base, where Signal looks for the jail holding a PID.
	base string
}

// NewClient returns the JailOps of the helper that c calls, whose chroot base is
// chrootBase (privileged.JailBase of the layout).
func NewClient(c *privileged.Client, chrootBase string) *Client {
	return &Client{c: c, base: chrootBase}
}

var _ firecracker.JailOps = (*Client)(nil)

// Launch implements firecracker.JailOps.
func (c *Client) Launch(ctx context.Context, l firecracker.JailLaunch) (int, error) {
	j := l.Jailer
	if j.NetNS != "" {
		return 0, fmt.Errorf("jail %s: a network namespace (%q) is not supported through banger-helper", j.ID, j.NetNS)
	}
	apiSock := j.Firecracker.APISocket
	if apiSock == "" {
		apiSock = firecracker.JailAPISocket
	}
	args := []string{"--api-sock", apiSock}
	if j.Firecracker.LogPath != "" {
		args = append(args, "--log-path", j.Firecracker.LogPath)
	}
	if j.Firecracker.Level != "" {
		args = append(args, "--level", j.Firecracker.Level)
	}
	req := privileged.JailLaunchRequest{ID: j.ID, Cgroups: j.Cgroups, FirecrackerArgs: args, ConsoleLog: l.ConsoleLog}
	for _, f := range l.Files {
		req.Files = append(req.Files, privileged.JailFileSpec{Src: f.Src, Dst: f.Dst, Writable: f.Writable})
	}
	resp, err := c.c.JailLaunch(ctx, req)
	if err != nil {
		return 0, err
	}
	return resp.PID, nil
}

// Share implements firecracker.JailOps with the helper's ChownToOwner.
func (c *Client) Share(ctx context.Context, path string) error {
	return c.c.ChownToOwner(ctx, privileged.ChownToOwnerRequest{Path: path})
}

// Signal implements firecracker.JailOps. The helper signals by jail, so the jail
// is found by the PID the driver holds: the one whose PID file names it.
func (c *Client) Signal(ctx context.Context, r process.Ref, sig unix.Signal) error {
	name := privileged.JailSignalName(sig)
	if name == "" {
		return fmt.Errorf("signal %v: banger-helper sends only %s", sig, strings.Join(privileged.JailSignalNames(), ", "))
	}
	id, err := jailOfPID(c.base, r.PID)
	if err != nil {
		return err
	}
	if id == "" {
		if !r.Alive() {
			return nil // gone, and its jail with it
		}
		return fmt.Errorf("pid %d is no jail's firecracker: banger-helper signals only jailed firecrackers", r.PID)
	}
	return c.c.JailSignal(ctx, privileged.JailSignalRequest{ID: id, Signal: name, PIDStart: r.Start})
}

// Remove implements firecracker.JailOps.
func (c *Client) Remove(ctx context.Context, j firecracker.Jailer) error {
	return c.c.JailRemove(ctx, privileged.JailRemoveRequest{ID: j.ID})
}

// jailOfPID is the id of the jail under base whose PID file holds pid, or "".
func jailOfPID(base string, pid int) (string, error) {
	files, err := filepath.Glob(filepath.Join(base, "*", "*", "root", "*.pid"))
	if err != nil {
		return "", fmt.Errorf("find the jail of pid %d: %w", pid, err)
	}
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			continue
		}
		if n, err := strconv.Atoi(strings.TrimSpace(string(data))); err == nil && n == pid {
			return filepath.Base(filepath.Dir(filepath.Dir(f))), nil
		}
	}
	return "", nil
}
