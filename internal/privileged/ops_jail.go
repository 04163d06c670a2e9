package privileged

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"
)

// JailRuntime is the jail ops' work after validation: Firecracker's jailer run with
// the helper's own binaries, chroot base (JailBase) and the owner's uid and gid.
// banger-helper passes internal/vmm/firecracker/jailhelper's Runner; this package
// cannot import the firecracker driver (it imports this package).
type JailRuntime interface {
	// Launch builds the jail of s.ID with s.Files and starts the jailer, its output
	// going to s.Console; it returns firecracker's host PID. On failure nothing runs
	// and the jail is gone.
	Launch(ctx context.Context, s JailSpec) (pid int, err error)
	// Signal sends sig to the firecracker of jail id after checking, by its PID file,
	// executable and (when not 0) start time, that the process is that jail's. A
	// process gone is no error.
	Signal(ctx context.Context, id string, sig syscall.Signal, start uint64) error
	// Remove deletes the jail of id. While its firecracker runs it returns an *Error
	// with CodeInvalid and removes nothing.
	Remove(ctx context.Context, id string) error
}

// jailRuntime is the helper's JailRuntime, or the error every jail op answers when
// the helper has no jailer.
func (s *Server) jailRuntime() (JailRuntime, error) {
	if s.cfg.Jail == nil {
		return nil, errors.New("this banger-helper has no jailer: set vmm.jailer in config.toml to the jailer binary (and vmm.firecracker to firecracker), then restart banger-helper")
	}
	return s.cfg.Jail, nil
}

// jailLaunch resolves and checks every file (jailFileSource), opens the console log
// beneath the root, hands it to the owner, and runs the jailer.
func (s *Server) jailLaunch(ctx context.Context, r *JailLaunchRequest) (JailLaunchResponse, error) {
	rt, err := s.jailRuntime()
	if err != nil {
		return JailLaunchResponse{}, err
	}
	spec := JailSpec{ID: r.ID, Cgroups: r.Cgroups}
	spec.LogLevel, _ = jailLogLevel(r.ID, r.FirecrackerArgs) // checked by jailLaunchSyntax
	defer func() {
		for _, f := range spec.Files {
			f.File.Close()
		}
	}()
	for _, f := range r.Files {
		src, e := s.v.jailFileSource(f)
		if e != nil {
			return JailLaunchResponse{}, e
		}
		file, err := s.openJailSource(f, src)
		if err != nil {
			return JailLaunchResponse{}, err
		}
		spec.Files = append(spec.Files, JailFile{Src: src, File: file, Dst: f.Dst, Writable: f.Writable})
	}
	console, err := s.openConsoleLog(r.ConsoleLog)
	if err != nil {
		return JailLaunchResponse{}, err
	}
	defer console.Close()
	spec.Console = console
	pid, err := rt.Launch(ctx, spec)
	if err != nil {
		return JailLaunchResponse{}, fmt.Errorf("jail %s: %w", r.ID, err)
	}
	return JailLaunchResponse{PID: pid}, nil
}

// openJailSource opens a validated source (real, symlink-free) as an O_PATH
// descriptor and re-checks it there: a file under the root is opened beneath it
// refusing symlinks and must be a regular file of root or the owner; a dm snapshot's
// node (under root-owned /dev) must be a block device.
func (s *Server) openJailSource(f JailFileSpec, real string) (*os.File, error) {
	var fd int
	var err error
	if strings.HasPrefix(f.Src, "/dev/mapper/") {
		fd, err = unix.Open(real, unix.O_PATH|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	} else {
		realRoot, e := s.v.realRoot()
		if e != nil {
			return nil, e
		}
		rel, ok := beneath(realRoot, real)
		if !ok {
			return nil, invalidf("src %q is not under the banger root %s", f.Src, s.v.root)
		}
		rootFD, err := unix.Open(realRoot, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
		if err != nil {
			return nil, fmt.Errorf("open banger root %s: %w", realRoot, err)
		}
		defer unix.Close(rootFD)
		fd, err = unix.Openat2(rootFD, rel, &unix.OpenHow{
			Flags:   unix.O_PATH | unix.O_NOFOLLOW | unix.O_CLOEXEC,
			Resolve: unix.RESOLVE_BENEATH | unix.RESOLVE_NO_SYMLINKS | unix.RESOLVE_NO_MAGICLINKS,
		})
		if err != nil {
			return nil, invalidf("src %q changed while it was being checked (%v): retry", f.Src, err)
		}
	}
	if err != nil {
		return nil, invalidf("src %q: %v", f.Src, err)
	}
	file := os.NewFile(uintptr(fd), real)
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		file.Close()
		return nil, fmt.Errorf("src %s: %w", f.Src, err)
	}
	kind := st.Mode & unix.S_IFMT
	dm := strings.HasPrefix(f.Src, "/dev/mapper/")
	if dm && kind != unix.S_IFBLK || !dm && (kind != unix.S_IFREG || (st.Uid != 0 && int(st.Uid) != s.cfg.OwnerUID)) {
		file.Close()
		return nil, invalidf("src %q changed while it was being checked: retry", f.Src)
	}
	return file, nil
}

// openConsoleLog opens (creating or truncating) a console log under the log
// directory, beneath the root with no symlink followed, and gives it to the owner.
// It must be a regular file with one link.
func (s *Server) openConsoleLog(p string) (*os.File, error) {
	realRoot, e := s.v.realRoot()
	if e != nil {
		return nil, e
	}
	rel, ok := beneath(s.v.root, p)
	if !ok {
		return nil, invalidf("console log %q is not under the banger root %s", p, s.v.root)
	}
	rootFD, err := unix.Open(realRoot, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("open banger root %s: %w", realRoot, err)
	}
	defer unix.Close(rootFD)
	fd, err := unix.Openat2(rootFD, rel, &unix.OpenHow{
		Flags:   unix.O_WRONLY | unix.O_CREAT | unix.O_APPEND | unix.O_NOFOLLOW | unix.O_CLOEXEC | unix.O_NONBLOCK,
		Mode:    0o640,
		Resolve: unix.RESOLVE_BENEATH | unix.RESOLVE_NO_SYMLINKS | unix.RESOLVE_NO_MAGICLINKS,
	})
	if err != nil {
		return nil, invalidf("console log %q: %v (symlinks on the way are refused)", p, err)
	}
	f := os.NewFile(uintptr(fd), filepath.Clean(p))
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		f.Close()
		return nil, fmt.Errorf("console log %s: %w", p, err)
	}
	if st.Mode&unix.S_IFMT != unix.S_IFREG || st.Nlink != 1 || (st.Uid != 0 && int(st.Uid) != s.cfg.OwnerUID) {
		f.Close()
		return nil, invalidf("console log %q must be a regular file with one link, owned by root or the owner", p)
	}
	if err := unix.Ftruncate(fd, 0); err != nil {
		f.Close()
		return nil, fmt.Errorf("console log %s: truncate: %w", p, err)
	}
	if err := unix.Fchown(fd, s.cfg.OwnerUID, s.cfg.OwnerGID); err != nil {
		f.Close()
		return nil, fmt.Errorf("console log %s: chown to the owner: %w", p, err)
	}
	// Back to blocking mode: the jailer's children write to it as stdout.
	if err := unix.SetNonblock(fd, false); err != nil {
		f.Close()
		return nil, fmt.Errorf("console log %s: %w", p, err)
	}
	return f, nil
}

func (s *Server) jailSignal(ctx context.Context, r *JailSignalRequest) (JailSignalResponse, error) {
	rt, err := s.jailRuntime()
	if err != nil {
		return JailSignalResponse{}, err
	}
	sig, _ := JailSignalByName(r.Signal) // checked by jailSignal validation
	if err := rt.Signal(ctx, r.ID, sig, r.PIDStart); err != nil {
		return JailSignalResponse{}, fmt.Errorf("jail %s: %s: %w", r.ID, r.Signal, err)
	}
	return JailSignalResponse{}, nil
}

func (s *Server) jailRemove(ctx context.Context, r *JailRemoveRequest) (JailRemoveResponse, error) {
	rt, err := s.jailRuntime()
	if err != nil {
		return JailRemoveResponse{}, err
	}
	if err := rt.Remove(ctx, r.ID); err != nil {
		return JailRemoveResponse{}, fmt.Errorf("jail %s: %w", r.ID, err)
	}
	return JailRemoveResponse{}, nil
}
