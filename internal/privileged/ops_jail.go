package privileged

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"syscall"

	"golang.org/x/sys/unix"

	"banger/internal/consolelog"
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

// jailLaunch checks where every file is (jailFileSource), opens each beneath the
// root and checks what it found (openJailSource), opens the console log
// (openConsoleLog) and runs the jailer.
func (s *Server) jailLaunch(ctx context.Context, r *JailLaunchRequest) (JailLaunchResponse, error) {
	rt, err := s.jailRuntime()
	if err != nil {
		return JailLaunchResponse{}, err
	}
	// A runtime without usable binaries says so before any file is opened or made.
	if m, ok := rt.(interface{ Missing() string }); ok && m.Missing() != "" {
		return JailLaunchResponse{}, errors.New(m.Missing())
	}
	spec := JailSpec{ID: r.ID, Cgroups: r.Cgroups}
	spec.LogLevel, _ = jailLogLevel(r.ID, r.FirecrackerArgs) // checked by jailLaunchSyntax
	defer func() {
		for _, f := range spec.Files {
			f.File.Close()
		}
	}()
	for _, f := range r.Files {
		src, e := s.v.jailFileSource(r.ID, f)
		if e != nil {
			return JailLaunchResponse{}, e
		}
		file, err := s.openJailSource(f, src)
		if err != nil {
			return JailLaunchResponse{}, err
		}
		spec.Files = append(spec.Files, JailFile{Src: f.Src, File: file, Dst: f.Dst, Writable: f.Writable})
	}
	console, err := s.openConsoleLog(r.ConsoleLog)
	if err != nil {
		return JailLaunchResponse{}, err
	}
	defer console.Close()
	// The guest writes its console without end: Firecracker gets a pipe to a capped
	// logger (console.max_size), as unjailed VMMs do. The logger renames and makes
	// the log's halves by path in the owner's logs/vms, so it runs as the owner.
	start := s.cfg.startConsole
	if start == nil {
		start = consolelog.StartOnFile
	}
	pipe, err := start(console, r.ConsoleLog, s.cfg.ConsoleMax, &syscall.Credential{
		Uid: uint32(s.cfg.OwnerUID), Gid: uint32(s.cfg.OwnerGID), Groups: []uint32{},
	})
	if err != nil {
		return JailLaunchResponse{}, fmt.Errorf("jail %s: console log: %w (the owner must be able to run banger-helper's binary)", r.ID, err)
	}
	defer pipe.Close()
	spec.Console = pipe
	pid, err := rt.Launch(ctx, spec)
	if err != nil {
		return JailLaunchResponse{}, fmt.Errorf("jail %s: %w", r.ID, err)
	}
	return JailLaunchResponse{PID: pid}, nil
}

// resolveNoLinks is openat2's resolution for every path the helper opens under the
// root: never above the directory descriptor, no symlink at all, no magic link.
const resolveNoLinks = unix.RESOLVE_BENEATH | unix.RESOLVE_NO_SYMLINKS | unix.RESOLVE_NO_MAGICLINKS

// openJailSource opens a located source as an O_PATH descriptor and checks it
// there: a file beneath the root (no symlink on the way) must be a regular file of
// the owner's with one link; a dm snapshot's node (under root-owned /dev) a block
// device. Only the owner's files are placed, because placing never changes an
// owner (Runner.place): the jailed firecracker, running as the owner, can then use
// them exactly as the owner could, and no file of root's is ever lent out.
func (s *Server) openJailSource(f JailFileSpec, src jailSource) (*os.File, error) {
	var fd int
	if src.Dev != "" {
		var err error
		if fd, err = unix.Open(src.Dev, unix.O_PATH|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0); err != nil {
			return nil, invalidf("src %q: %v", f.Src, err)
		}
	} else {
		rootFD, err := unix.Open(src.Root, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
		if err != nil {
			return nil, fmt.Errorf("open banger root %s: %w", src.Root, err)
		}
		defer unix.Close(rootFD)
		fd, err = unix.Openat2(rootFD, src.Rel, &unix.OpenHow{
			Flags:   unix.O_PATH | unix.O_NOFOLLOW | unix.O_CLOEXEC,
			Resolve: resolveNoLinks,
		})
		if err != nil {
			return nil, invalidf("src %q: %v (a symlink anywhere on the way is refused: send the real path)", f.Src, err)
		}
	}
	file := os.NewFile(uintptr(fd), f.Src)
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		file.Close()
		return nil, fmt.Errorf("src %s: %w", f.Src, err)
	}
	kind := st.Mode & unix.S_IFMT
	var e *Error
	switch {
	case src.Dev != "" && kind != unix.S_IFBLK:
		e = invalidf("src %q is not a block device", f.Src)
	case src.Dev != "":
	case kind != unix.S_IFREG:
		e = invalidf("src %q is a %s: the helper places only regular files and this VM's dm snapshot", f.Src, fileKind(modeFromStat(st.Mode)))
	case st.Nlink != 1:
		e = invalidf("src %q has %d hard links: the helper places only files with exactly one", f.Src, st.Nlink)
	case int(st.Uid) != s.cfg.OwnerUID:
		e = invalidf("src %q belongs to uid %d: the helper places only the owner's (uid %d) files", f.Src, st.Uid, s.cfg.OwnerUID)
	}
	if e != nil {
		file.Close()
		return nil, e
	}
	return file, nil
}

// openConsoleLog opens the VM's console log (checkConsoleLog placed it) for
// appending, beneath the root with no symlink followed. logs/vms is the owner's, so
// whatever is found there is treated as the owner's doing: a new file is created
// (O_EXCL, so it is one the helper made) and given to the owner; an existing one is
// used only if it is already the owner's regular file with one link, and is never
// truncated or chowned. So the helper can neither wipe nor give away a file it did
// not make, whatever the owner links or renames into place.
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
	const flags = unix.O_WRONLY | unix.O_APPEND | unix.O_NOFOLLOW | unix.O_CLOEXEC | unix.O_NONBLOCK | unix.O_NOCTTY
	created := true
	fd, err := unix.Openat2(rootFD, rel, &unix.OpenHow{Flags: flags | unix.O_CREAT | unix.O_EXCL, Mode: 0o640, Resolve: resolveNoLinks})
	if errors.Is(err, unix.EEXIST) {
		created = false
		fd, err = unix.Openat2(rootFD, rel, &unix.OpenHow{Flags: flags, Resolve: resolveNoLinks})
	}
	if err != nil {
		return nil, invalidf("console log %q: %v (a symlink on the way is refused)", p, err)
	}
	f := os.NewFile(uintptr(fd), filepath.Clean(p))
	fail := func(err error) (*os.File, error) {
		f.Close()
		return nil, err
	}
	if created {
		if err := unix.Fchown(fd, s.cfg.OwnerUID, s.cfg.OwnerGID); err != nil {
			return fail(fmt.Errorf("console log %s: give it to the owner: %w", p, err))
		}
	} else {
		var st unix.Stat_t
		if err := unix.Fstat(fd, &st); err != nil {
			return fail(fmt.Errorf("console log %s: %w", p, err))
		}
		if st.Mode&unix.S_IFMT != unix.S_IFREG || st.Nlink != 1 || int(st.Uid) != s.cfg.OwnerUID {
			return fail(invalidf("console log %q exists and is not the owner's regular file with one link: remove it and start the VM again", p))
		}
	}
	// Back to blocking mode: the jailer's children write to it as stdout.
	if err := unix.SetNonblock(fd, false); err != nil {
		return fail(fmt.Errorf("console log %s: %w", p, err))
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
