package hostnetwork

import (
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"syscall"
)

// ProcessStart returns a process's start time (field 22 of /proc/PID/stat, in clock
// ticks since boot). Together with the PID it names a process unambiguously: a PID
// alone may have been reused by the time bangerd re-attaches to a VMM.
func ProcessStart(pid int) (uint64, error) {
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

// ProcessAlive reports whether pid runs and, when start is non-zero, is the same
// process that was recorded (same start time).
func ProcessAlive(pid int, start uint64) bool {
	if pid <= 0 {
		return false
	}
	if err := syscall.Kill(pid, 0); err != nil && !errors.Is(err, syscall.EPERM) {
		return false
	}
	got, err := ProcessStart(pid)
	if err != nil {
		return false
	}
	return start == 0 || got == start
}
