// Package users reads the guest's passwd and group files, so that the agent runs
// commands and SSH sessions as the guest's own users without cgo or NSS.
package users

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"syscall"
)

// Default paths of the databases.
const (
	DefaultPasswd = "/etc/passwd"
	DefaultGroup  = "/etc/group"
)

// ErrUnknownUser means the name is not in the passwd file.
var ErrUnknownUser = errors.New("unknown user")

// User is one passwd entry plus its supplementary groups.
type User struct {
	Name   string
	UID    uint32
	GID    uint32
	Groups []uint32
	Home   string
	Shell  string
}

// DB looks users up in a passwd and a group file. The zero value uses the default
// paths. Files are read on every lookup: the guest may change them at any time and
// they are small.
type DB struct {
	PasswdPath string
	GroupPath  string
}

func (d DB) passwd() string {
	if d.PasswdPath == "" {
		return DefaultPasswd
	}
	return d.PasswdPath
}

func (d DB) group() string {
	if d.GroupPath == "" {
		return DefaultGroup
	}
	return d.GroupPath
}

// Lookup returns the user called name. Errors wrap ErrUnknownUser when the file
// has no such entry.
func (d DB) Lookup(name string) (User, error) {
	return d.find(func(u User) bool { return u.Name == name }, fmt.Sprintf("user %q", name))
}

// LookupUID returns the first user with the given uid.
func (d DB) LookupUID(uid uint32) (User, error) {
	return d.find(func(u User) bool { return u.UID == uid }, fmt.Sprintf("uid %d", uid))
}

func (d DB) find(match func(User) bool, what string) (User, error) {
	f, err := os.Open(d.passwd())
	if err != nil {
		return User{}, fmt.Errorf("%s: %w", what, err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		u, ok := parsePasswdLine(sc.Text())
		if !ok || !match(u) {
			continue
		}
		groups, err := d.groupsOf(u)
		if err != nil {
			return User{}, fmt.Errorf("%s: %w", what, err)
		}
		u.Groups = groups
		return u, nil
	}
	if err := sc.Err(); err != nil {
		return User{}, fmt.Errorf("%s: read %s: %w", what, d.passwd(), err)
	}
	return User{}, fmt.Errorf("%s: not in %s: %w", what, d.passwd(), ErrUnknownUser)
}

// parsePasswdLine parses "name:x:uid:gid:gecos:home:shell".
func parsePasswdLine(line string) (User, bool) {
	if line == "" || strings.HasPrefix(line, "#") {
		return User{}, false
	}
	f := strings.Split(line, ":")
	if len(f) != 7 || f[0] == "" {
		return User{}, false
	}
	uid, err1 := strconv.ParseUint(f[2], 10, 32)
	gid, err2 := strconv.ParseUint(f[3], 10, 32)
	if err1 != nil || err2 != nil {
		return User{}, false
	}
	return User{Name: f[0], UID: uint32(uid), GID: uint32(gid), Home: f[5], Shell: f[6]}, true
}

// groupsOf lists the supplementary groups of u: its primary group plus every group
// naming it as a member. A missing group file yields just the primary group.
func (d DB) groupsOf(u User) ([]uint32, error) {
	groups := []uint32{u.GID}
	f, err := os.Open(d.group())
	if errors.Is(err, os.ErrNotExist) {
		return groups, nil
	}
	if err != nil {
		return nil, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fs := strings.Split(sc.Text(), ":")
		if len(fs) != 4 {
			continue
		}
		gid, err := strconv.ParseUint(fs[2], 10, 32)
		if err != nil || uint32(gid) == u.GID {
			continue
		}
		for _, m := range strings.Split(fs[3], ",") {
			if m == u.Name {
				groups = append(groups, uint32(gid))
				break
			}
		}
	}
	return groups, sc.Err()
}

// ShellOrDefault is the user's login shell, or /bin/sh when the entry has none.
func (u User) ShellOrDefault() string {
	if u.Shell == "" {
		return "/bin/sh"
	}
	return u.Shell
}

// Credential returns the credential to start a process as u, or nil when the
// current process already runs as u (a non-root agent cannot switch users, and
// need not for itself).
func (u User) Credential() *syscall.Credential {
	if uint32(os.Geteuid()) == u.UID && uint32(os.Getegid()) == u.GID {
		return nil
	}
	return &syscall.Credential{Uid: u.UID, Gid: u.GID, Groups: u.Groups}
}

// CheckSwitch returns an error when the current process may not run processes as u.
func (u User) CheckSwitch() error {
	if os.Geteuid() != 0 && uint32(os.Geteuid()) != u.UID {
		return fmt.Errorf("the agent runs as uid %d and cannot start processes as %s (uid %d): run it as root", os.Geteuid(), u.Name, u.UID)
	}
	return nil
}

// DefaultPath is PATH for processes the agent starts, when the caller sets none.
const DefaultPath = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

// BaseEnv is the login environment for u: what sshd and login set.
func (u User) BaseEnv() []string {
	return []string{
		"PATH=" + DefaultPath,
		"HOME=" + u.Home,
		"USER=" + u.Name,
		"LOGNAME=" + u.Name,
		"SHELL=" + u.ShellOrDefault(),
	}
}

// MergeEnv returns base with each "K=V" of extra added or replacing the same key.
func MergeEnv(base, extra []string) []string {
	out := make([]string, 0, len(base)+len(extra))
	idx := map[string]int{}
	for _, kv := range append(append([]string(nil), base...), extra...) {
		k, _, _ := strings.Cut(kv, "=")
		if i, ok := idx[k]; ok {
			out[i] = kv
			continue
		}
		idx[k] = len(out)
		out = append(out, kv)
	}
	return out
}

// LookPath finds file in the PATH of env the way a shell would, so a command is
// found where the target user's environment says, not where the agent's does.
func LookPath(file string, env []string) (string, error) {
	if strings.Contains(file, "/") {
		if err := executable(file); err != nil {
			return "", fmt.Errorf("%s: %w", file, err)
		}
		return file, nil
	}
	path := DefaultPath
	for _, kv := range env {
		if v, ok := strings.CutPrefix(kv, "PATH="); ok {
			path = v
		}
	}
	for _, dir := range strings.Split(path, ":") {
		if dir == "" {
			dir = "."
		}
		p := dir + "/" + file
		if executable(p) == nil {
			return p, nil
		}
	}
	return "", fmt.Errorf("executable %q not found in PATH %s: %w", file, path, os.ErrNotExist)
}

func executable(p string) error {
	st, err := os.Stat(p)
	if err != nil {
		return err
	}
	if st.IsDir() || st.Mode()&0o111 == 0 {
		return fmt.Errorf("not an executable file: %w", os.ErrPermission)
	}
	return nil
}
