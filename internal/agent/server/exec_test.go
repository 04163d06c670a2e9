package server_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"banger/internal/agent/client"
	"banger/internal/agent/proto"
	"banger/internal/agent/server"
)

func TestHealth(t *testing.T) {
	phases := []proto.BootPhase{{Name: "mount", Duration: 3 * time.Millisecond}, {Name: "network", Duration: time.Millisecond, Error: "no eth0"}}
	c := newAgent(t, server.Config{Version: "v9.9.9", PID1: true, BootPhases: func() []proto.BootPhase { return phases }})
	if got, want := c.AgentVersion(), "v9.9.9"; got != want {
		t.Errorf("handshake version: got %q, want %q", got, want)
	}
	h, err := c.Health(ctxT(t))
	if err != nil {
		t.Fatalf("Health: %v", err)
	}
	if h.Version != "v9.9.9" || !h.PID1 || h.Uptime <= 0 {
		t.Errorf("health: got %+v, want version v9.9.9, pid1, positive uptime", h)
	}
	if len(h.Boot) != 2 || h.Boot[1] != phases[1] {
		t.Errorf("boot phases: got %+v, want %+v", h.Boot, phases)
	}
}

func TestExecStreamsAndExitCodes(t *testing.T) {
	c := newAgent(t, server.Config{})
	tests := []struct {
		name             string
		req              client.ExecRequest
		wantOut, wantErr string
		wantCode         int
		wantSignal       string
	}{
		{"separate streams", client.ExecRequest{Argv: []string{"sh", "-c", "echo out; echo err >&2; exit 3"}}, "out\n", "err\n", 3, ""},
		{"success", client.ExecRequest{Argv: []string{"true"}}, "", "", 0, ""},
		{"env and dir", client.ExecRequest{Argv: []string{"sh", "-c", `echo "$FOO $PWD"`}, Env: []string{"FOO=bar"}, Dir: "/tmp"}, "bar /tmp\n", "", 0, ""},
		{"killed by signal", client.ExecRequest{Argv: []string{"sh", "-c", "kill -USR1 $$"}}, "", "", 128 + int(syscall.SIGUSR1), "SIGUSR1"},
		{"no stdin is /dev/null", client.ExecRequest{Argv: []string{"cat"}}, "", "", 0, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var out, errb bytes.Buffer
			tt.req.Stdout, tt.req.Stderr = &out, &errb
			st, err := c.Exec(ctxT(t), tt.req)
			if err != nil {
				t.Fatalf("Exec: %v", err)
			}
			if out.String() != tt.wantOut || errb.String() != tt.wantErr {
				t.Errorf("output: got stdout %q stderr %q, want %q and %q", out.String(), errb.String(), tt.wantOut, tt.wantErr)
			}
			if st.Code != tt.wantCode || st.Signal != tt.wantSignal {
				t.Errorf("status: got %+v, want code %d signal %q", st, tt.wantCode, tt.wantSignal)
			}
		})
	}
}

func TestExecRefusals(t *testing.T) {
	c := newAgent(t, server.Config{})
	tests := []struct {
		name string
		req  client.ExecRequest
		want error
	}{
		{"empty argv", client.ExecRequest{}, proto.ErrBadRequest},
		{"missing program", client.ExecRequest{Argv: []string{"no-such-program-here"}}, proto.ErrNotFound},
		{"missing dir", client.ExecRequest{Argv: []string{"true"}, Dir: "/no/such/dir"}, proto.ErrNotFound},
		{"unknown user", client.ExecRequest{Argv: []string{"true"}, User: "no-such-user"}, proto.ErrNotFound},
		{"bad env", client.ExecRequest{Argv: []string{"true"}, Env: []string{"NOEQUALS"}}, proto.ErrBadRequest},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := c.Exec(ctxT(t), tt.req)
			if !errors.Is(err, tt.want) {
				t.Fatalf("Exec: got %v, want %v", err, tt.want)
			}
			mustHealthy(t, c)
		})
	}
}

func TestExecStdinLarge(t *testing.T) {
	c := newAgent(t, server.Config{})
	data := make([]byte, 8<<20)
	if _, err := rand.Read(data); err != nil {
		t.Fatal(err)
	}
	h := sha256.New()
	st, err := c.Exec(ctxT(t), client.ExecRequest{Argv: []string{"cat"}, Stdin: bytes.NewReader(data), Stdout: h})
	if err != nil || st.Code != 0 {
		t.Fatalf("Exec cat: status %+v, err %v", st, err)
	}
	if got, want := h.Sum(nil), sha256.Sum256(data); !bytes.Equal(got, want[:]) {
		t.Errorf("cat output sha256: got %x, want %x", got, want)
	}
}

func TestExecSignalFromHost(t *testing.T) {
	c := newAgent(t, server.Config{})
	var out syncBuffer
	p, err := c.Start(ctxT(t), client.ExecRequest{Argv: []string{"sh", "-c", "trap 'echo got-term; exit 7' TERM; echo ready; while :; do sleep 0.05; done"}, Stdout: &out})
	if err != nil {
		t.Fatalf("Start: %v", err)
	}
	waitFor(t, func() bool { return strings.Contains(out.String(), "ready") })
	if err := p.Signal("TERM"); err != nil {
		t.Fatalf("Signal: %v", err)
	}
	st, err := p.Wait()
	if err != nil {
		t.Fatalf("Wait: %v", err)
	}
	if st.Code != 7 || !strings.Contains(out.String(), "got-term") {
		t.Errorf("after TERM: got status %+v output %q, want code 7 and got-term", st, out.String())
	}

	p, err = c.Start(ctxT(t), client.ExecRequest{Argv: []string{"sleep", "60"}})
	if err != nil {
		t.Fatalf("Start: %v", err)
	}
	if err := p.Signal("9"); err != nil {
		t.Fatalf("Signal: %v", err)
	}
	if st, err := p.Wait(); err != nil || st.Signal != "SIGKILL" || st.Code != 137 {
		t.Errorf("after signal 9: got %+v, %v; want SIGKILL, code 137", st, err)
	}
}

func TestExecCancelKillsProcess(t *testing.T) {
	c := newAgent(t, server.Config{})
	ctx, cancel := context.WithCancel(ctxT(t))
	p, err := c.Start(ctx, client.ExecRequest{Argv: []string{"sleep", "60"}})
	if err != nil {
		t.Fatalf("Start: %v", err)
	}
	cancel()
	if _, err := p.Wait(); !errors.Is(err, context.Canceled) {
		t.Errorf("Wait after cancel: got %v, want context.Canceled", err)
	}
	// the agent kills the abandoned process: /proc/<pid> disappears once reaped
	waitFor(t, func() bool {
		_, err := os.Stat("/proc/" + itoa(p.PID))
		return errors.Is(err, os.ErrNotExist)
	})
	mustHealthy(t, c)
}

func TestExecPTYResize(t *testing.T) {
	c := newAgent(t, server.Config{})
	stdinR, stdinW := io.Pipe()
	var out syncBuffer
	p, err := c.Start(ctxT(t), client.ExecRequest{
		Argv: []string{"sh", "-c", "test -t 0 && echo is-a-tty; stty size; read line; stty size; echo \"line=$line\""},
		TTY:  true, Rows: 30, Cols: 100, Stdin: stdinR, Stdout: &out,
	})
	if err != nil {
		t.Fatalf("Start: %v", err)
	}
	waitFor(t, func() bool { return strings.Contains(out.String(), "30 100") })
	if err := p.Resize(50, 120); err != nil {
		t.Fatalf("Resize: %v", err)
	}
	if _, err := io.WriteString(stdinW, "hello\n"); err != nil {
		t.Fatal(err)
	}
	st, err := p.Wait()
	if err != nil || st.Code != 0 {
		t.Fatalf("Wait: %+v, %v", st, err)
	}
	stdinW.Close()
	for _, want := range []string{"is-a-tty", "30 100", "50 120", "line=hello"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("pty output %q: missing %q", out.String(), want)
		}
	}
}

// TestExecLeftoverChildHoldsOutput: a command that exits while a child it left
// behind still holds its stdout must still end (after the 2s output grace period),
// with the output it wrote, rather than wait for the child.
func TestExecLeftoverChildHoldsOutput(t *testing.T) {
	c := newAgent(t, server.Config{})
	for _, tty := range []bool{false, true} {
		var out syncBuffer
		start := time.Now()
		st, err := c.Exec(ctxT(t), client.ExecRequest{Argv: []string{"sh", "-c", "setsid sleep 30 & echo pid=$!; echo done"}, TTY: tty, Stdout: &out})
		if pid, ok := strings.CutPrefix(strings.Fields(out.String() + " x")[0], "pid="); ok {
			if n := atoi(pid); n > 1 { // never 0 or -1: that would signal the test itself
				t.Cleanup(func() { _ = syscall.Kill(n, syscall.SIGKILL) })
			}
		}
		if err != nil || st.Code != 0 || !strings.Contains(out.String(), "done") {
			t.Errorf("tty=%v: got %+v %q %v; want exit 0 and done", tty, st, out.String(), err)
		}
		if d := time.Since(start); d > 20*time.Second {
			t.Errorf("tty=%v: exec took %v: it waited for the leftover child", tty, d)
		}
	}
}

func TestExecAsUser(t *testing.T) {
	requireRoot(t)
	dir := t.TempDir()
	for _, d := range []string{filepath.Dir(dir), dir} { // builder must reach its home
		if err := os.Chmod(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	passwd := filepath.Join(dir, "passwd")
	home := filepath.Join(dir, "home")
	if err := os.Mkdir(home, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(passwd, []byte("root:x:0:0:root:/root:/bin/sh\nbuilder:x:4321:4322::"+home+":/bin/sh\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(passwd+".group", []byte("extra:x:5000:builder\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	c := newAgent(t, server.Config{Users: usersDB(passwd)})
	var out bytes.Buffer
	st, err := c.Exec(ctxT(t), client.ExecRequest{Argv: []string{"sh", "-c", `echo "$(id -u) $(id -g) $(id -G) $USER $HOME $PWD"`}, User: "builder", Stdout: &out})
	if err != nil || st.Code != 0 {
		t.Fatalf("exec as builder: %+v %v", st, err)
	}
	if want := "4321 4322 4322 5000 builder " + home + " " + home + "\n"; out.String() != want {
		t.Errorf("exec as builder: got %q, want %q", out.String(), want)
	}
}
