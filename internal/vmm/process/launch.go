// Package process holds the process primitives the VMM drivers share: launching
// a VMM detached so that it outlives bangerd, naming a process unambiguously
// (PID and start time) so that a reused PID is never mistaken for it, waiting
// for the exit of a process that is not our child, and signalling it.
//
// A VMM is bangerd's child only until bangerd restarts; after that it is a
// stranger found again by its Handle. So everything here except Launch works on
// a Ref (PID + start time) and makes no difference between the two cases.
package process

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"syscall"
)

// LaunchSpec is a process to start detached.
type LaunchSpec struct {
	Path string   // the executable, looked up in PATH when it has no slash
	Args []string // arguments, without argv[0]
	Env  []string // nil inherits ours
	Dir  string   // "" for ours
	// LogPath receives stdout and stderr (created, truncated). It must be a file,
	// never a pipe to us: a pipe would end, or block the VMM, when bangerd goes
	// away. "" sends both to /dev/null.
	LogPath string
	// Output, when set, receives stdout and stderr instead of LogPath: the write
	// end of a pipe to a process that outlives bangerd as the child does (a
	// console logger). The caller keeps its copy and should close it after Launch.
	Output *os.File
	// ExtraFiles are inherited as fds 3, 4, ... (listening sockets, taps). The
	// caller keeps ownership of its copies and should close them after Launch.
	ExtraFiles []*os.File
}

// Child is a process started by Launch. Its exit status is collected by a
// goroutine as long as we are its parent, so it never lingers as a zombie while
// bangerd runs; after a bangerd restart whoever inherits it reaps it.
type Child struct {
	ref  Ref
	done chan struct{}
	err  error // cmd.Wait's result; written once before done is closed
}

// Launch starts a process in its own session (setsid: no controlling terminal,
// out of bangerd's process group, so neither a terminal's signals nor the end of
// bangerd's session reach it), stdin on /dev/null and its output in LogPath. It
// returns as soon as the process runs; nothing ties it to a context.
func Launch(s LaunchSpec) (*Child, error) {
	path := s.Path
	if !strings.Contains(path, "/") {
		p, err := exec.LookPath(path)
		if err != nil {
			return nil, fmt.Errorf("start %s: %w", s.Path, err)
		}
		path = p
	}
	out := s.Output
	if out == nil {
		f, err := openLog(s.LogPath)
		if err != nil {
			return nil, err
		}
		// Our copy is closed once the child has its own.
		defer f.Close()
		out = f
	}
	cmd := &exec.Cmd{
		Path:        path,
		Args:        append([]string{s.Path}, s.Args...),
		Env:         s.Env,
		Dir:         s.Dir,
		Stdin:       nil, // os/exec opens /dev/null
		Stdout:      out, // an *os.File is handed over as is: no pipe, no goroutine
		Stderr:      out,
		ExtraFiles:  s.ExtraFiles,
		SysProcAttr: &syscall.SysProcAttr{Setsid: true},
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", s.Path, err)
	}
	// The start time is read before anything can reap the process: until
	// cmd.Wait runs, its PID stays its own (a zombie at worst, which reads as
	// start 0 and a Ref that is never alive), so no other process can have
	// taken it in between.
	start, _ := startTime(cmd.Process.Pid)
	c := &Child{ref: Ref{PID: cmd.Process.Pid, Start: start}, done: make(chan struct{})}
	go func() {
		c.err = cmd.Wait()
		close(c.done)
	}()
	return c, nil
}

func openLog(path string) (*os.File, error) {
	if path == "" {
		f, err := os.OpenFile(os.DevNull, os.O_WRONLY, 0)
		if err != nil {
			return nil, fmt.Errorf("open %s: %w", os.DevNull, err)
		}
		return f, nil
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_TRUNC|os.O_APPEND, 0o640)
	if err != nil {
		return nil, fmt.Errorf("process log: %w", err)
	}
	return f, nil
}

// Ref names the process: its PID and start time.
func (c *Child) Ref() Ref { return c.ref }

// PID is the process id.
func (c *Child) PID() int { return c.ref.PID }

// Done is closed once the process has exited and been reaped.
func (c *Child) Done() <-chan struct{} { return c.done }

// ExitErr is how the process ended, once Done is closed: nil for exit 0, an
// *exec.ExitError otherwise. Before that it is ErrRunning.
func (c *Child) ExitErr() error {
	select {
	case <-c.done:
		return c.err
	default:
		return ErrRunning
	}
}

// ErrRunning is ExitErr's answer while the process runs.
var ErrRunning = errors.New("process: still running")
