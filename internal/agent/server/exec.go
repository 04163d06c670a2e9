package server

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"banger/internal/agent/proto"
	"banger/internal/agent/users"

	"golang.org/x/sys/unix"
)

// outputGrace is how long output is still forwarded after the process exits, for
// children it left behind holding its stdout. Past it, the pipes are cut.
const outputGrace = 2 * time.Second

// process is the state shared by an exec's goroutines.
type process struct {
	cmd *exec.Cmd

	mu     sync.Mutex // guards exited: no signal is sent to a reaped (and maybe reused) pid
	exited bool

	stdin  *os.File // pipe write end or pty master; nil without stdin
	tty    *os.File // pty master when TTY
	ttyEOF bool     // stdin EOF on a pty is delivered as the terminal's EOF character
}

// signal sends sig to the process group (every command is its own group leader).
func (p *process) signal(sig syscall.Signal) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.exited {
		return nil
	}
	if err := syscall.Kill(-p.cmd.Process.Pid, sig); err != nil && !errors.Is(err, syscall.ESRCH) {
		return fmt.Errorf("signal %s to process group %d: %w", unix.SignalName(sig), p.cmd.Process.Pid, err)
	}
	return nil
}

func (s *Server) exec(ctx context.Context, c *call) error {
	var a proto.ExecArgs
	if err := c.decode(&a); err != nil {
		return err
	}
	cmd, err := s.buildCommand(a)
	if err != nil {
		return err
	}
	p := &process{cmd: cmd}
	var outputs []*os.File // read ends the host is fed from, in frame-type order below
	var outTypes []proto.FrameType
	var childEnds []*os.File // closed in the agent once the child has them
	closeAll := func(fs []*os.File) {
		for _, f := range fs {
			f.Close()
		}
	}

	if a.TTY {
		master, slave, err := openPTY()
		if err != nil {
			return fmt.Errorf("exec %q: open pty: %w", a.Argv[0], err)
		}
		rows, cols := a.Rows, a.Cols
		if rows == 0 || cols == 0 {
			rows, cols = 24, 80
		}
		if err := setPTYSize(master, rows, cols); err != nil {
			master.Close()
			slave.Close()
			return fmt.Errorf("exec %q: set pty size: %w", a.Argv[0], err)
		}
		cmd.Stdin, cmd.Stdout, cmd.Stderr = slave, slave, slave
		cmd.SysProcAttr.Setsid = true
		cmd.SysProcAttr.Setctty = true
		cmd.SysProcAttr.Ctty = 0
		p.tty = master
		if a.Stdin {
			p.stdin, p.ttyEOF = master, true
		}
		outputs, outTypes = []*os.File{master}, []proto.FrameType{proto.FrameStdout}
		childEnds = []*os.File{slave}
	} else {
		cmd.SysProcAttr.Setpgid = true
		if a.Stdin {
			r, w, err := os.Pipe()
			if err != nil {
				return fmt.Errorf("exec %q: stdin pipe: %w", a.Argv[0], err)
			}
			cmd.Stdin, p.stdin = r, w
			childEnds = append(childEnds, r)
		}
		for _, t := range []proto.FrameType{proto.FrameStdout, proto.FrameStderr} {
			r, w, err := os.Pipe()
			if err != nil {
				closeAll(childEnds)
				closeAll(outputs)
				return fmt.Errorf("exec %q: output pipe: %w", a.Argv[0], err)
			}
			if t == proto.FrameStdout {
				cmd.Stdout = w
			} else {
				cmd.Stderr = w
			}
			outputs, outTypes = append(outputs, r), append(outTypes, t)
			childEnds = append(childEnds, w)
		}
	}
	defer closeAll(outputs)
	if p.stdin != nil && p.stdin != p.tty {
		defer p.stdin.Close()
	}

	err = cmd.Start()
	closeAll(childEnds) // the child holds its own copies; ours would keep EOF from coming
	if err != nil {
		return proto.Errorf(proto.CodeInternal, "exec %q: %v", a.Argv[0], err)
	}
	if err := c.respond(proto.ExecStarted{PID: cmd.Process.Pid}); err != nil {
		_ = p.signal(syscall.SIGKILL)
		_ = cmd.Wait()
		return err
	}

	var pumps sync.WaitGroup
	for i, f := range outputs {
		pumps.Add(1)
		go func() {
			defer pumps.Done()
			pumpOutput(f, c.conn.DataWriter(outTypes[i]), func() { _ = p.signal(syscall.SIGKILL) })
		}()
	}
	inputDone := make(chan struct{})
	go func() {
		defer close(inputDone)
		s.pumpInput(ctx, c, p)
	}()

	waitErr := cmd.Wait()
	p.mu.Lock()
	p.exited = true
	p.mu.Unlock()

	// forward what is still buffered; cut the pipes if something else holds them
	done := make(chan struct{})
	go func() { pumps.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(outputGrace):
		for _, f := range outputs {
			_ = f.SetReadDeadline(time.Now())
		}
		<-done
	}

	st, err := exitStatus(cmd, waitErr)
	if err != nil {
		return err
	}
	werr := c.conn.WriteJSON(proto.FrameExit, st)
	// the host closes its side after the exit frame; a host that does not must not
	// keep the input goroutine alive
	_ = c.stream.SetReadDeadline(time.Now().Add(5 * time.Second))
	<-inputDone
	return werr
}

// buildCommand resolves the user, environment, directory and executable of a.
func (s *Server) buildCommand(a proto.ExecArgs) (*exec.Cmd, error) {
	if len(a.Argv) == 0 || a.Argv[0] == "" {
		return nil, proto.Errorf(proto.CodeBadRequest, "exec: argv is empty: name the program to run")
	}
	var u users.User
	var err error
	if a.User == "" {
		u, err = s.cfg.Users.LookupUID(uint32(os.Geteuid()))
		if err != nil {
			// the agent's own user need not be in passwd (tests, minimal images)
			u = users.User{Name: strconv.Itoa(os.Geteuid()), UID: uint32(os.Geteuid()), GID: uint32(os.Getegid()), Home: "/"}
		}
	} else {
		u, err = s.cfg.Users.Lookup(a.User)
		if err != nil {
			if errors.Is(err, users.ErrUnknownUser) {
				return nil, proto.Errorf(proto.CodeNotFound, "exec: %v", err)
			}
			return nil, fmt.Errorf("exec: %w", err)
		}
		if err := u.CheckSwitch(); err != nil {
			return nil, proto.Errorf(proto.CodePermission, "exec: %v", err)
		}
	}
	env := users.MergeEnv(u.BaseEnv(), a.Env)
	for _, kv := range a.Env {
		if !strings.Contains(kv, "=") {
			return nil, proto.Errorf(proto.CodeBadRequest, "exec: environment entry %q is not KEY=VALUE", kv)
		}
	}
	dir := a.Dir
	if dir == "" {
		dir = "/"
		if st, err := os.Stat(u.Home); err == nil && st.IsDir() {
			dir = u.Home
		}
	} else if st, err := os.Stat(dir); err != nil || !st.IsDir() {
		return nil, proto.Errorf(proto.CodeNotFound, "exec: working directory %q does not exist or is not a directory", dir)
	}
	path, err := users.LookPath(a.Argv[0], env)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil, proto.Errorf(proto.CodeNotFound, "exec: %v", err)
		}
		return nil, proto.Errorf(proto.CodePermission, "exec: %v", err)
	}
	return &exec.Cmd{
		Path:        path,
		Args:        a.Argv,
		Env:         env,
		Dir:         dir,
		SysProcAttr: &syscall.SysProcAttr{Credential: u.Credential()},
	}, nil
}

// pumpOutput copies f to w until EOF. A pty master reports the end with EIO. When
// the host can no longer be written to, onHostGone kills the process group: its
// output has nowhere to go.
func pumpOutput(f *os.File, w io.Writer, onHostGone func()) {
	buf := make([]byte, proto.DataChunkSize)
	for {
		n, err := f.Read(buf)
		if n > 0 {
			if _, werr := w.Write(buf[:n]); werr != nil {
				onHostGone()
				return
			}
		}
		if err != nil {
			return // EOF, EIO from a pty, or the deadline set after the grace period
		}
	}
}

// pumpInput applies the host's frames (stdin, resize, signals) until the host
// closes its side or the stream fails. A host that goes away before the process
// exits has abandoned it: the process group is killed.
func (s *Server) pumpInput(ctx context.Context, c *call, p *process) {
	stop := context.AfterFunc(ctx, func() { _ = p.signal(syscall.SIGKILL) })
	defer stop()
	for {
		f, err := c.conn.ReadFrame()
		if err != nil {
			p.mu.Lock()
			exited := p.exited
			p.mu.Unlock()
			if !exited {
				if errors.Is(err, io.EOF) || !isTimeout(err) {
					s.log.Info("host left a running exec; killing it", "pid", p.cmd.Process.Pid, "err", err)
					_ = p.signal(syscall.SIGKILL)
				}
			}
			return
		}
		if err := s.applyInput(p, f); err != nil {
			// a bad frame ends this exec, loudly: the host is out of step with us
			s.log.Info("bad exec input frame; killing the process", "pid", p.cmd.Process.Pid, "err", err)
			_ = p.signal(syscall.SIGKILL)
			return
		}
	}
}

func (s *Server) applyInput(p *process, f proto.Frame) error {
	switch f.Type {
	case proto.FrameStdin:
		if p.stdin == nil {
			return proto.Errorf(proto.CodeBadRequest, "stdin frame for an exec started without stdin")
		}
		if _, err := p.stdin.Write(f.Payload); err != nil {
			// the process closed its stdin or exited; like a pipe, drop the rest
			s.log.Debug("exec stdin write", "err", err)
		}
	case proto.FrameStdinEOF:
		if p.stdin == nil {
			return nil
		}
		if p.ttyEOF {
			_, _ = p.stdin.Write([]byte{4}) // ^D: EOF for a terminal in canonical mode
			return nil
		}
		return p.stdin.Close()
	case proto.FrameResize:
		var r proto.Resize
		if err := proto.DecodeJSON(f, &r); err != nil {
			return err
		}
		if p.tty == nil {
			return nil // no terminal to resize; not an error, hosts resize blindly
		}
		if err := setPTYSize(p.tty, r.Rows, r.Cols); err != nil {
			return fmt.Errorf("resize pty: %w", err)
		}
	case proto.FrameSignal:
		var sg proto.Signal
		if err := proto.DecodeJSON(f, &sg); err != nil {
			return err
		}
		sig, err := ParseSignal(sg.Signal)
		if err != nil {
			return err
		}
		return p.signal(sig)
	default:
		return proto.Errorf(proto.CodeBadRequest, "unexpected %s frame during exec", f.Type)
	}
	return nil
}

// ParseSignal accepts "TERM", "SIGTERM" or "15".
func ParseSignal(s string) (syscall.Signal, error) {
	if n, err := strconv.Atoi(s); err == nil {
		if n <= 0 || n > 64 {
			return 0, proto.Errorf(proto.CodeBadRequest, "signal number %d out of range 1-64", n)
		}
		return syscall.Signal(n), nil
	}
	name := strings.ToUpper(s)
	if !strings.HasPrefix(name, "SIG") {
		name = "SIG" + name
	}
	sig := unix.SignalNum(name)
	if sig == 0 {
		return 0, proto.Errorf(proto.CodeBadRequest, "unknown signal %q", s)
	}
	return sig, nil
}

func exitStatus(cmd *exec.Cmd, waitErr error) (proto.ExitStatus, error) {
	if cmd.ProcessState == nil {
		return proto.ExitStatus{}, fmt.Errorf("wait for pid %d: %w", cmd.Process.Pid, waitErr)
	}
	ws, ok := cmd.ProcessState.Sys().(syscall.WaitStatus)
	if !ok {
		return proto.ExitStatus{Code: cmd.ProcessState.ExitCode()}, nil
	}
	if ws.Signaled() {
		return proto.ExitStatus{Code: 128 + int(ws.Signal()), Signal: unix.SignalName(ws.Signal())}, nil
	}
	return proto.ExitStatus{Code: ws.ExitStatus()}, nil
}

func isTimeout(err error) bool {
	var te interface{ Timeout() bool }
	return errors.As(err, &te) && te.Timeout()
}
