package sshkeys

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// includeMarker is the comment line InstallInclude writes above its Include, so that
// a reader knows where it came from and UninstallInclude can take both away.
const includeMarker = "# Added by `banger ssh-config --install`: ssh NAME.vm uses banger's key and known_hosts. Remove with --uninstall."

// IncludeChange reports what InstallInclude or UninstallInclude did, for the CLI to print.
type IncludeChange struct {
	// UserConfig is the file that was (or would have been) edited.
	UserConfig string
	// Include is the banger ssh_config path the Include names.
	Include string
	// Changed is false when the file already was as asked.
	Changed bool
	// Created is true when InstallInclude made UserConfig.
	Created bool
	// Uninstall tells which operation this was.
	Uninstall bool
}

// String is one line for a terminal.
func (c IncludeChange) String() string {
	switch {
	case c.Uninstall && c.Changed:
		return fmt.Sprintf("removed the Include of %s from %s", c.Include, c.UserConfig)
	case c.Uninstall:
		return fmt.Sprintf("%s does not include %s: nothing to remove", c.UserConfig, c.Include)
	case c.Created:
		return fmt.Sprintf("created %s with an Include of %s", c.UserConfig, c.Include)
	case c.Changed:
		return fmt.Sprintf("added an Include of %s at the top of %s", c.Include, c.UserConfig)
	default:
		return fmt.Sprintf("%s already includes %s at its top: nothing to do", c.UserConfig, c.Include)
	}
}

// InstallInclude puts `Include <bangerConfig>` at the top of the user's ssh config
// (usually ~/.ssh/config), where it applies to every host: an Include below a Host or
// Match line would only apply inside that block. The file is created (mode 0600, its
// directory 0700) if missing; an existing file keeps its content, mode and, through
// symlinks, its real location. Running it again changes nothing; an Include of the same
// file found lower down is moved to the top.
func InstallInclude(userConfig, bangerConfig string) (IncludeChange, error) {
	c := IncludeChange{UserConfig: userConfig, Include: bangerConfig}
	if err := checkIncludePath(bangerConfig); err != nil {
		return c, err
	}
	target, old, perm, err := readUserConfig(userConfig)
	if err != nil {
		return c, err
	}
	rest := withoutInclude(old, bangerConfig)
	// Include takes no %-tokens (unlike IdentityFile), so the path is quoted as it is.
	head := includeMarker + "\n" + `Include "` + bangerConfig + `"` + "\n"
	if len(rest) > 0 && rest[0] != "" {
		head += "\n" // a blank line between banger's lines and the user's
	}
	updated := head + joinLines(rest)
	if old != nil && updated == joinLines(old) {
		return c, nil
	}
	if old == nil {
		if err := os.MkdirAll(filepath.Dir(target), 0o700); err != nil {
			return c, fmt.Errorf("ssh config directory: %w", err)
		}
		c.Created = true
	}
	if err := writeFileAtomic(target, []byte(updated), perm); err != nil {
		return c, fmt.Errorf("ssh config: %w", err)
	}
	c.Changed = true
	return c, nil
}

// UninstallInclude removes what InstallInclude added: the marker comment and every
// `Include <bangerConfig>` line. A missing file, or one without them, is left alone.
func UninstallInclude(userConfig, bangerConfig string) (IncludeChange, error) {
	c := IncludeChange{UserConfig: userConfig, Include: bangerConfig, Uninstall: true}
	target, old, perm, err := readUserConfig(userConfig)
	if err != nil || old == nil {
		return c, err
	}
	rest := withoutInclude(old, bangerConfig)
	if len(rest) == len(old) {
		return c, nil
	}
	// Take away the blank line InstallInclude put after its lines, if it is still there.
	if len(old) >= 3 && strings.TrimSpace(old[0]) == includeMarker && isIncludeOf(old[1], bangerConfig) && old[2] == "" && len(rest) > 0 && rest[0] == "" {
		rest = rest[1:]
	}
	if err := writeFileAtomic(target, []byte(joinLines(rest)), perm); err != nil {
		return c, fmt.Errorf("ssh config: %w", err)
	}
	c.Changed = true
	return c, nil
}

// readUserConfig follows symlinks (dotfile managers link ~/.ssh/config) and returns the
// real file, its lines (nil when it does not exist) and the mode to write it back with.
func readUserConfig(path string) (target string, lines []string, perm os.FileMode, err error) {
	if !filepath.IsAbs(path) {
		return "", nil, 0, fmt.Errorf("ssh config path %q is not absolute", path)
	}
	target = path
	if t, err := filepath.EvalSymlinks(path); err == nil {
		target = t
	}
	st, err := os.Stat(target)
	if errors.Is(err, os.ErrNotExist) {
		return target, nil, 0o600, nil
	}
	if err != nil {
		return "", nil, 0, fmt.Errorf("ssh config %s: %w", path, err)
	}
	if !st.Mode().IsRegular() {
		return "", nil, 0, fmt.Errorf("ssh config %s is not a regular file", path)
	}
	b, err := os.ReadFile(target)
	if err != nil {
		return "", nil, 0, fmt.Errorf("ssh config %s: %w", path, err)
	}
	lines = []string{}
	if len(b) > 0 {
		lines = strings.Split(strings.TrimSuffix(string(b), "\n"), "\n")
	}
	return target, lines, st.Mode().Perm(), nil
}

// withoutInclude returns lines without the marker and any Include naming exactly p.
func withoutInclude(lines []string, p string) []string {
	out := []string{}
	for _, l := range lines {
		if strings.TrimSpace(l) == includeMarker || isIncludeOf(l, p) {
			continue
		}
		out = append(out, l)
	}
	return out
}

// isIncludeOf reports whether line is `Include p` (keyword in any case, '=' or spaces,
// the path quoted or not). Include lines naming several files are the user's and are left.
func isIncludeOf(line, p string) bool {
	t := strings.TrimSpace(line)
	if len(t) < len("include")+1 || !strings.EqualFold(t[:len("include")], "include") {
		return false
	}
	arg := strings.TrimLeft(t[len("include"):], " \t=")
	if arg == t[len("include"):] { // no separator: some other keyword
		return false
	}
	arg = strings.TrimSpace(arg)
	if unq, ok := strings.CutPrefix(arg, `"`); ok {
		unq, ok = strings.CutSuffix(unq, `"`)
		if !ok {
			return false
		}
		arg = unq
	}
	return arg == p
}

// checkIncludePath refuses paths Include would misread: relative ones (resolved against
// ~/.ssh), glob characters, and what a quoted argument cannot carry.
func checkIncludePath(p string) error {
	if err := checkConfigPath("banger ssh_config", p); err != nil {
		return err
	}
	if strings.ContainsAny(p, "*?[") {
		return fmt.Errorf("banger ssh_config path %q contains a glob character, which Include would expand: choose another banger root", p)
	}
	return nil
}

func joinLines(lines []string) string {
	if len(lines) == 0 {
		return ""
	}
	return strings.Join(lines, "\n") + "\n"
}
