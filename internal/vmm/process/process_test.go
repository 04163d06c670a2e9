package process

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// shell launches sh -c script detached, with its output in a log file, and kills
// it when the test ends.
func shell(t *testing.T, script string) (*Child, string) {
	t.Helper()
	log := filepath.Join(t.TempDir(), "out.log")
	c, err := Launch(LaunchSpec{Path: "/bin/sh", Args: []string{"-c", script}, LogPath: log})
	if err != nil {
		t.Fatalf("Launch: %v", err)
	}
	t.Cleanup(func() {
		_ = Kill(c.Ref())
		<-c.Done()
	})
	return c, log
}

// waitFor polls cond until it holds or 10s pass.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestLaunchDetached(t *testing.T) {
	c, log := shell(t, `echo to-stdout; echo to-stderr >&2; exec sleep 60`)
	pid := c.PID()
	ref := c.Ref()
	if ref.PID != pid || ref.Start == 0 {
		t.Fatalf("Ref() = %+v, want pid %d and a start time", ref, pid)
	}
	if sid, err := unix.Getsid(pid); err != nil || sid != pid {
		t.Errorf("session of %d: got %d, %v; want its own session (%d)", pid, sid, err, pid)
	}
	if pgid, err := unix.Getpgid(pid); err != nil || pgid == unix.Getpgrp() {
		t.Errorf("process group of %d: got %d, %v; want one apart from ours (%d)", pid, pgid, err, unix.Getpgrp())
	}
	if got, err := os.Readlink("/proc/" + strconv.Itoa(pid) + "/fd/0"); err != nil || got != os.DevNull {
		t.Errorf("stdin: got %q, %v; want %s", got, err, os.DevNull)
	}
	for _, fd := range []string{"1", "2"} {
		if got, err := os.Readlink("/proc/" + strconv.Itoa(pid) + "/fd/" + fd); err != nil || got != log {
			t.Errorf("fd %s: got %q, %v; want the log file %s (never a pipe)", fd, got, err, log)
		}
	}
	waitFor(t, "both lines in the log", func() bool {
		b, _ := os.ReadFile(log)
		return strings.Contains(string(b), "to-stdout") && strings.Contains(string(b), "to-stderr")
	})
	if !ref.Alive() {
		t.Fatal("Alive() = false for a running child")
	}
	if err := c.ExitErr(); !errors.Is(err, ErrRunning) {
		t.Errorf("ExitErr while running: got %v, want ErrRunning", err)
	}
	if err := Kill(ref); err != nil {
		t.Fatalf("Kill: %v", err)
	}
	select {
	case <-c.Done():
	case <-time.After(10 * time.Second):
		t.Fatal("the child was not reaped after SIGKILL")
	}
	var ee *exec.ExitError
	if err := c.ExitErr(); !errors.As(err, &ee) || ee.Sys().(syscall.WaitStatus).Signal() != syscall.SIGKILL {
		t.Errorf("ExitErr: got %v, want killed by SIGKILL", err)
	}
	if _, err := os.Stat("/proc/" + strconv.Itoa(pid)); !os.IsNotExist(err) {
		t.Errorf("/proc/%d still exists after reaping (a zombie left behind?): %v", pid, err)
	}
	if ref.Alive() {
		t.Error("Alive() = true after the child exited")
	}
}

func TestLaunchErrors(t *testing.T) {
	tests := []struct {
		name string
		spec LaunchSpec
		want string
	}{
		{"missing binary", LaunchSpec{Path: "/nonexistent/vmm"}, "start /nonexistent/vmm"},
		{"log in a missing directory", LaunchSpec{Path: "/bin/true", LogPath: "/nonexistent/dir/log"}, "process log"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := Launch(tt.spec)
			if err == nil {
				<-c.Done()
				t.Fatal("Launch succeeded, want an error")
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Errorf("error %q, want it to mention %q", err, tt.want)
			}
		})
	}
}

func TestLaunchExtraFiles(t *testing.T) {
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	c2, err := Launch(LaunchSpec{Path: "/bin/sh", Args: []string{"-c", "echo via-fd3 >&3"}, ExtraFiles: []*os.File{w}})
	w.Close()
	if err != nil {
		t.Fatalf("Launch: %v", err)
	}
	<-c2.Done()
	b := make([]byte, 64)
	n, _ := r.Read(b)
	if got := strings.TrimSpace(string(b[:n])); got != "via-fd3" {
		t.Errorf("read from fd 3: got %q, want via-fd3", got)
	}
}

func TestFind(t *testing.T) {
	self, err := Find(os.Getpid())
	if err != nil || self.Start == 0 {
		t.Fatalf("Find(self) = %+v, %v; want a start time", self, err)
	}
	exited := exec.Command("/bin/true")
	if err := exited.Run(); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		ref  Ref
		want bool
	}{
		{"self", self, true},
		{"self with another start time (pid reused)", Ref{PID: self.PID, Start: self.Start + 1}, false},
		{"no start time", Ref{PID: self.PID}, false},
		{"exited", Ref{PID: exited.Process.Pid, Start: 1}, false},
		{"pid 0", Ref{}, false},
	}
	for _, tt := range tests {
		if got := tt.ref.Alive(); got != tt.want {
			t.Errorf("%s: Alive() = %v, want %v", tt.name, got, tt.want)
		}
		if err := tt.ref.Validate(); (err == nil) != tt.want || (err != nil && !errors.Is(err, ErrNotRunning)) {
			t.Errorf("%s: Validate() = %v, want nil=%v and ErrNotRunning otherwise", tt.name, err, tt.want)
		}
	}
	for _, pid := range []int{0, -1, exited.Process.Pid} {
		if _, err := Find(pid); !errors.Is(err, ErrNotRunning) {
			t.Errorf("Find(%d) error %v, want ErrNotRunning", pid, err)
		}
	}
}

// orphan starts a process that is not our child: sh starts it in the background
// and exits, so it is reparented (to init or a subreaper).
func orphan(t *testing.T, script string) Ref {
	t.Helper()
	pidFile := filepath.Join(t.TempDir(), "pid")
	cmd := exec.Command("/bin/sh", "-c", "("+script+") >/dev/null 2>&1 </dev/null & echo $! > "+pidFile)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("start orphan: %v\n%s", err, out)
	}
	b, err := os.ReadFile(pidFile)
	if err != nil {
		t.Fatal(err)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil {
		t.Fatal(err)
	}
	ref, err := Find(pid)
	if err != nil {
		t.Fatalf("Find(orphan %d): %v", pid, err)
	}
	t.Cleanup(func() { _ = Kill(ref) })
	if ppid := parentOf(t, pid); ppid == os.Getpid() {
		t.Fatalf("orphan %d is our child; the test needs a stranger", pid)
	}
	return ref
}

func parentOf(t *testing.T, pid int) int {
	t.Helper()
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		t.Fatal(err)
	}
	s := string(b)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
	ppid, _ := strconv.Atoi(f[1])
	return ppid
}

// waiters are the two ways Wait can work, so both are tested on every kernel.
var waiters = []struct {
	name string
	wait func(context.Context, Ref) error
}{
	{"pidfd", Wait},
	{"poll", waitPoll},
}

func TestWaitNonChild(t *testing.T) {
	for _, w := range waiters {
		t.Run(w.name, func(t *testing.T) {
			ref := orphan(t, "exec sleep 60")
			// still running: the wait ends with ctx
			ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
			err := w.wait(ctx, ref)
			cancel()
			if !errors.Is(err, context.DeadlineExceeded) {
				t.Fatalf("wait on a running process: got %v, want context.DeadlineExceeded", err)
			}
			// exits: the wait returns
			done := make(chan error, 1)
			go func() { done <- w.wait(context.Background(), ref) }()
			time.Sleep(50 * time.Millisecond)
			if err := Kill(ref); err != nil {
				t.Fatalf("Kill: %v", err)
			}
			select {
			case err := <-done:
				if err != nil {
					t.Fatalf("wait: %v", err)
				}
			case <-time.After(10 * time.Second):
				t.Fatal("wait did not return after the process was killed")
			}
			// gone: returns at once
			if err := w.wait(context.Background(), ref); err != nil {
				t.Errorf("wait on a gone process: %v", err)
			}
		})
	}
}

func TestWaitExitsByItself(t *testing.T) {
	for _, w := range waiters {
		t.Run(w.name, func(t *testing.T) {
			ref := orphan(t, "exec sleep 0.3")
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			if err := w.wait(ctx, ref); err != nil {
				t.Fatalf("wait: %v", err)
			}
			if ref.Alive() {
				t.Error("Alive() after wait returned")
			}
		})
	}
}

func TestSignalReusedPIDIsHarmless(t *testing.T) {
	c, _ := shell(t, "exec sleep 60")
	stale := Ref{PID: c.PID(), Start: c.Ref().Start - 1} // the same PID, another process
	for _, sig := range []unix.Signal{unix.SIGKILL, unix.SIGTERM} {
		if err := Signal(stale, sig); err != nil {
			t.Errorf("Signal(stale ref, %v): %v, want nil (nothing to signal)", sig, err)
		}
	}
	if err := signalUnpinned(stale, unix.SIGKILL); err != nil {
		t.Errorf("signalUnpinned(stale ref): %v", err)
	}
	if err := waitPoll(context.Background(), stale); err != nil {
		t.Errorf("waitPoll(stale ref): %v", err)
	}
	time.Sleep(50 * time.Millisecond)
	if !c.Ref().Alive() {
		t.Fatal("a signal for a stale ref reached the process that has its PID")
	}
}

func TestTerminate(t *testing.T) {
	tests := []struct {
		name       string
		script     string
		wantForced bool
		wantSig    unix.Signal
	}{
		{"honours SIGTERM", "exec sleep 60", false, unix.SIGTERM},
		// an ignored disposition survives exec: the sleep ignores SIGTERM too
		{"ignores SIGTERM", `trap "" TERM; exec sleep 60`, true, unix.SIGKILL},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, _ := shell(t, tt.script)
			waitFor(t, "the shell to exec sleep", func() bool {
				b, _ := os.ReadFile("/proc/" + strconv.Itoa(c.PID()) + "/comm")
				return strings.TrimSpace(string(b)) == "sleep"
			})
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			forced, err := Terminate(ctx, c.Ref(), unix.SIGTERM, 300*time.Millisecond)
			if err != nil {
				t.Fatalf("Terminate: %v", err)
			}
			if forced != tt.wantForced {
				t.Errorf("forced = %v, want %v", forced, tt.wantForced)
			}
			<-c.Done()
			var ee *exec.ExitError
			if err := c.ExitErr(); !errors.As(err, &ee) || ee.Sys().(syscall.WaitStatus).Signal() != tt.wantSig {
				t.Errorf("exit: got %v, want killed by %v", err, tt.wantSig)
			}
		})
	}
}

func TestTerminateContextEnds(t *testing.T) {
	c, _ := shell(t, `trap "" TERM; exec sleep 60`)
	waitFor(t, "the shell to exec sleep", func() bool {
		b, _ := os.ReadFile("/proc/" + strconv.Itoa(c.PID()) + "/comm")
		return strings.TrimSpace(string(b)) == "sleep"
	})
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	if _, err := Terminate(ctx, c.Ref(), unix.SIGTERM, time.Minute); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Terminate: got %v, want context.DeadlineExceeded", err)
	}
	if !c.Ref().Alive() {
		t.Error("Terminate killed the process although its caller gave up first")
	}
}
