package hostnetwork

import "banger/internal/vmm/process"

// ProcessStart returns a process's start time (field 22 of /proc/PID/stat, in clock
// ticks since boot). Together with the PID it names a process unambiguously: a PID
// alone may have been reused by the time bangerd re-attaches to a VMM. It is
// process.StartTime, which lives in that leaf package so the root helper can use it
// without linking this one.
func ProcessStart(pid int) (uint64, error) { return process.StartTime(pid) }

// ProcessAlive reports whether pid runs and, when start is non-zero, is the same
// process that was recorded (same start time); see process.Alive.
func ProcessAlive(pid int, start uint64) bool { return process.Alive(pid, start) }
