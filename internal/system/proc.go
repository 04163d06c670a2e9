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

	"banger/internal/termsafe"
)

type procSpec struct {
	name string
	// path is what is executed (for the helper, the /proc/self/fd path of the
	// binary trustfs pinned); argv0 is what the process sees as its name.
	path, argv0 string
	args        []string
	// log is the process's stdout and stderr when detached, opened (and checked)
	// by the caller, readable for the tail on a failed start; nil in the
	// foreground, where output goes to our stderr.
	log   *os.File
	owner *Owner // run as this user; nil: as the caller (root)
}

// proc is one started child and its exit.
type proc struct {
	name    string
	cmd     *exec.Cmd
	log     *os.File // the detached log, kept to read the tail from; nil in the foreground
	tail    *tailBuffer
	exited  chan struct{} // closed when the process has exited
	exitErr error         // valid after exited is closed
}

// startProc starts a child in its own session (so a terminal's ^C reaches only us and
// the child outlives a detached banger), logging to s.log when detached and to our
// stderr otherwise, while keeping the last lines for error messages.
func startProc(ctx context.Context, s procSpec) (*proc, error) {
	p := &proc{name: s.name, log: s.log, tail: &tailBuffer{max: 4096}, exited: make(chan struct{})}
	cmd := &exec.Cmd{Path: s.path, Args: append([]string{s.argv0}, s.args...)}
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	cmd.Env = []string{"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "LANG=C.UTF-8"}
	if s.owner != nil {
		// Groups is empty: root's supplementary groups are not passed on.
		cmd.SysProcAttr.Credential = &syscall.Credential{Uid: uint32(s.owner.UID), Gid: uint32(s.owner.GID), Groups: []uint32{}}
		cmd.Env = append(cmd.Env, "HOME="+s.owner.Home, "USER="+s.owner.Name)
	} else {
		cmd.Env = append(cmd.Env, "HOME=/root")
	}
	if s.log != nil {
		// A detached child must not hold a pipe to us: give it the file directly, and
		// read the tail back from the file if it fails to start.
		cmd.Stdout, cmd.Stderr = s.log, s.log
	} else {
		w := io.MultiWriter(os.Stderr, p.tail)
		cmd.Stdout, cmd.Stderr = w, w
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s (%s): %w", s.name, s.argv0, err)
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

// lastOutput is the end of what the process wrote, made safe for a terminal: it
// comes from a process root does not trust (bangerd is the owner's), so control
// characters and escape sequences are neutralised (termsafe). A detached log is read through
// the descriptor root opened, never by path.
func (p *proc) lastOutput() string {
	out := p.tail.String()
	if out == "" && p.log != nil {
		if st, err := p.log.Stat(); err == nil {
			off := max(st.Size()-4096, 0)
			b := make([]byte, st.Size()-off)
			n, _ := p.log.ReadAt(b, off)
			out = string(b[:n])
		}
	}
	return indent(strings.TrimSpace(termsafe.String(out)))
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
