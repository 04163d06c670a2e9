package system

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"time"
)

type procSpec struct {
	name   string
	bin    string
	args   []string
	log    string // log file, used when detached
	detach bool
	owner  *Owner // run as this user; nil: as the caller (root)
}

// proc is one started child and its exit.
type proc struct {
	name    string
	cmd     *exec.Cmd
	logPath string
	tail    *tailBuffer
	exited  chan struct{} // closed when the process has exited
	exitErr error         // valid after exited is closed
}

// startProc starts a child in its own session (so a terminal's ^C reaches only us and
// the child outlives a detached banger), logging to a file when detached and to our
// stderr otherwise, while keeping the last lines for error messages.
func startProc(ctx context.Context, s procSpec) (*proc, error) {
	p := &proc{name: s.name, logPath: s.log, tail: &tailBuffer{max: 4096}, exited: make(chan struct{})}
	cmd := exec.Command(s.bin, s.args...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	cmd.Env = []string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "LANG=C.UTF-8"}
	if s.owner != nil {
		cmd.SysProcAttr.Credential = &syscall.Credential{Uid: uint32(s.owner.UID), Gid: uint32(s.owner.GID)}
		cmd.Env = append(cmd.Env, "HOME="+s.owner.Home, "USER="+s.owner.Name)
	} else {
		cmd.Env = append(cmd.Env, "HOME=/root")
	}
	var sink io.Writer = os.Stderr
	if s.detach {
		f, err := os.OpenFile(s.log, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o640)
		if err != nil {
			return nil, fmt.Errorf("%s log: %w", s.name, err)
		}
		defer f.Close() // the child holds its own descriptor
		if s.owner != nil {
			_ = f.Chown(s.owner.UID, s.owner.GID)
		}
		sink = f
	}
	if s.detach {
		// A detached child must not hold a pipe to us: give it the file directly, and
		// read the tail back from the file if it fails to start.
		cmd.Stdout, cmd.Stderr = sink, sink
	} else {
		w := io.MultiWriter(sink, p.tail)
		cmd.Stdout, cmd.Stderr = w, w
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s (%s): %w", s.name, s.bin, err)
	}
	p.cmd = cmd
	go func() {
		p.exitErr = cmd.Wait()
		close(p.exited)
	}()
	return p, nil
}

// waitReady polls probe until it succeeds, the process exits, or timeout passes.
func (p *proc) waitReady(ctx context.Context, timeout time.Duration, probe func(context.Context) error) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	delay := 10 * time.Millisecond
	for {
		pctx, pcancel := context.WithTimeout(ctx, time.Second)
		err := probe(pctx)
		pcancel()
		if err == nil {
			return nil
		}
		select {
		case <-p.exited:
			return fmt.Errorf("%s exited during start-up (%v); its last output:\n%s", p.name, p.exitErr, p.lastOutput())
		case <-ctx.Done():
			return fmt.Errorf("%s did not become ready within %s (last probe: %v); its last output:\n%s", p.name, timeout, err, p.lastOutput())
		case <-time.After(delay):
		}
		delay = min(delay*2, 200*time.Millisecond)
	}
}

func (p *proc) lastOutput() string {
	out := p.tail.String()
	if out == "" && p.logPath != "" {
		if b, err := os.ReadFile(p.logPath); err == nil {
			if len(b) > 4096 {
				b = b[len(b)-4096:]
			}
			out = string(b)
		}
	}
	return indent(strings.TrimSpace(out))
}

// stop sends SIGTERM, waits up to timeout, then SIGKILLs.
func (p *proc) stop(timeout time.Duration) {
	select {
	case <-p.exited:
		return
	default:
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.exited:
	case <-time.After(timeout):
		_ = p.cmd.Process.Kill()
		<-p.exited
	}
}

func indent(s string) string {
	if s == "" {
		return "  (no output)"
	}
	return "  " + strings.ReplaceAll(s, "\n", "\n  ")
}

// tailBuffer keeps the last max bytes written to it.
type tailBuffer struct {
	max int
	mu  sync.Mutex // guards buf
	buf bytes.Buffer
}

func (t *tailBuffer) Write(b []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.buf.Write(b)
	if over := t.buf.Len() - t.max; over > 0 {
		t.buf.Next(over)
	}
	return len(b), nil
}

func (t *tailBuffer) String() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.buf.String()
}
