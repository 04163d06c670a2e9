package vmmtest

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"banger/internal/vmm"
	"banger/internal/vmm/process"
)

// Environment of the child test process testOutlivesCaller runs.
const (
	childSpecEnv   = "BANGER_VMMTEST_CHILD_SPEC"   // the Spec to start, as JSON
	childHandleEnv = "BANGER_VMMTEST_CHILD_HANDLE" // where to write the Handle
)

// testOutlivesCaller: a VMM outlives the process that started it, as VMs
// outlive a bangerd restart. A child process (this test binary, running only
// this subtest) starts the VM, writes its Handle and exits; this process then
// finds the VM running and reachable, and stops it. The child's output is a
// pipe to us: were the VMM to inherit it, the child's exit would not close it
// and collecting the output would hang.
func (s *suite) testOutlivesCaller(t *testing.T) {
	if specPath := os.Getenv(childSpecEnv); specPath != "" {
		s.outliveChild(t, specPath, os.Getenv(childHandleEnv))
		return
	}
	spec := s.env.Spec(t)
	dir := t.TempDir()
	specPath, handlePath := filepath.Join(dir, "spec.json"), filepath.Join(dir, "handle.json")
	writeJSON(t, specPath, spec)

	ctx, cancel := context.WithTimeout(context.Background(), s.env.BootTimeout+2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, os.Args[0], "-test.run", runPattern(t.Name()), "-test.count=1", "-test.v")
	cmd.Env = append(os.Environ(), childSpecEnv+"="+specPath, childHandleEnv+"="+handlePath)
	cmd.WaitDelay = 10 * time.Second
	out, err := cmd.CombinedOutput()
	var h vmm.Handle
	if b, rerr := os.ReadFile(handlePath); rerr == nil {
		if jerr := json.Unmarshal(b, &h); jerr != nil {
			t.Fatalf("child's handle: %v", jerr)
		}
	}
	drv := s.env.NewDriver()
	if h.PID > 0 {
		KillOnCleanup(t, drv, h)
	}
	switch {
	case errors.Is(err, exec.ErrWaitDelay):
		t.Fatalf("the child exited but its output pipe stayed open: the VMM holds it (it must log to a file)\n%s", out)
	case err != nil:
		t.Fatalf("child test process: %v\n%s", err, out)
	case h.PID <= 0:
		t.Fatalf("the child wrote no handle\n%s", out)
	}
	if ppid := parentPID(h.PID); ppid == cmd.Process.Pid {
		t.Errorf("pid %d's parent is still the exited child %d", h.PID, ppid)
	}
	if st, err := drv.State(ctx, h); err != nil || st != vmm.StateRunning {
		t.Fatalf("State after the starting process exited: got %q, %v; want %q%s", st, err, vmm.StateRunning, consoleTail(spec.ConsoleLog))
	}
	if _, err := WaitAgent(ctx, drv, h); err != nil {
		t.Fatalf("agent after the starting process exited: %v%s", err, consoleTail(spec.ConsoleLog))
	}
	if err := drv.Stop(ctx, h, s.env.StopTimeout); err != nil {
		t.Fatalf("Stop: %v", err)
	}
	s.assertGraceful(t, spec.ConsoleLog)
	assertGone(t, drv, h)
}

// outliveChild is the child's side: start the VM and leave it running.
func (s *suite) outliveChild(t *testing.T, specPath, handlePath string) {
	b, err := os.ReadFile(specPath)
	if err != nil {
		t.Fatal(err)
	}
	var spec vmm.Spec
	if err := json.Unmarshal(b, &spec); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), s.env.BootTimeout)
	defer cancel()
	h, err := s.env.NewDriver().Start(ctx, spec)
	if err != nil {
		t.Fatalf("Start: %v", err)
	}
	if !(process.Ref{PID: h.PID, Start: h.PIDStart}).Alive() {
		t.Fatalf("pid %d is not running after Start", h.PID)
	}
	writeJSON(t, handlePath, h)
}

func writeJSON(t *testing.T, path string, v any) {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
}

// runPattern is a -test.run pattern matching exactly the test named name.
func runPattern(name string) string {
	parts := strings.Split(name, "/")
	for i, p := range parts {
		parts[i] = "^" + regexp.QuoteMeta(p) + "$"
	}
	return strings.Join(parts, "/")
}

// parentPID is pid's parent, 0 if unknown.
func parentPID(pid int) int {
	b, err := os.ReadFile("/proc/" + itoa(pid) + "/stat")
	if err != nil {
		return 0
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return 0
	}
	f := strings.Fields(s[i+1:])
	if len(f) < 2 {
		return 0
	}
	return atoi(f[1])
}
