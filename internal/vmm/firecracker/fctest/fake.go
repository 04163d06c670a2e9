package fctest

import (
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"sync/atomic"
	"syscall"
	"time"
)

// Environment of a fake firecracker process (RunFake).
const (
	// FakeSpecEnv is the path of the spec the fake holds requests to (required).
	FakeSpecEnv = "FCTEST_SPEC"
	// FakeJournalEnv is a file the fake appends every Record to, one JSON line each.
	FakeJournalEnv = "FCTEST_JOURNAL"
	// FakeCtrlAltDelEnv says what the "guest" does on SendCtrlAltDel:
	// "exit" (default: a guest booted with reboot=k; the process exits 0
	// shortly after answering) or "ignore" (a guest that never shuts down).
	FakeCtrlAltDelEnv = "FCTEST_CTRL_ALT_DEL"
	// FakeRootEnv emulates a chroot (Options.Root): the fake jailer sets it
	// to the jail's root, and every path, --api-sock and --log-path
	// included, is taken under it.
	FakeRootEnv = "FCTEST_ROOT"
)

// fakeGuestShutdown is how long the fake's "guest" takes to shut down after
// SendCtrlAltDel before the process exits.
const fakeGuestShutdown = 50 * time.Millisecond

// RunFake is the main of a fake firecracker process: it takes Firecracker's
// command line (--api-sock, --id, --log-path, --level, --no-seccomp,
// --version, and the jailer's --start-time-* flags), serves the contract
// Server on the API socket, and exits on SIGTERM (like Firecracker, with no
// guest shutdown) or when its guest reboots (see guest: on SendCtrlAltDel,
// unless FCTEST_CTRL_ALT_DEL=ignore, or when $FCTEST_AGENT_BIN's agent is
// asked to). Its stdout is the guest's serial console. A test binary becomes
// a fake firecracker by calling it from TestMain when an environment
// variable it chose is set. It returns the exit code.
func RunFake(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("firecracker", flag.ContinueOnError)
	fs.SetOutput(stderr)
	apiSock := fs.String("api-sock", "/run/firecracker.socket", "API socket path")
	id := fs.String("id", "anonymous-instance", "microVM id")
	logPath := fs.String("log-path", "", "log file")
	fs.String("level", "", "log level")
	fs.Bool("no-seccomp", false, "disable seccomp")
	version := fs.Bool("version", false, "print the version and exit")
	fs.String("start-time-us", "", "set by the jailer")
	fs.String("start-time-cpu-us", "", "set by the jailer")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "firecracker (fctest): unexpected arguments %q\n", fs.Args())
		return 2
	}
	spec, err := LoadSpec(os.Getenv(FakeSpecEnv))
	if err != nil {
		fmt.Fprintf(stderr, "firecracker (fctest): $%s: %v\n", FakeSpecEnv, err)
		return 1
	}
	if *version {
		fmt.Fprintf(stdout, "Firecracker v%s\n", spec.Version)
		return 0
	}
	root := os.Getenv(FakeRootEnv)
	if *logPath != "" {
		if _, err := os.Stat(filepath.Join(root, *logPath)); err != nil {
			fmt.Fprintf(stderr, "firecracker (fctest): --log-path: %v\n", err)
			return 1
		}
	}
	opts := Options{InstanceID: *id, Root: root}
	if p := os.Getenv(FakeJournalEnv); p != "" {
		f, err := os.OpenFile(p, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
		if err != nil {
			fmt.Fprintf(stderr, "firecracker (fctest): journal: %v\n", err)
			return 1
		}
		defer f.Close()
		opts.Journal = f
	}
	exit := make(chan int, 1)
	g := newGuest(os.Getenv(FakeAgentEnv), stdout, func(code int) {
		select {
		case exit <- code:
		default:
		}
	})
	defer g.kill()
	opts.VsockDial = g.dial
	ignore := os.Getenv(FakeCtrlAltDelEnv) == "ignore"
	// The handlers run on the server's goroutines: they get the server
	// through an atomic, set once NewServer returns (before any InstanceStart
	// can arrive: it needs a boot source first).
	var self atomic.Pointer[Server]
	opts.OnAction = func(action string) {
		switch {
		case action == "InstanceStart":
			g.boot(self.Load().Boot())
		case action == "SendCtrlAltDel" && !ignore:
			time.AfterFunc(fakeGuestShutdown, g.ctrlAltDel)
		}
	}
	// The guest's systemctl signals its shutdowns (see guest).
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT, syscall.SIGUSR1, syscall.SIGUSR2)
	srv, err := NewServer(spec, filepath.Join(root, *apiSock), opts)
	if err != nil {
		fmt.Fprintf(stderr, "firecracker (fctest): %v\n", err)
		return 1
	}
	self.Store(srv)
	defer srv.Close()
	for {
		select {
		case code := <-exit:
			return code
		case sig := <-sigs:
			switch sig {
			case syscall.SIGUSR1:
				go g.shutdown("poweroff")
			case syscall.SIGUSR2:
				go g.shutdown("reboot")
			default:
				// Firecracker dies on SIGTERM with no guest shutdown; 128+signal as a shell reports it.
				return 128 + int(sig.(syscall.Signal))
			}
		}
	}
}
