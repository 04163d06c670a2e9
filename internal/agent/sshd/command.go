package sshd

import (
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"sync"
	"syscall"
	"time"

	"banger/internal/agent/users"

	"github.com/creack/pty"
)

// command prepares path/argv to run as the session's user, on a pty if one was
// requested, and returns the function that runs it.
func (ss *session) command(path string, argv []string) (func(context.Context) (int, syscall.Signal), error) {
	if err := ss.u.CheckSwitch(); err != nil {
		return nil, err
	}
	ss.mu.Lock()
	env := users.MergeEnv(ss.u.BaseEnv(), ss.env)
	ptyReq := ss.pty
	ss.mu.Unlock()
	if host, port, err := net.SplitHostPort(ss.conn.RemoteAddr().String()); err == nil {
		lhost, lport, _ := net.SplitHostPort(ss.conn.LocalAddr().String())
		env = append(env, fmt.Sprintf("SSH_CONNECTION=%s %s %s %s", host, port, lhost, lport))
	}
	if ptyReq != nil && ptyReq.Term != "" {
		env = users.MergeEnv(env, []string{"TERM=" + ptyReq.Term})
	}
	dir := "/"
	if st, err := os.Stat(ss.u.Home); err == nil && st.IsDir() {
		dir = ss.u.Home
	}
	cmd := &exec.Cmd{
		Path:        path,
		Args:        argv,
		Env:         env,
		Dir:         dir,
		SysProcAttr: &syscall.SysProcAttr{Credential: ss.u.Credential()},
	}
	if ptyReq != nil {
		return func(ctx context.Context) (int, syscall.Signal) { return ss.runPTY(ctx, cmd, ptyReq) }, nil
	}
	return func(ctx context.Context) (int, syscall.Signal) { return ss.runPipes(ctx, cmd) }, nil
}

func (ss *session) runPTY(ctx context.Context, cmd *exec.Cmd, req *ptyRequest) (int, syscall.Signal) {
	master, slave, err := pty.Open()
	if err != nil {
		return ss.startFailed(cmd, fmt.Errorf("open pty: %w", err))
	}
	defer master.Close()
	rows, cols := uint16(req.Rows), uint16(req.Cols)
	if rows == 0 || cols == 0 {
		rows, cols = 24, 80
	}
	_ = pty.Setsize(master, &pty.Winsize{Rows: rows, Cols: cols})
	cmd.Stdin, cmd.Stdout, cmd.Stderr = slave, slave, slave
	cmd.SysProcAttr.Setsid, cmd.SysProcAttr.Setctty = true, true
	ss.mu.Lock()
	ss.master = master
	ss.cmd = cmd
	err = cmd.Start()
	ss.mu.Unlock()
	slave.Close()
	if err != nil {
		return ss.startFailed(cmd, err)
	}
	go func() { _, _ = io.Copy(master, ss.ch) }() // keystrokes; ends with the channel
	out := make(chan struct{})
	go func() {
		defer close(out)
		_, _ = io.Copy(ss.ch, master) // ends with EIO once every holder of the slave is gone
	}()
	return ss.wait(ctx, cmd, out, []*os.File{master})
}

func (ss *session) runPipes(ctx context.Context, cmd *exec.Cmd) (int, syscall.Signal) {
	cmd.SysProcAttr.Setpgid = true
	stdinR, stdinW, err := os.Pipe()
	if err != nil {
		return ss.startFailed(cmd, err)
	}
	outR, outW, err := os.Pipe()
	if err != nil {
		stdinR.Close()
		stdinW.Close()
		return ss.startFailed(cmd, err)
	}
	errR, errW, err := os.Pipe()
	if err != nil {
		stdinR.Close()
		stdinW.Close()
		outR.Close()
		outW.Close()
		return ss.startFailed(cmd, err)
	}
	defer outR.Close()
	defer errR.Close()
	cmd.Stdin, cmd.Stdout, cmd.Stderr = stdinR, outW, errW
	ss.mu.Lock()
	ss.cmd = cmd
	err = cmd.Start()
	ss.mu.Unlock()
	stdinR.Close()
	outW.Close()
	errW.Close()
	if err != nil {
		stdinW.Close()
		return ss.startFailed(cmd, err)
	}
	go func() {
		_, _ = io.Copy(stdinW, ss.ch) // the client's EOF closes the command's stdin
		stdinW.Close()
	}()
	out := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); _, _ = io.Copy(ss.ch, outR) }()
	go func() { defer wg.Done(); _, _ = io.Copy(ss.ch.Stderr(), errR) }()
	go func() { wg.Wait(); close(out) }()
	return ss.wait(ctx, cmd, out, []*os.File{outR, errR})
}

// wait waits for cmd, then for its output to drain (cutting it after outputGrace),
// and returns its exit code or killing signal. ctx ending kills the command.
func (ss *session) wait(ctx context.Context, cmd *exec.Cmd, out <-chan struct{}, outputs []*os.File) (int, syscall.Signal) {
	stop := context.AfterFunc(ctx, func() { ss.signal(syscall.SIGKILL) })
	defer stop()
	_ = cmd.Wait()
	ss.mu.Lock()
	ss.exited = true
	ss.mu.Unlock()
	select {
	case <-out:
	case <-time.After(outputGrace):
		for _, f := range outputs {
			_ = f.SetReadDeadline(time.Now())
		}
		<-out
	}
	ws, _ := cmd.ProcessState.Sys().(syscall.WaitStatus)
	if ws.Signaled() {
		return 128 + int(ws.Signal()), ws.Signal()
	}
	return ws.ExitStatus(), 0
}

func (ss *session) startFailed(cmd *exec.Cmd, err error) (int, syscall.Signal) {
	ss.s.log.Info("ssh command failed to start", "user", ss.u.Name, "path", cmd.Path, "err", err)
	fmt.Fprintf(ss.ch.Stderr(), "banger-agent: cannot run %s: %v\r\n", cmd.Path, err)
	return 127, 0
}
