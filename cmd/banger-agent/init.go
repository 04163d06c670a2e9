package main

import (
	"flag"
	"fmt"
	"io"
	"os"
	"time"

	"banger/internal/agent/initsys"
)

// runInit is PID 1. It accepts the service flags (passed on to the agent service
// it starts) and its own, which exist for tests that run init in namespaces.
func runInit(args []string, stderr io.Writer) error {
	var o serviceOptions
	var level string
	fs := flag.NewFlagSet("banger-agent init", flag.ContinueOnError)
	fs.SetOutput(stderr)
	registerServiceFlags(fs, &o, &level)
	service := map[string]bool{}
	fs.VisitAll(func(f *flag.Flag) { service[f.Name] = true })
	cmdline := fs.String("cmdline", "/proc/cmdline", "kernel command line to read the banger.* parameters from")
	etc := fs.String("etc-dir", "/etc", "directory receiving resolv.conf")
	workload := fs.String("workload", "/etc/banger/init.json", "the image's workload (entrypoint, cmd, env, hand-over)")
	keepRW := fs.Bool("keep-root-rw", false, "do not remount / read-only at shutdown (tests in namespaces only)")
	stop := fs.Duration("stop-timeout", 5*time.Second, "time between SIGTERM and SIGKILL at shutdown")
	if err := fs.Parse(args); err != nil {
		return errUsage
	}
	if os.Getpid() != 1 {
		return fmt.Errorf("init mode must run as PID 1 (this is PID %d); use service mode under another init", os.Getpid())
	}
	l, err := parseLevel(level)
	if err != nil {
		return err
	}
	self, err := os.Executable()
	if err != nil {
		return fmt.Errorf("find own executable: %w", err)
	}
	agent := []string{self, "service", "-shutdown-via-init", "-boot-status", o.bootStatus}
	fs.Visit(func(f *flag.Flag) {
		if service[f.Name] && f.Name != "boot-status" && f.Name != "shutdown-via-init" {
			agent = append(agent, "-"+f.Name+"="+f.Value.String())
		}
	})
	in := initsys.New(initsys.Options{
		Logger:       newLogger(stderr, l).With("component", "init"),
		AgentArgv:    agent,
		CmdlinePath:  *cmdline,
		EtcDir:       *etc,
		WorkloadPath: *workload,
		StatusPath:   o.bootStatus,
		StopTimeout:  *stop,
		KeepRootRW:   *keepRW,
	})
	return in.Run()
}
