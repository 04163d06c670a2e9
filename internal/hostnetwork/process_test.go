package hostnetwork

import (
	"os"
	"os/exec"
	"testing"
)

func TestProcessAlive(t *testing.T) {
	self := os.Getpid()
	start, err := ProcessStart(self)
	if err != nil || start == 0 {
		t.Fatalf("ProcessStart(self) = %d, %v; want a start time", start, err)
	}
	cmd := exec.Command("sleep", "0")
	if err := cmd.Run(); err != nil {
		t.Fatal(err)
	}
	dead := cmd.Process.Pid
	tests := []struct {
		name  string
		pid   int
		start uint64
		want  bool
	}{
		{"self, any start", self, 0, true},
		{"self, recorded start", self, start, true},
		{"self, other start (pid reused)", self, start + 1, false},
		{"exited child", dead, 0, false},
		{"pid 0", 0, 0, false},
		{"negative", -1, 0, false},
	}
	for _, tt := range tests {
		if got := ProcessAlive(tt.pid, tt.start); got != tt.want {
			t.Errorf("%s: ProcessAlive(%d, %d) = %v, want %v", tt.name, tt.pid, tt.start, got, tt.want)
		}
	}
}
