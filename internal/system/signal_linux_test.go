package system

import (
	"context"
	"errors"
	"os/exec"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"banger/internal/vmm/process"
)

// TestPinChecksTheRecord: a process is signalled only if it is the one recorded,
// by start time and by executable; anything else is refused (errNotOurs) and the
// process is not touched, and a process that is gone is ErrNotRunning.
func TestPinChecksTheRecord(t *testing.T) {
	cmd := exec.Command("sleep", "600")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	rec, err := recordProcess(cmd.Process.Pid)
	if err != nil {
		t.Fatal(err)
	}
	self, err := recordProcess(unix.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		rec  procRecord
		want error // nil: pinned
	}{
		{"the recorded process", rec, nil},
		{"another start time (PID reused)", procRecord{PID: rec.PID, Start: rec.Start + 1, Dev: rec.Dev, Ino: rec.Ino}, errNotOurs},
		{"another executable", procRecord{PID: rec.PID, Start: rec.Start, Dev: self.Dev, Ino: self.Ino}, errNotOurs},
		{"no such process", procRecord{PID: 1 << 22, Start: 1}, process.ErrNotRunning},
	}
	for _, tt := range tests {
		p, err := pin(tt.rec)
		if tt.want == nil {
			if err != nil {
				t.Errorf("%s: pin: %v, want it pinned", tt.name, err)
				continue
			}
			p.close()
			continue
		}
		if !errors.Is(err, tt.want) {
			t.Errorf("%s: pin: %v, want %v", tt.name, err, tt.want)
		}
		if p != nil {
			p.close()
		}
	}
	if ref, err := process.Find(rec.PID); err != nil || ref.Start != rec.Start {
		t.Fatalf("the process did not survive the refused pins: %v", err)
	}

	// The recorded one is terminated, through its pidfd.
	p, err := pin(rec)
	if err != nil {
		t.Fatal(err)
	}
	defer p.close()
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	if err := p.terminate(context.Background(), 5*time.Second); err != nil {
		t.Fatalf("terminate: %v", err)
	}
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("the pinned process did not exit")
	}
}
