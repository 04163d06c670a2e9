package ext4

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path"
	"strconv"
	"strings"
)

// maxScriptLine keeps every script line well inside debugfs's line buffer
// (BUFSIZ, 8192 bytes, with the newline). A longer line would be read as
// two, and the second half run as a command of its own.
const maxScriptLine = 8000

// script builds a debugfs command file. debugfs reads it line by line and
// splits each line into words at spaces and tabs, with "..." quoting and ""
// for a quote inside quotes, and no other escapes. So every argument is
// quoted, and an argument holding a newline, carriage return or NUL (which
// would end the line, or truncate it) is refused, as is an over-long line:
// no name from an image can inject a command.
type script struct {
	b   bytes.Buffer
	err error  // first refused argument; the script must not run
	cwd string // the debugfs working directory after the commands so far
}

// quote renders one argument for debugfs.
func quote(arg string) string {
	return `"` + strings.ReplaceAll(arg, `"`, `""`) + `"`
}

// add appends one command. cmd is a fixed debugfs request name; args may
// come from an image.
func (s *script) add(cmd string, args ...string) {
	if s.err != nil {
		return
	}
	line := cmd
	for _, a := range args {
		if strings.ContainsAny(a, "\x00\n\r") {
			s.err = fmt.Errorf("debugfs argument %q holds a NUL, newline or carriage return", a)
			return
		}
		line += " " + quote(a)
	}
	if len(line) > maxScriptLine {
		s.err = fmt.Errorf("debugfs command for %.60q... is %d bytes, longer than %d", args[0], len(line), maxScriptLine)
		return
	}
	s.b.WriteString(line)
	s.b.WriteByte('\n')
}

// cd changes the debugfs working directory if needed. Commands that take a
// bare name in the working directory (mknod, symlink, ln's new name) are the
// only ones that do not resolve paths, so they run after a cd.
func (s *script) cd(dir string) {
	if s.cwd == dir {
		return
	}
	s.add("cd", dir)
	s.cwd = dir
}

// setInode emits set_inode_field for one field. Paths are always absolute,
// so a name like "<12>" (debugfs's syntax for an inode number) or "-f" is
// never mistaken for anything but a name.
func (s *script) setInode(p, field string, value uint64, octal bool) {
	v := strconv.FormatUint(value, 10)
	if octal {
		v = "0" + strconv.FormatUint(value, 8)
	}
	s.add("set_inode_field", p, field, v)
}

// mknod creates a device node or fifo named base in the working directory.
// debugfs's mknod accepts majors and minors up to 65535 and encodes them as
// the kernel does; a larger minor is written straight into the inode in the
// kernel's "new" encoding (i_block[1]).
func (s *script) mknod(dir, base string, typ byte, major, minor uint32) {
	s.cd(dir)
	if typ == 'p' {
		s.add("mknod", base, "p")
		return
	}
	if major <= 65535 && minor <= 65535 {
		s.add("mknod", base, string(typ), strconv.FormatUint(uint64(major), 10), strconv.FormatUint(uint64(minor), 10))
		return
	}
	s.add("mknod", base, string(typ), "0", "0")
	newEnc := uint64(minor&0xff) | uint64(major&0xfff)<<8 | uint64(minor&^0xff)<<12
	s.setInode(path.Join(dir, base), "block[0]", 0, false)
	s.setInode(path.Join(dir, base), "block[1]", newEnc, false)
}

// runScript runs the script against the image, read-write. debugfs reports a
// failed command on stderr and carries on with exit status 0, so any stderr
// line other than its version banner fails the run: the generated scripts
// contain no command that is expected to fail.
func runScript(ctx context.Context, tools Tools, scratch, image string, s *script) error {
	if s.err != nil {
		return s.err
	}
	f, err := os.CreateTemp(scratch, "debugfs-*.cmds")
	if err != nil {
		return fmt.Errorf("debugfs script: %w", err)
	}
	name := f.Name()
	defer os.Remove(name)
	if _, err := f.Write(s.b.Bytes()); err != nil {
		f.Close()
		return fmt.Errorf("debugfs script: %w", err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("debugfs script: %w", err)
	}
	_, stderr, err := run(ctx, nil, tools.Debugfs, "-w", "-f", name, image)
	if err != nil {
		return err
	}
	if msg := debugfsErrors(stderr); msg != "" {
		err := fmt.Errorf("debugfs on %s: %s", image, msg)
		if strings.Contains(msg, "Could not allocate") || strings.Contains(msg, "No free space") ||
			strings.Contains(msg, "No space for") || strings.Contains(msg, "Ran out of") {
			err = fmt.Errorf("%w: %w", ErrImageFull, err)
		}
		return err
	}
	return nil
}

// debugfsErrors returns stderr without debugfs's version banner.
func debugfsErrors(stderr []byte) string {
	var out []string
	for _, l := range strings.Split(strings.TrimSpace(string(stderr)), "\n") {
		if l == "" || strings.HasPrefix(l, "debugfs ") && strings.Contains(l, "(") {
			continue
		}
		out = append(out, l)
	}
	if len(out) > 20 {
		out = append(out[:20], fmt.Sprintf("... and %d more lines", len(out)-20))
	}
	return strings.Join(out, "; ")
}

// query runs one read-only debugfs request and returns its output. A
// request naming a missing path returns os.ErrNotExist.
func query(ctx context.Context, tools Tools, image, cmd string, args ...string) ([]byte, error) {
	var s script
	s.add(cmd, args...)
	if s.err != nil {
		return nil, s.err
	}
	req := strings.TrimSuffix(s.b.String(), "\n")
	out, stderr, err := run(ctx, nil, tools.Debugfs, "-R", req, image)
	if err != nil {
		return nil, err
	}
	if msg := debugfsErrors(stderr); msg != "" {
		if strings.Contains(msg, "File not found") {
			return nil, fmt.Errorf("%s in %s: %w", strings.Join(args, " "), image, os.ErrNotExist)
		}
		if strings.Contains(msg, "Bad magic number") || strings.Contains(msg, "superblock") {
			return nil, fmt.Errorf("%s: %w: %s", image, ErrNotExt4, msg)
		}
		return nil, errors.New("debugfs " + req + ": " + msg)
	}
	return out, nil
}
