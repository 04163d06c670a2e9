package imageservice_test

import (
	"debug/elf"
	"os"
	"os/exec"
	"strings"
	"testing"

	"banger/internal/imageservice"
)

// TestAgentMustBeStatic: a dynamically linked agent (what a plain `go build` with cgo
// on produces) is refused with the rebuild command, since it would fail in every
// guest as "exec init: no such file or directory"; a static one is accepted.
func TestAgentMustBeStatic(t *testing.T) {
	dynamic, err := exec.LookPath("true")
	if err != nil {
		t.Skip("no true(1) to stand in for a dynamic binary")
	}
	if f, err := elf.Open(dynamic); err != nil || !hasInterp(f) {
		t.Skipf("%s is not a dynamically linked ELF here", dynamic)
	}
	_, err = imageservice.AgentFromFile(dynamic)
	if err == nil || !strings.Contains(err.Error(), "dynamically linked") || !strings.Contains(err.Error(), "CGO_ENABLED=0") {
		t.Errorf("AgentFromFile(%s) = %v; want a refusal saying how to rebuild", dynamic, err)
	}

	// A static Go binary: this test's own, built with cgo off.
	static := t.TempDir() + "/banger-agent"
	cmd := exec.Command("go", "build", "-o", static, "banger/cmd/banger-agent")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("build a static agent: %v\n%s", err, out)
	}
	if a, err := imageservice.AgentFromFile(static); err != nil || a.Version == "" {
		t.Errorf("AgentFromFile(static) = %+v, %v; want it accepted", a, err)
	}
}

func hasInterp(f *elf.File) bool {
	defer f.Close()
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			return true
		}
	}
	return false
}
