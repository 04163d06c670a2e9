package fctest

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
)

// FakeModeEnv makes a test binary that calls MainIfFake from its TestMain
// act as "firecracker" (RunFake) or "jailer" (RunFakeJailer).
const FakeModeEnv = "FCTEST_FAKE"

// FakeSwitchUIDEnv, set to "1", makes the fake jailer run firecracker as --uid and
// --gid, as the real jailer does (it needs root). Off by default: most tests give a
// uid whose user could not reach the test binary's files.
const FakeSwitchUIDEnv = "FCTEST_JAILER_SWITCH_UID"

// MainIfFake, called first thing in TestMain, turns the test binary into a
// fake firecracker or jailer when $FCTEST_FAKE says so, and exits; otherwise
// it returns and the tests run.
func MainIfFake() {
	switch os.Getenv(FakeModeEnv) {
	case "firecracker":
		os.Exit(RunFake(os.Args[1:], os.Stdout, os.Stderr))
	case "jailer":
		os.Exit(RunFakeJailer(os.Args[1:], os.Stderr))
	}
}

type multiFlag []string

func (m *multiFlag) String() string     { return strings.Join(*m, ",") }
func (m *multiFlag) Set(v string) error { *m = append(*m, v); return nil }

var (
	jailIDRe     = regexp.MustCompile(`^[a-zA-Z0-9-]{1,64}$`)
	jailCgroupRe = regexp.MustCompile(`^[a-z][a-z0-9_]*\.[a-z0-9_.]+=.+$`)
)

// RunFakeJailer is the main of a fake jailer. It checks its command line as
// the jailer documents it (v1.16.1: --id, --exec-file, --uid, --gid required;
// --cgroup file=value; --netns an existing path; --daemonize refused in a
// process group leader) and does what the jailer does on the filesystem:
// it creates <chroot_base>/<exec_file_name>/<id>/root, copies the exec file
// in, starts it with --id ID --start-time-us --start-time-cpu-us and the
// arguments after "--", and with --new-pid-ns writes the child's PID to
// <root>/<exec_file_name>.pid and exits.
//
// What it cannot fake without being the jailer: no chroot (the exec file
// runs with $FCTEST_ROOT set, which RunFake honours by taking every path
// under it), no cgroups written, no uid/gid switch, no PID namespace, and
// the environment is passed on rather than cleared.
func RunFakeJailer(args []string, stderr io.Writer) int {
	fs := flag.NewFlagSet("jailer", flag.ContinueOnError)
	fs.SetOutput(stderr)
	id := fs.String("id", "", "")
	execFile := fs.String("exec-file", "", "")
	uid := fs.String("uid", "", "")
	gid := fs.String("gid", "", "")
	base := fs.String("chroot-base-dir", "/srv/jailer", "")
	cgroupVersion := fs.String("cgroup-version", "1", "")
	fs.String("parent-cgroup", "", "")
	netns := fs.String("netns", "", "")
	daemonize := fs.Bool("daemonize", false, "")
	newPIDNS := fs.Bool("new-pid-ns", false, "")
	var cgroups, limits multiFlag
	fs.Var(&cgroups, "cgroup", "")
	fs.Var(&limits, "resource-limit", "")
	version := fs.Bool("version", false, "")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if *version {
		// The jailer's version is Firecracker's; the spec says which.
		v := "0.0.0-fctest"
		if spec, err := LoadSpec(os.Getenv(FakeSpecEnv)); err == nil {
			v = spec.Version
		}
		fmt.Fprintf(os.Stdout, "Jailer v%s\n", v)
		return 0
	}
	fail := func(format string, a ...any) int {
		fmt.Fprintf(stderr, "jailer (fctest): "+format+"\n", a...)
		return 1
	}
	if !jailIDRe.MatchString(*id) {
		return fail("--id %q: 1-64 letters, digits and '-'", *id)
	}
	if !filepath.IsAbs(*execFile) {
		return fail("--exec-file %q: not an absolute path", *execFile)
	}
	if _, err := os.Stat(*execFile); err != nil {
		return fail("--exec-file: %v", err)
	}
	for _, n := range []string{*uid, *gid} {
		if _, err := strconv.ParseUint(n, 10, 32); err != nil {
			return fail("--uid/--gid %q: %v", n, err)
		}
	}
	if *cgroupVersion != "1" && *cgroupVersion != "2" {
		return fail("--cgroup-version %q: 1 or 2", *cgroupVersion)
	}
	for _, c := range cgroups {
		if !jailCgroupRe.MatchString(c) {
			return fail("--cgroup %q: want <file>=<value>", c)
		}
	}
	if *netns != "" {
		if _, err := os.Stat(*netns); err != nil {
			return fail("--netns: %v", err)
		}
	}
	if *daemonize && syscall.Getpgrp() == os.Getpid() {
		return fail("--daemonize: setsid: %v (the jailer must not be a process group leader)", syscall.EPERM)
	}

	name := filepath.Base(*execFile)
	root := filepath.Join(*base, name, *id, "root")
	if err := os.MkdirAll(root, 0o755); err != nil {
		return fail("chroot: %v", err)
	}
	jailed := filepath.Join(root, name)
	if err := linkOrCopy(*execFile, jailed); err != nil {
		return fail("copy exec file: %v", err)
	}
	fcArgs := append([]string{"--id", *id, "--start-time-us", "0", "--start-time-cpu-us", "0"}, fs.Args()...)
	env := append(os.Environ(), FakeModeEnv+"=firecracker", FakeRootEnv+"="+root)
	pidFile := filepath.Join(root, name+".pid")
	// One line on the console, so tests can see where the jail's output goes.
	fmt.Fprintf(os.Stdout, "jailer (fctest): starting %s in %s\n", name, root)
	if !*newPIDNS {
		// The jailer execs in place: same PID.
		if err := os.WriteFile(pidFile, []byte(strconv.Itoa(os.Getpid())), 0o644); err != nil {
			return fail("pid file: %v", err)
		}
		err := syscall.Exec(jailed, append([]string{jailed}, fcArgs...), env)
		return fail("exec: %v", err)
	}
	cmd := exec.Command(jailed, fcArgs...)
	cmd.Env = env
	cmd.SysProcAttr = &syscall.SysProcAttr{}
	if *daemonize {
		cmd.SysProcAttr.Setsid = true // stdio stays nil: /dev/null
	} else {
		cmd.Stdout, cmd.Stderr = os.Stdout, os.Stderr
	}
	if os.Getenv(FakeSwitchUIDEnv) == "1" {
		u, _ := strconv.ParseUint(*uid, 10, 32) // checked above
		g, _ := strconv.ParseUint(*gid, 10, 32)
		cmd.SysProcAttr.Credential = &syscall.Credential{Uid: uint32(u), Gid: uint32(g)}
	}
	if err := cmd.Start(); err != nil {
		return fail("spawn: %v", err)
	}
	if err := os.WriteFile(pidFile, []byte(strconv.Itoa(cmd.Process.Pid)), 0o644); err != nil {
		_ = cmd.Process.Kill()
		return fail("pid file: %v", err)
	}
	return 0
}

func linkOrCopy(src, dst string) error {
	err := os.Link(src, dst)
	if errors.Is(err, os.ErrExist) {
		return nil
	}
	if !errors.Is(err, syscall.EXDEV) {
		return err
	}
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o755)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}
