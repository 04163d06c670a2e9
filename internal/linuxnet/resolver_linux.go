package linuxnet

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"net/netip"
	"os"
	"os/exec"
	"strings"
)

// Route routes domain to the DNS server at dns through the bridge link in
// systemd-resolved (enable), or removes that routing (!enable). systemd-resolved has
// no library interface short of D-Bus, so this runs resolvectl, and its errors carry
// the command's output:
//
//	resolvectl dns BRIDGE IP:PORT
//	resolvectl domain BRIDGE ~DOMAIN       (a routing-only domain: only *.DOMAIN goes there)
//	resolvectl default-route BRIDGE false  (and nothing else does)
//	resolvectl revert BRIDGE               (to disable)
//
// If enabling fails part-way, what was set is reverted. Disabling when the bridge is
// gone succeeds without running anything: systemd-resolved forgets a link's settings
// with the link.
//
// applied is false, with a reason for humans, when the host has no systemd-resolved
// (its runtime directory is missing) or no resolvectl; that is not an error, names
// then resolve only by asking banger's DNS directly. The settings last until the link
// goes away or systemd-resolved restarts, so the caller reapplies them when it opens.
func (n *Net) Route(ctx context.Context, bridge, domain string, dns netip.AddrPort, enable bool) (applied bool, reason string, err error) {
	if err := ctx.Err(); err != nil {
		return false, "", err
	}
	domain = strings.Trim(domain, ".")
	if _, err := os.Stat(n.resolvedDir); err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return false, fmt.Sprintf("systemd-resolved is not running (no %s): the host resolves *.%s only by asking banger's DNS at %s directly", n.resolvedDir, domain, dns), nil
		}
		return false, "", fmt.Errorf("resolver routing: %w", err)
	}
	bin, err := exec.LookPath(n.resolvectl)
	if err != nil {
		return false, fmt.Sprintf("systemd-resolved is running but %s was not found (%v): install systemd-resolved's resolvectl to resolve *.%s from the host", n.resolvectl, err, domain), nil
	}
	if !enable {
		n.mu.Lock()
		l, err := n.linkByName(bridge)
		n.mu.Unlock()
		if err != nil {
			return false, "", fmt.Errorf("resolver routing: %w", err)
		}
		if l == nil {
			return true, "", nil
		}
		if err := resolvectl(ctx, bin, "revert", bridge); err != nil {
			return false, "", err
		}
		return true, "", nil
	}
	steps := [][]string{
		{"dns", bridge, dns.String()},
		{"domain", bridge, "~" + domain},
		{"default-route", bridge, "false"},
	}
	for _, args := range steps {
		if err := resolvectl(ctx, bin, args...); err != nil {
			if rerr := resolvectl(context.WithoutCancel(ctx), bin, "revert", bridge); rerr != nil {
				err = errors.Join(err, rerr)
			}
			return false, "", err
		}
	}
	return true, "", nil
}

// resolvectl runs one resolvectl command; its error carries the command and output.
func resolvectl(ctx context.Context, bin string, args ...string) error {
	out, err := exec.CommandContext(ctx, bin, args...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("resolvectl %s: %w: %s", strings.Join(args, " "), err, bytes.TrimSpace(out))
	}
	return nil
}
