package consolelog

import (
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strconv"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// The logger process is this program run again with these variables set.
const (
	envLogger = "BANGER_CONSOLE_LOGGER" // the log's path: its presence makes a logger
	envMax    = "BANGER_CONSOLE_LOG_MAX"
)

// loggerName is the logger's argv[0], what ps shows for it.
const loggerName = "banger-console-log"

// logFD is the descriptor the logger inherits the locked, fresh log on; its
// stdin is the console pipe.
const logFD = 3

// init turns this process into a console logger when started as one. It is in
// init, not behind a call in main, because any program that links the package
// can start a logger (bangerd, and the test binaries of the VMM drivers): one
// that forgot the call would run itself again, whole, for every VM.
func init() {
	path, ok := os.LookupEnv(envLogger)
	if !ok {
		return
	}
	if err := serve(path, os.Getenv(envMax)); err != nil {
		fmt.Fprintln(os.Stderr, loggerName+":", err)
		os.Exit(1)
	}
	os.Exit(0)
}

// serve copies stdin into the log until stdin ends (every writer, the VMM
// included, has closed it). A write failure (disk full) does not stop it:
// it keeps reading and dropping, so the VMM never blocks on a full pipe.
func serve(path, maxStr string) error {
	max, err := maxFromEnv(maxStr)
	if err != nil {
		return err
	}
	f := os.NewFile(logFD, path)
	if f == nil {
		return errors.New("no log descriptor")
	}
	fi, err := f.Stat()
	if err != nil {
		return fmt.Errorf("log descriptor: %w", err)
	}
	l := &Log{path: path, half: max / 2, f: f, size: fi.Size()}
	defer l.Close()
	buf := make([]byte, 64<<10)
	for {
		n, err := os.Stdin.Read(buf)
		if n > 0 {
			_, _ = l.Write(buf[:n])
		}
		if err == io.EOF {
			return nil
		}
		if err != nil && !errors.Is(err, syscall.EINTR) {
			return fmt.Errorf("read console: %w", err)
		}
		// A serial port is written a byte at a time: reading each as it comes
		// would cost a wake-up and a file write per byte, and on a busy host
		// slow the guest's console (and the host) several times over. Let a
		// small read's successors gather in the pipe for a moment; a full pipe
		// (64 KiB) is read at once, so the VMM waits on us only under a flood.
		if n < len(buf)/2 {
			time.Sleep(coalesce)
		}
	}
}

// coalesce is how long the logger lets console output gather after a small
// read: short enough that `vm logs -f` still reads as live.
const coalesce = 20 * time.Millisecond

// Start starts a fresh capped log at path (max bytes; 0: DefaultMax) and its
// logger process, and returns the pipe the VMM must write its console to. The
// caller hands it to the VMM and then closes its own copy: the logger ends when
// the last copy closes, so a VMM that fails to start ends its logger too.
//
// The logger runs detached (its own session, stdout and stderr on /dev/null) and
// outlives bangerd as the VMM does.
func Start(path string, max int64) (*os.File, error) {
	l, err := Create(path, max)
	if err != nil {
		return nil, err
	}
	// The child inherits the locked file: the lock is on the open file, so it
	// stays held, by the logger, after we close our copy. Settle cannot see the
	// log unlocked between now and the logger's start.
	defer l.Close()
	return spawn(l.f, path, max, nil)
}

// StartOnFile is Start for a log that someone else opened: f is the log at path,
// already open for appending (banger-helper opens a jailed VM's console log beneath
// the root by descriptor, never by path, see privileged's openConsoleLog), and the
// logger runs as cred. Root uses it so that the logger, which renames and creates
// the log's halves by path in the owner's directory, does so with the owner's
// rights, not root's.
func StartOnFile(f *os.File, path string, max int64, cred *syscall.Credential) (*os.File, error) {
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		return nil, fmt.Errorf("console log %s: another logger holds it (%w): is the VM still running?", path, err)
	}
	return spawn(f, path, max, cred)
}

// selfExe is what the logger runs: this very binary, even if the file it came
// from was replaced since. Tests point it at a copy an unprivileged user can run.
var selfExe = "/proc/self/exe"

// spawn starts the logger on the locked log f (path), as cred when set.
func spawn(f *os.File, path string, max int64, cred *syscall.Credential) (*os.File, error) {
	if max == 0 {
		max = DefaultMax
	}
	if max < MinMax {
		return nil, fmt.Errorf("console log cap %d is below the minimum %d", max, MinMax)
	}
	r, w, err := os.Pipe()
	if err != nil {
		return nil, fmt.Errorf("console pipe: %w", err)
	}
	defer r.Close()
	cmd := &exec.Cmd{
		Path: selfExe,
		Args: []string{loggerName, path},
		Env: []string{
			envLogger + "=" + path,
			envMax + "=" + strconv.FormatInt(max, 10),
			"GOMAXPROCS=1",
		},
		Stdin:       r,
		ExtraFiles:  []*os.File{f}, // logFD
		SysProcAttr: &syscall.SysProcAttr{Setsid: true, Credential: cred},
	}
	if err := cmd.Start(); err != nil {
		w.Close()
		self, _ := os.Executable()
		return nil, fmt.Errorf("start console logger (%s): %w", self, err)
	}
	// Reap it while we are its parent; after a restart init does.
	go func() { _ = cmd.Wait() }()
	return w, nil
}
