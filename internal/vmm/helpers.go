package vmm

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"

	"banger/internal/agent/client"
)

// What every driver needs alike: checking the files a Spec names, asking the
// guest agent to shut down, and removing an exited VMM's sockets.

// CheckFile says why path (the what of a Spec: kernel, root disk, ...) cannot be
// opened by a VMM: missing, unreadable, or neither a file nor a device.
func CheckFile(what, path string) error {
	if path == "" {
		return fmt.Errorf("no %s given", what)
	}
	f, err := os.Open(path)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("%s %s does not exist", what, path)
		}
		return fmt.Errorf("%s: %w", what, err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	if !fi.Mode().IsRegular() && fi.Mode().Type() != fs.ModeDevice {
		return fmt.Errorf("%s %s is not a file", what, path)
	}
	return nil
}

// AgentShutdown asks the guest agent of h, reached through d, to shut down with
// action (proto.ActionPoweroff or ActionReboot), and holds the session until the
// guest ends it or ctx does: hanging up at once races the agent, which may see
// the hang-up before its answer is written.
func AgentShutdown(ctx context.Context, d Driver, h Handle, action string, log *slog.Logger) error {
	conn, err := d.DialAgent(ctx, h)
	if err != nil {
		return err
	}
	c, err := client.Dial(ctx, conn, client.Options{Logger: log})
	if err != nil {
		return err
	}
	defer c.Close()
	if err := c.Shutdown(ctx, action); err != nil {
		return err
	}
	select {
	case <-c.Done():
	case <-ctx.Done():
	}
	return nil
}

// RemoveSockets removes the sockets of a VMM that has exited. Only sockets are
// removed: a Handle read back from a store must not delete anything else.
func RemoveSockets(paths ...string) error {
	var errs []error
	for _, p := range paths {
		if p == "" {
			continue
		}
		fi, err := os.Lstat(p)
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err != nil {
			errs = append(errs, err)
			continue
		}
		if fi.Mode().Type() != fs.ModeSocket {
			errs = append(errs, fmt.Errorf("%s is not a socket: left in place", p))
			continue
		}
		if err := os.Remove(p); err != nil && !errors.Is(err, fs.ErrNotExist) {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}
