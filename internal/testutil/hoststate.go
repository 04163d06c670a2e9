package testutil

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// Watch names what an attack test expects to find unchanged afterwards.
type Watch struct {
	// Paths are files or directories; directories are walked recursively and
	// symlinks are recorded (their target), never followed. A path that does not
	// exist at capture time is recorded as absent, so its appearance is reported.
	Paths []string
	// Volatile are paths whose CONTENT may change (an audit log that grows): their
	// type, mode, uid and gid are still checked. A volatile directory's entries may
	// also appear and disappear (a log directory), but entries present in both
	// captures are still checked for type, mode, uid and gid.
	Volatile []string
	// PIDs are processes that must still be alive afterwards and be the same
	// process (same start time, /proc/<pid>/stat field 22), not a reused pid.
	PIDs []int
	// Netns, if set, names the network namespace (`ip netns exec`) in which the
	// nft ruleset and the links are taken; otherwise the current one.
	Netns string
}

// fileState is what CaptureHost records about one path.
type fileState struct {
	typ    string // "file", "dir", "symlink", "fifo", "socket", "chardev", "blockdev", "absent"
	mode   uint32 // permission bits with setuid, setgid, sticky
	uid    uint32
	gid    uint32
	rdev   uint64 // device nodes only
	sha256 string // regular files only
	target string // symlinks only
}

// procState identifies one process across captures.
type procState struct {
	alive     bool
	state     string // /proc/<pid>/stat field 3
	startTime string // field 22, in clock ticks since boot
	why       string // why it is not alive
}

// HostState is one snapshot of the host as a Watch sees it; AssertUnchanged takes
// another and compares.
type HostState struct {
	w        Watch
	files    map[string]fileState
	ruleset  string
	links    string
	addrs    string
	procs    map[int]procState
	volatile []string // cleaned Watch.Volatile
}

// CaptureHost records the state of everything w names. It fails t if any of it
// cannot be read: an attack test that cannot see the host cannot prove anything.
func CaptureHost(t testing.TB, w Watch) *HostState {
	t.Helper()
	s := &HostState{w: w}
	for _, v := range w.Volatile {
		s.volatile = append(s.volatile, filepath.Clean(v))
	}
	var errs []string
	s.files, errs = s.captureFiles()
	s.ruleset, s.links, s.addrs = captureNet(w.Netns, &errs)
	s.procs = captureProcs(w.PIDs)
	for pid, p := range s.procs {
		if !p.alive {
			errs = append(errs, fmt.Sprintf("pid %d: %s at capture time", pid, p.why))
		}
	}
	if len(errs) > 0 {
		sort.Strings(errs)
		t.Fatalf("CaptureHost: %s", strings.Join(errs, "; "))
	}
	return s
}

// AssertUnchanged re-captures the host and reports every difference from s with
// t.Errorf: one error per path (type, mode, uid, gid, content, symlink target,
// device number, appeared, disappeared), the nft ruleset and link diffs, and every
// watched process that is gone or was replaced.
func (s *HostState) AssertUnchanged(t testing.TB) {
	t.Helper()
	now, errs := s.captureFiles()
	for _, e := range errs {
		t.Errorf("host state: %s", e)
	}
	paths := make([]string, 0, len(s.files)+len(now))
	for p := range s.files {
		paths = append(paths, p)
	}
	for p := range now {
		if _, ok := s.files[p]; !ok {
			paths = append(paths, p)
		}
	}
	sort.Strings(paths)
	for _, p := range paths {
		before, hadBefore := s.files[p]
		after, hasAfter := now[p]
		if !hadBefore {
			before = fileState{typ: "absent"}
		}
		if !hasAfter {
			after = fileState{typ: "absent"}
		}
		if d := s.diffFile(p, before, after); d != "" {
			t.Errorf("host state: %s: %s", p, d)
		}
	}

	var netErrs []string
	ruleset, links, addrs := captureNet(s.w.Netns, &netErrs)
	for _, e := range netErrs {
		t.Errorf("host state: %s", e)
	}
	where := "current netns"
	if s.w.Netns != "" {
		where = "netns " + s.w.Netns
	}
	if len(netErrs) == 0 {
		if d := lineDiff(s.ruleset, ruleset); d != "" {
			t.Errorf("host state: nft ruleset in %s changed:\n%s", where, d)
		}
		if d := lineDiff(s.links, links); d != "" {
			t.Errorf("host state: links (ip -o link) in %s changed:\n%s", where, d)
		}
		if d := lineDiff(s.addrs, addrs); d != "" {
			t.Errorf("host state: IPv4 addresses (ip -o -4 addr) in %s changed:\n%s", where, d)
		}
	}

	procs := captureProcs(s.w.PIDs)
	pids := make([]int, 0, len(procs))
	for pid := range procs {
		pids = append(pids, pid)
	}
	sort.Ints(pids)
	for _, pid := range pids {
		before, after := s.procs[pid], procs[pid]
		switch {
		case !after.alive:
			t.Errorf("host state: pid %d is gone: %s", pid, after.why)
		case after.startTime != before.startTime:
			t.Errorf("host state: pid %d is a different process: start time %s, was %s", pid, after.startTime, before.startTime)
		}
	}
}

// isVolatile reports whether p's content may change, and whether p lies under a
// volatile directory (where entries may come and go).
func (s *HostState) isVolatile(p string) (content, under bool) {
	for _, v := range s.volatile {
		if p == v {
			return true, false
		}
		if strings.HasPrefix(p, v+"/") {
			return true, true
		}
	}
	return false, false
}

func (s *HostState) diffFile(p string, before, after fileState) string {
	content, under := s.isVolatile(p)
	if before.typ == "absent" && after.typ == "absent" {
		return ""
	}
	if before.typ == "absent" {
		if under {
			return ""
		}
		return fmt.Sprintf("appeared (%s)", after.describe())
	}
	if after.typ == "absent" {
		if under {
			return ""
		}
		return fmt.Sprintf("disappeared (was %s)", before.describe())
	}
	if before.typ != after.typ {
		return fmt.Sprintf("type changed: %s, was %s", after.describe(), before.describe())
	}
	var d []string
	if before.mode != after.mode {
		d = append(d, fmt.Sprintf("mode %04o, was %04o", after.mode, before.mode))
	}
	if before.uid != after.uid {
		d = append(d, fmt.Sprintf("uid %d, was %d", after.uid, before.uid))
	}
	if before.gid != after.gid {
		d = append(d, fmt.Sprintf("gid %d, was %d", after.gid, before.gid))
	}
	if before.rdev != after.rdev {
		d = append(d, fmt.Sprintf("device %d:%d, was %d:%d", unix.Major(after.rdev), unix.Minor(after.rdev), unix.Major(before.rdev), unix.Minor(before.rdev)))
	}
	if !content && before.sha256 != after.sha256 {
		d = append(d, fmt.Sprintf("content sha256 %s, was %s", after.sha256, before.sha256))
	}
	if before.target != after.target {
		d = append(d, fmt.Sprintf("symlink target %q, was %q", after.target, before.target))
	}
	return strings.Join(d, "; ")
}

func (f fileState) describe() string {
	s := fmt.Sprintf("%s mode %04o uid %d gid %d", f.typ, f.mode, f.uid, f.gid)
	if f.typ == "symlink" {
		s += fmt.Sprintf(" -> %q", f.target)
	}
	return s
}

// captureFiles walks every watched path. Errors are returned, never skipped.
func (s *HostState) captureFiles() (map[string]fileState, []string) {
	files := map[string]fileState{}
	var errs []string
	for _, root := range s.w.Paths {
		root = filepath.Clean(root)
		s.captureTree(root, files, &errs)
	}
	return files, errs
}

func (s *HostState) captureTree(p string, files map[string]fileState, errs *[]string) {
	if _, done := files[p]; done {
		return
	}
	st, err := statPath(p)
	if err != nil {
		*errs = append(*errs, fmt.Sprintf("%s: %v", p, err))
		return
	}
	if st.typ == "absent" {
		// Recorded only for a watched root (an entry that vanished mid-walk is
		// simply not there); a later appearance is then reported.
		files[p] = st
		return
	}
	files[p] = st
	if st.typ != "dir" {
		return
	}
	names, err := readDirNames(p)
	if err != nil {
		*errs = append(*errs, fmt.Sprintf("%s: read directory: %v", p, err))
		return
	}
	for _, n := range names {
		child := filepath.Join(p, n)
		s.captureTree(child, files, errs)
		if files[child].typ == "absent" {
			delete(files, child) // raced with a removal: it is simply not there now
		}
	}
}

func readDirNames(p string) ([]string, error) {
	f, err := os.OpenFile(p, os.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW, 0)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	names, err := f.Readdirnames(-1)
	sort.Strings(names)
	return names, err
}

// statPath records p without following a final symlink; a missing path is
// "absent", any other error is returned.
func statPath(p string) (fileState, error) {
	var st unix.Stat_t
	if err := unix.Lstat(p, &st); err != nil {
		if errors.Is(err, unix.ENOENT) || errors.Is(err, unix.ENOTDIR) {
			return fileState{typ: "absent"}, nil
		}
		return fileState{}, fmt.Errorf("lstat: %w", err)
	}
	f := fileState{
		mode: st.Mode & 0o7777,
		uid:  st.Uid,
		gid:  st.Gid,
	}
	switch st.Mode & unix.S_IFMT {
	case unix.S_IFREG:
		f.typ = "file"
		sum, err := hashFile(p)
		if err != nil {
			return fileState{}, err
		}
		f.sha256 = sum
	case unix.S_IFDIR:
		f.typ = "dir"
	case unix.S_IFLNK:
		f.typ = "symlink"
		target, err := os.Readlink(p)
		if err != nil {
			return fileState{}, fmt.Errorf("readlink: %w", err)
		}
		f.target = target
	case unix.S_IFIFO:
		f.typ = "fifo"
	case unix.S_IFSOCK:
		f.typ = "socket"
	case unix.S_IFCHR:
		f.typ, f.rdev = "chardev", st.Rdev
	case unix.S_IFBLK:
		f.typ, f.rdev = "blockdev", st.Rdev
	default:
		f.typ = fmt.Sprintf("unknown(%o)", st.Mode&unix.S_IFMT)
	}
	return f, nil
}

// hashFile hashes a regular file opened without following symlinks and without
// blocking (a file swapped for a FIFO between lstat and open must not hang us).
func hashFile(p string) (string, error) {
	f, err := os.OpenFile(p, os.O_RDONLY|unix.O_NOFOLLOW|unix.O_NONBLOCK|unix.O_NOCTTY, 0)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return "", nil // removed since lstat; the next lstat sees it
		}
		return "", fmt.Errorf("open: %w", err)
	}
	defer f.Close()
	var st unix.Stat_t
	if err := unix.Fstat(int(f.Fd()), &st); err != nil {
		return "", fmt.Errorf("fstat: %w", err)
	}
	if st.Mode&unix.S_IFMT != unix.S_IFREG {
		return "", fmt.Errorf("changed type while being read (now %o)", st.Mode&unix.S_IFMT)
	}
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return "", fmt.Errorf("read: %w", err)
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

// captureNet takes the nft ruleset, the links and the IPv4 addresses in netns
// (the current namespace if empty). Errors are appended to errs.
func captureNet(netns string, errs *[]string) (ruleset, links, addrs string) {
	run := func(args ...string) string {
		if netns != "" {
			args = append([]string{"ip", "netns", "exec", netns}, args...)
		}
		out, err := exec.Command(args[0], args[1:]...).Output()
		if err != nil {
			msg := err.Error()
			var ee *exec.ExitError
			if errors.As(err, &ee) {
				msg += ": " + strings.TrimSpace(string(ee.Stderr))
			}
			*errs = append(*errs, fmt.Sprintf("%s: %s", strings.Join(args, " "), msg))
		}
		return string(out)
	}
	return run("nft", "list", "ruleset"), run("ip", "-o", "link"), run("ip", "-o", "-4", "addr")
}

// captureProcs reads /proc/<pid>/stat for each pid.
func captureProcs(pids []int) map[int]procState {
	procs := map[int]procState{}
	for _, pid := range pids {
		procs[pid] = readProc(pid)
	}
	return procs
}

func readProc(pid int) procState {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return procState{why: err.Error()}
	}
	// The command name (field 2) is in parentheses and may hold spaces or ')':
	// fields resume after the last ')'.
	i := strings.LastIndexByte(string(b), ')')
	if i < 0 {
		return procState{why: fmt.Sprintf("unparsable /proc/%d/stat", pid)}
	}
	fields := strings.Fields(string(b[i+1:]))
	if len(fields) < 20 {
		return procState{why: fmt.Sprintf("short /proc/%d/stat", pid)}
	}
	p := procState{state: fields[0], startTime: fields[19]} // fields 3 and 22
	switch p.state {
	case "Z", "X", "x":
		p.why = "state " + p.state + " (exited)"
	default:
		p.alive = true
	}
	return p
}

// lineDiff reports lines removed (-) and added (+) between a and b, sorted, or a
// note when only their order changed; "" if equal.
func lineDiff(a, b string) string {
	if a == b {
		return ""
	}
	count := map[string]int{}
	for _, l := range strings.Split(a, "\n") {
		count[l]++
	}
	for _, l := range strings.Split(b, "\n") {
		count[l]--
	}
	var out []string
	for l, n := range count {
		for ; n > 0; n-- {
			out = append(out, "- "+l)
		}
		for ; n < 0; n++ {
			out = append(out, "+ "+l)
		}
	}
	if len(out) == 0 {
		return "(same lines, different order)\nbefore:\n" + a + "\nafter:\n" + b
	}
	sort.Strings(out)
	return strings.Join(out, "\n")
}
