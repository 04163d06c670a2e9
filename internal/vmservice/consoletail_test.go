package vmservice

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"banger/internal/consolelog"
	"banger/internal/layout"
)

func testService(t *testing.T) *Service {
	t.Helper()
	l, err := layout.New(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	s := &Service{d: Deps{Layout: l}}
	if err := os.MkdirAll(filepath.Dir(s.consoleLog("0123456789abcdef")), 0o750); err != nil {
		t.Fatal(err)
	}
	return s
}

// TestAttackConsoleTailEscapes: a start error ends with the console's last lines;
// a guest's escape sequences there reach the owner's terminal as text only.
func TestAttackConsoleTailEscapes(t *testing.T) {
	s := testService(t)
	id := "0123456789abcdef"
	evil := "[    1.0] booting\r\n\x1b]52;c;ZXZpbA==\x07\x1b[2J\x1b]0;title\x1b\\\u009b31m\xff\r\nKernel panic - not syncing: VFS\r\n"
	if err := os.WriteFile(s.consoleLog(id), []byte(evil), 0o640); err != nil {
		t.Fatal(err)
	}
	got := s.consoleTail(id)
	for _, bad := range []string{"\x1b", "\x07", "\r", "\u009b", "\xff"} {
		if strings.Contains(got, bad) {
			t.Errorf("consoleTail passed %q through: %q", bad, got)
		}
	}
	for _, want := range []string{"last console lines", "^[]52;c;ZXZpbA==^G^[[2J", "Kernel panic - not syncing: VFS"} {
		if !strings.Contains(got, want) {
			t.Errorf("consoleTail = %q, want it to contain %q", got, want)
		}
	}
}

// TestConsoleTailWaitsForLogger: the VMM has just exited and its logger still
// holds the panic in the pipe; the tail read for the error must include it.
func TestConsoleTailWaitsForLogger(t *testing.T) {
	s := testService(t)
	id := "0123456789abcdef"
	w, err := consolelog.Start(s.consoleLog(id), 0)
	if err != nil {
		t.Fatal(err)
	}
	for range 20 {
		if _, err := w.WriteString("[    0.5] some boot line, all of it in the pipe still\r\n"); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := w.WriteString("Kernel panic - not syncing: the end\r\n"); err != nil {
		t.Fatal(err)
	}
	w.Close()
	if got := s.consoleTail(id); !strings.Contains(got, "Kernel panic - not syncing: the end") {
		t.Errorf("consoleTail right after the VMM exited = %q, want the panic line", got)
	}
}
