package firecracker

import (
	"context"
	"errors"
	"fmt"
	"os"
	"regexp"
	"strconv"
	"strings"
)

// Command is a program and its arguments, built by pure functions so that
// the command lines are tested without the binaries.
type Command struct {
	Path string
	Args []string
}

func (c Command) String() string { return strings.Join(append([]string{c.Path}, c.Args...), " ") }

// Firecracker is firecracker's own command line.
type Firecracker struct {
	// Binary is the firecracker executable.
	Binary string
	// APISocket is --api-sock. Under the jailer it is a path inside the
	// chroot (JailAPISocket); see Jailer.HostPath for the host side.
	APISocket string
	// ID is --id (see InstanceID). Ignored under the jailer, which passes its own.
	ID string
	// LogPath and Level set up the logger from the start (--log-path,
	// --level), so that errors before the first API call are logged too;
	// then Configure must not be given a Logger (Firecracker sets up its
	// logger once). Level: Error, Warning, Info, Debug, Trace, Off.
	LogPath string
	Level   string
	// NoSeccomp passes --no-seccomp. Off by default, and it should stay off
	// outside debugging: seccomp filters are half of Firecracker's isolation.
	NoSeccomp bool
}

// maxSocketPath is the longest unix socket path Linux takes (sun_path less its NUL).
const maxSocketPath = 107

var logLevels = []string{"Error", "Warning", "Info", "Debug", "Trace", "Off"}

// args returns the flags after the binary; withID false for the jailer.
func (f Firecracker) args(withID bool) ([]string, error) {
	if f.APISocket == "" {
		return nil, errors.New("firecracker: no API socket path (--api-sock)")
	}
	args := []string{"--api-sock", f.APISocket}
	if withID {
		if err := ValidateInstanceID(f.ID); err != nil {
			return nil, fmt.Errorf("firecracker --id: %w", err)
		}
		args = append(args, "--id", f.ID)
	}
	if f.LogPath != "" {
		args = append(args, "--log-path", f.LogPath)
	}
	if f.Level != "" {
		if !slicesContainsFold(logLevels, f.Level) {
			return nil, fmt.Errorf("firecracker --level %q: use one of %s", f.Level, strings.Join(logLevels, ", "))
		}
		args = append(args, "--level", f.Level)
	}
	if f.NoSeccomp {
		args = append(args, "--no-seccomp")
	}
	return args, nil
}

// Command is the command line of firecracker started directly:
//
//	firecracker --api-sock PATH --id ID [--log-path PATH] [--level LEVEL] [--no-seccomp]
func (f Firecracker) Command() (Command, error) {
	if f.Binary == "" {
		return Command{}, errors.New("firecracker: no binary path")
	}
	if len(f.APISocket) > maxSocketPath {
		return Command{}, fmt.Errorf("firecracker API socket %s is %d bytes, over Linux's %d: use a shorter runtime directory", f.APISocket, len(f.APISocket), maxSocketPath)
	}
	args, err := f.args(true)
	if err != nil {
		return Command{}, err
	}
	return Command{Path: f.Binary, Args: args}, nil
}

func slicesContainsFold(list []string, s string) bool {
	for _, e := range list {
		if strings.EqualFold(e, s) {
			return true
		}
	}
	return false
}

// ReadPIDFile reads a PID file such as the jailer's <exec-file-name>.pid.
func ReadPIDFile(path string) (int, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0, fmt.Errorf("pid file: %w", err)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil || pid <= 0 {
		return 0, fmt.Errorf("pid file %s: %q is not a process id", path, strings.TrimSpace(string(b)))
	}
	return pid, nil
}

// LaunchJailed starts the jailer, waits for it to hand over (with
// --new-pid-ns the jailer's own process exits once Firecracker runs) and
// returns Firecracker's PID from the jailer's PID file. The chroot must have
// been prepared (PrepareChroot). opts.NewSession is set by the jailer's
// mode: with --daemonize the jailer calls setsid itself and fails when it
// leads a process group; with KeepStdio it is started in a new session here,
// so that Firecracker outlives the launcher's.
//
// Firecracker is left an orphan, adopted by init or by the nearest
// subreaper, which must reap it; hold it with OpenPID to wait for or kill it.
func LaunchJailed(ctx context.Context, j Jailer, opts LaunchOptions) (int, error) {
	cmd, err := j.Command()
	if err != nil {
		return 0, err
	}
	opts.NewSession = j.KeepStdio
	p, err := Launch(cmd, opts)
	if err != nil {
		return 0, fmt.Errorf("jailer %s: %w", j.ID, err)
	}
	if err := p.Wait(ctx); err != nil {
		_ = p.Kill()
		return 0, fmt.Errorf("jailer %s: did not hand over to firecracker: %w", j.ID, err)
	}
	if err := p.ExitError(); err != nil {
		return 0, fmt.Errorf("jailer %s: %w (its stderr says why; with --daemonize, firecracker's log does)", j.ID, err)
	}
	pid, err := ReadPIDFile(j.PIDFile())
	if err != nil {
		return 0, fmt.Errorf("jailer %s: %w", j.ID, err)
	}
	return pid, nil
}

var cgroupRe = regexp.MustCompile(`^[a-z][a-z0-9_]*\.[a-z0-9_.]+=[^\n=]+$`)

// CPUMax is a --cgroup value capping the microVM at vcpus CPUs' worth of
// time (cgroup v2 cpu.max: quota and period in microseconds).
func CPUMax(vcpus int) string {
	const period = 100000
	return fmt.Sprintf("cpu.max=%d %d", vcpus*period, period)
}
