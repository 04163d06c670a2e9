package process

import (
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"syscall"
)

// ErrNotRunning says a process is gone (exited, reaped or a zombie) or is no
// longer the one a Ref named (its PID was reused).
var ErrNotRunning = errors.New("process not running")

// Ref names one process for good: a PID alone may have been reused by the time
// bangerd looks again, a PID with its start time (/proc/PID/stat field 22)
// cannot. It is what a VMM Handle stores.
type Ref struct {
	PID   int
	Start uint64 // clock ticks after boot; 0 only for a process that exited before it was read
}

// Find names the process running as pid now. A zombie counts as gone.
func Find(pid int) (Ref, error) {
	if pid <= 0 {
		return Ref{}, fmt.Errorf("pid %d: %w", pid, ErrNotRunning)
	}
	start, err := startTime(pid)
	if err != nil {
		return Ref{}, err
	}
	return Ref{PID: pid, Start: start}, nil
}

// Alive reports whether the process r names still runs: same PID, same start
// time, not a zombie. A Ref without a start time is never alive: it cannot be
// told from a stranger that reused the PID.
func (r Ref) Alive() bool {
	return r.PID > 0 && r.Start != 0 && Alive(r.PID, r.Start)
}

// Validate returns nil when r is alive, else an error wrapping ErrNotRunning.
func (r Ref) Validate() error {
	if r.Alive() {
		return nil
	}
	return fmt.Errorf("pid %d (start %d): %w", r.PID, r.Start, ErrNotRunning)
}

func (r Ref) String() string { return fmt.Sprintf("pid %d", r.PID) }

// startTime reads pid's start time; every failure (no such process, a zombie,
// an unreadable /proc entry) means the process cannot be named, so every one
// wraps ErrNotRunning, with the cause alongside.
func startTime(pid int) (uint64, error) {
	start, err := StartTime(pid)
	if err != nil {
		return 0, fmt.Errorf("pid %d: %w (%v)", pid, ErrNotRunning, err)
	}
	return start, nil
}

// StartTime returns a process's start time (field 22 of /proc/PID/stat, in clock
// ticks since boot). Together with the PID it names a process unambiguously: a PID
// alone may have been reused by the time bangerd re-attaches to a VMM. A zombie is
// an error.
func StartTime(pid int) (uint64, error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0, err
	}
	// comm (field 2) may hold spaces and parentheses: parse after the last ')'.
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return 0, fmt.Errorf("/proc/%d/stat: malformed", pid)
	}
	fields := strings.Fields(s[i+1:])
	// fields[0] is field 3 (state); field 22 is fields[19].
	if len(fields) < 20 {
		return 0, fmt.Errorf("/proc/%d/stat: too few fields", pid)
	}
	if fields[0] == "Z" {
		return 0, fmt.Errorf("process %d: %w", pid, errZombie)
	}
	return strconv.ParseUint(fields[19], 10, 64)
}

var errZombie = errors.New("exited (zombie)")

// Alive reports whether pid runs and, when start is non-zero, is the same process
// that was recorded (same start time).
func Alive(pid int, start uint64) bool {
	if pid <= 0 {
		return false
	}
	if err := syscall.Kill(pid, 0); err != nil && !errors.Is(err, syscall.EPERM) {
		return false
	}
	got, err := StartTime(pid)
	if err != nil {
		return false
	}
	return start == 0 || got == start
}
