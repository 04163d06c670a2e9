package vmmtest

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"banger/internal/vmm/process"
)

// children returns our live child processes (zombies excluded).
func children(t testing.TB) map[int]bool {
	t.Helper()
	out := map[int]bool{}
	self := os.Getpid()
	for _, pid := range allPIDs(t) {
		b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
		if err != nil {
			continue
		}
		s := string(b)
		i := strings.LastIndexByte(s, ')')
		if i < 0 {
			continue
		}
		f := strings.Fields(s[i+1:])
		if len(f) < 2 || f[0] == "Z" {
			continue
		}
		if ppid, _ := strconv.Atoi(f[1]); ppid == self {
			out[pid] = true
		}
	}
	return out
}

// pidsNaming returns the live processes whose command line contains any of subs.
func pidsNaming(t testing.TB, subs ...string) []int {
	t.Helper()
	var out []int
	self := os.Getpid()
	for _, pid := range allPIDs(t) {
		if pid == self {
			continue
		}
		cl := cmdline(pid)
		for _, s := range subs {
			if s != "" && strings.Contains(cl, s) {
				if ref, err := process.Find(pid); err == nil && ref.Alive() {
					out = append(out, pid)
				}
				break
			}
		}
	}
	return out
}

func itoa(i int) string { return strconv.Itoa(i) }

func atoi(s string) int {
	i, _ := strconv.Atoi(s)
	return i
}

func allPIDs(t testing.TB) []int {
	t.Helper()
	entries, err := os.ReadDir("/proc")
	if err != nil {
		t.Fatal(err)
	}
	var pids []int
	for _, e := range entries {
		if pid, err := strconv.Atoi(e.Name()); err == nil {
			pids = append(pids, pid)
		}
	}
	return pids
}

func cmdline(pid int) string {
	b, _ := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "cmdline"))
	return strings.TrimSpace(strings.ReplaceAll(string(b), "\x00", " "))
}

// consoleTail is the end of a console log, formatted to follow an error.
func consoleTail(path string) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return "\n(no console log: " + err.Error() + ")"
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > 30 {
		lines = lines[len(lines)-30:]
	}
	return "\nconsole (" + path + "), last lines:\n" + strings.Join(lines, "\n")
}
