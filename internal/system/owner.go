// Package system starts, stops and inspects banger's two host processes (the root
// helper and the owner daemon) without systemd, and installs them as systemd units
// where systemd runs.
package system

import (
	"errors"
	"fmt"
	"os"
	"os/user"
	"strconv"
)

// Owner is the one user bangerd runs as and the helper accepts.
type Owner struct {
	UID, GID int
	Name     string
	Home     string
}

// ErrRootOwner is the refusal of root as the owner. bangerd runs as the owner, and
// it must never run as root: the whole point of the split is that daily VM work,
// and everything a guest can make bangerd do, runs without privilege.
var ErrRootOwner = errors.New("bangerd must not run as root: pass --owner USER, or run via sudo from your account")

// ResolveOwner turns --owner (a user name or numeric uid) into an Owner. With an empty
// spec it uses the user who ran sudo (SUDO_UID), else fallback (the recorded owner, or
// -1 for none), else the caller. Root (uid 0) is refused, however it was named:
// ErrRootOwner.
func ResolveOwner(spec string, fallback int) (Owner, error) {
	if spec == "" {
		if s := os.Getenv("SUDO_UID"); s != "" {
			spec = s
		} else if fallback >= 0 {
			spec = strconv.Itoa(fallback)
		} else {
			spec = strconv.Itoa(os.Getuid())
		}
	}
	var (
		u   *user.User
		err error
	)
	if _, convErr := strconv.Atoi(spec); convErr == nil {
		u, err = user.LookupId(spec)
	} else {
		u, err = user.Lookup(spec)
	}
	if err != nil {
		return Owner{}, fmt.Errorf("owner %q: %w: pass --owner with an existing user name or uid", spec, err)
	}
	uid, err := strconv.Atoi(u.Uid)
	if err != nil {
		return Owner{}, fmt.Errorf("owner %q: uid %q is not numeric", spec, u.Uid)
	}
	gid, err := strconv.Atoi(u.Gid)
	if err != nil {
		return Owner{}, fmt.Errorf("owner %q: gid %q is not numeric", spec, u.Gid)
	}
	if uid == 0 {
		return Owner{}, fmt.Errorf("owner %q is root: %w", spec, ErrRootOwner)
	}
	return Owner{UID: uid, GID: gid, Name: u.Username, Home: u.HomeDir}, nil
}
