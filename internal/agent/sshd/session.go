package sshd

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"syscall"
	"time"

	"banger/internal/agent/users"

	"github.com/creack/pty"
	"github.com/pkg/sftp"
	"golang.org/x/crypto/ssh"
	"golang.org/x/sys/unix"
)

// outputGrace is how long output is still forwarded after the command exits, for
// children it left behind holding its stdout.
const outputGrace = 2 * time.Second

// RFC 4254 request payloads.
type (
	envRequest struct {
		Name, Value string
	}
	ptyRequest struct {
		Term                      string
		Cols, Rows, Width, Height uint32
		Modes                     string
	}
	windowChange struct {
		Cols, Rows, Width, Height uint32
	}
	execRequest struct {
		Command string
	}
	subsystemRequest struct {
		Name string
	}
	signalRequest struct {
		Signal string
	}
	exitStatusMsg struct {
		Status uint32
	}
	exitSignalMsg struct {
		Signal     string
		CoreDumped bool
		Error      string
		Lang       string
	}
)

// session is one "session" channel: at most one command, and the requests that
// configure it before (env, pty-req) and steer it after (window-change, signal).
type session struct {
	s    *Server
	conn *ssh.ServerConn
	u    users.User
	ch   ssh.Channel

	mu      sync.Mutex // guards all following fields
	env     []string
	pty     *ptyRequest
	master  *os.File  // pty master once a command runs on a pty
	cmd     *exec.Cmd // the running command, nil before start and for in-process sftp
	started bool
	exited  bool
}

func (s *Server) serveSession(ctx context.Context, conn *ssh.ServerConn, u users.User, nc ssh.NewChannel) {
	ch, reqs, err := nc.Accept()
	if err != nil {
		s.log.Info("ssh accept session", "err", err)
		return
	}
	defer ch.Close()
	ss := &session{s: s, conn: conn, u: u, ch: ch}
	var wg sync.WaitGroup
	defer wg.Wait()
	for req := range reqs {
		ok := ss.handle(ctx, req, &wg)
		if req.WantReply {
			_ = req.Reply(ok, nil)
		}
	}
	// the client closed the channel: a command still running has lost its terminal
	ss.signal(syscall.SIGHUP)
}

func (ss *session) handle(ctx context.Context, req *ssh.Request, wg *sync.WaitGroup) bool {
	switch req.Type {
	case "env":
		var r envRequest
		if ssh.Unmarshal(req.Payload, &r) != nil {
			return false
		}
		ss.mu.Lock()
		ss.env = append(ss.env, r.Name+"="+r.Value)
		ss.mu.Unlock()
		return true
	case "pty-req":
		var r ptyRequest
		if ssh.Unmarshal(req.Payload, &r) != nil {
			return false
		}
		ss.mu.Lock()
		defer ss.mu.Unlock()
		ss.pty = &r
		return !ss.started
	case "window-change":
		var r windowChange
		if ssh.Unmarshal(req.Payload, &r) != nil {
			return false
		}
		ss.mu.Lock()
		defer ss.mu.Unlock()
		if ss.pty != nil {
			ss.pty.Cols, ss.pty.Rows = r.Cols, r.Rows
		}
		if ss.master != nil {
			return pty.Setsize(ss.master, &pty.Winsize{Rows: uint16(r.Rows), Cols: uint16(r.Cols)}) == nil
		}
		return true
	case "signal":
		var r signalRequest
		if ssh.Unmarshal(req.Payload, &r) != nil {
			return false
		}
		sig := unix.SignalNum("SIG" + r.Signal)
		if sig == 0 {
			return false
		}
		ss.signal(sig)
		return true
	case "shell", "exec", "subsystem":
		ss.mu.Lock()
		if ss.started {
			ss.mu.Unlock()
			return false
		}
		ss.started = true
		ss.mu.Unlock()
		run, err := ss.prepare(req)
		if err != nil {
			ss.s.log.Info("ssh session refused", "user", ss.u.Name, "request", req.Type, "err", err)
			fmt.Fprintf(ss.ch.Stderr(), "banger-agent: %v\r\n", err)
			return false
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			code, sig := run(ctx)
			ss.finish(code, sig)
		}()
		return true
	default:
		// x11-req, auth-agent-req@openssh.com and the like
		return false
	}
}

// prepare validates a shell/exec/subsystem request and returns the function that
// runs it to completion (exit code, or the signal that killed it).
func (ss *session) prepare(req *ssh.Request) (func(context.Context) (int, syscall.Signal), error) {
	shell := ss.u.ShellOrDefault()
	switch req.Type {
	case "shell":
		// a login shell: argv[0] starts with "-", as login(1) and sshd do it
		return ss.command(shell, []string{"-" + filepath.Base(shell)})
	case "exec":
		var r execRequest
		if err := ssh.Unmarshal(req.Payload, &r); err != nil {
			return nil, fmt.Errorf("malformed exec request: %w", err)
		}
		return ss.command(shell, []string{filepath.Base(shell), "-c", r.Command})
	default:
		var r subsystemRequest
		if err := ssh.Unmarshal(req.Payload, &r); err != nil {
			return nil, fmt.Errorf("malformed subsystem request: %w", err)
		}
		if r.Name != "sftp" {
			return nil, fmt.Errorf("subsystem %q is not supported (only sftp)", r.Name)
		}
		if uint32(os.Geteuid()) == ss.u.UID {
			return ss.sftpInProcess, nil
		}
		if len(ss.s.cfg.SFTPHelper) == 0 {
			return nil, fmt.Errorf("sftp for user %s needs the agent's sftp-server helper, which is not configured", ss.u.Name)
		}
		ss.mu.Lock()
		ss.pty = nil // the sftp protocol needs a clean binary stream
		ss.mu.Unlock()
		return ss.command(ss.s.cfg.SFTPHelper[0], ss.s.cfg.SFTPHelper)
	}
}

func (ss *session) sftpInProcess(context.Context) (int, syscall.Signal) {
	home := ss.u.Home
	if st, err := os.Stat(home); err != nil || !st.IsDir() {
		home = "/"
	}
	srv, err := sftp.NewServer(ss.ch, sftp.WithServerWorkingDirectory(home))
	if err != nil {
		ss.s.log.Info("sftp start", "err", err)
		return 1, 0
	}
	if err := srv.Serve(); err != nil && !errors.Is(err, io.EOF) {
		ss.s.log.Info("sftp session ended", "user", ss.u.Name, "err", err)
	}
	return 0, 0
}

// finish reports how the command ended and closes the channel, in the order
// OpenSSH's sshd uses: EOF, exit-status (or exit-signal), close.
func (ss *session) finish(code int, sig syscall.Signal) {
	_ = ss.ch.CloseWrite()
	if sig != 0 {
		name := unix.SignalName(sig)
		if len(name) > 3 {
			name = name[3:] // RFC 4254 names signals without "SIG"
		}
		_, _ = ss.ch.SendRequest("exit-signal", false, ssh.Marshal(exitSignalMsg{Signal: name}))
	} else {
		_, _ = ss.ch.SendRequest("exit-status", false, ssh.Marshal(exitStatusMsg{Status: uint32(code)}))
	}
	_ = ss.ch.Close()
}

// signal sends sig to the running command's process group, if any.
func (ss *session) signal(sig syscall.Signal) {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	if ss.cmd == nil || ss.cmd.Process == nil || ss.exited {
		return
	}
	_ = syscall.Kill(-ss.cmd.Process.Pid, sig)
}
