// Package blockdev does the kernel work behind banger's copy-on-write root disks:
// loop devices (attach, detach, list), device-mapper tables and growing an ext4
// filesystem. Every function here needs root for block devices, so in production
// they run inside banger-helper; bangerd reaches them only through the small
// interface that internal/disk defines (disk.BlockOps), which Local implements by
// calling these functions in-process.
//
// Loop devices go through ioctls on /dev/loop-control and /dev/loopN
// (golang.org/x/sys/unix) and are listed from sysfs. device-mapper has no library
// we can use, so it goes through the dmsetup command, whose output is carried in
// every error. e2fsprogs (e2fsck, resize2fs) likewise.
package blockdev

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os/exec"
	"strings"
)

// Local performs the operations in this process. It is what banger-helper runs, and
// what tests running as root use directly. The zero value is ready to use.
type Local struct{}

// LoopAttach calls LoopAttach.
func (Local) LoopAttach(ctx context.Context, path string, readOnly bool) (string, error) {
	return LoopAttach(ctx, path, readOnly)
}

// LoopDetach calls LoopDetach.
func (Local) LoopDetach(ctx context.Context, dev string) error { return LoopDetach(ctx, dev) }

// LoopList calls LoopList.
func (Local) LoopList(ctx context.Context) ([]Loop, error) { return LoopList(ctx) }

// DMAvailable calls DMAvailable.
func (Local) DMAvailable(ctx context.Context) error { return DMAvailable(ctx) }

// DMCreate calls DMCreate.
func (Local) DMCreate(ctx context.Context, name, table string) (string, error) {
	return DMCreate(ctx, name, table)
}

// DMRemove calls DMRemove.
func (Local) DMRemove(ctx context.Context, name string) error { return DMRemove(ctx, name) }

// DMList calls DMList.
func (Local) DMList(ctx context.Context) ([]string, error) { return DMList(ctx) }

// GrowExt4 calls GrowExt4.
func (Local) GrowExt4(ctx context.Context, path string) error { return GrowExt4(ctx, path) }

// run executes a tool that has no library and returns its combined output; a failure
// carries the command line and that output, so the user sees what the tool said.
func run(ctx context.Context, stdin string, name string, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, name, args...)
	if stdin != "" {
		cmd.Stdin = strings.NewReader(stdin)
	}
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	if err != nil {
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			return out.String(), &CommandError{Args: append([]string{name}, args...), ExitCode: ee.ExitCode(), Output: strings.TrimSpace(out.String())}
		}
		return out.String(), fmt.Errorf("%s: %w", name, err)
	}
	return out.String(), nil
}

// CommandError is a tool that ran and failed.
type CommandError struct {
	Args     []string
	ExitCode int
	Output   string
}

// maxErrorLines bounds how much of a tool's output an error message carries: enough
// for the tool's own diagnosis (its first lines), not its whole advice page.
const maxErrorLines = 4

func (e *CommandError) Error() string {
	msg := fmt.Sprintf("%s: exit status %d", strings.Join(e.Args, " "), e.ExitCode)
	if e.Output == "" {
		return msg
	}
	lines := strings.Split(e.Output, "\n")
	if len(lines) > maxErrorLines {
		lines = append(lines[:maxErrorLines], fmt.Sprintf("(%d more lines)", len(lines)-maxErrorLines))
	}
	return msg + ": " + strings.Join(lines, "; ")
}
