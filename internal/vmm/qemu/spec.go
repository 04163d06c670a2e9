package qemu

import (
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"

	"golang.org/x/sys/unix"

	"banger/internal/vmm"
)

// validate checks a spec before anything is created, so that the common
// mistakes get an error that says what to fix rather than QEMU's.
func validate(s vmm.Spec) error {
	var errs []error
	if s.CPUs < 1 {
		errs = append(errs, fmt.Errorf("cpus %d: want at least 1", s.CPUs))
	}
	if s.MemoryMiB < 1 {
		errs = append(errs, fmt.Errorf("memory %d MiB: want at least 1", s.MemoryMiB))
	}
	if err := vmm.CheckFile("kernel", s.Kernel); err != nil {
		errs = append(errs, err)
	}
	if s.Initrd != "" {
		if err := vmm.CheckFile("initrd", s.Initrd); err != nil {
			errs = append(errs, err)
		}
	}
	if err := vmm.CheckFile("root disk", s.Root.Path); err != nil {
		errs = append(errs, err)
	} else if !s.Root.ReadOnly {
		if err := unix.Access(s.Root.Path, unix.W_OK); err != nil {
			errs = append(errs, fmt.Errorf("root disk %s is not writable: %w", s.Root.Path, err))
		}
	}
	if s.Root.Format != "raw" && s.Root.Format != "qcow2" {
		errs = append(errs, fmt.Errorf("root disk format %q: want raw or qcow2", s.Root.Format))
	}
	if fi, err := os.Stat(s.RunDir); s.RunDir == "" || err != nil || !fi.IsDir() {
		errs = append(errs, fmt.Errorf("runtime directory %q must exist (the VMService creates it)", s.RunDir))
	}
	if s.ConsoleLog == "" {
		errs = append(errs, errors.New("no console log path"))
	} else if fi, err := os.Stat(filepath.Dir(s.ConsoleLog)); err != nil || !fi.IsDir() {
		errs = append(errs, fmt.Errorf("console log directory %s must exist", filepath.Dir(s.ConsoleLog)))
	}
	if s.MAC != "" {
		if _, err := net.ParseMAC(s.MAC); err != nil {
			errs = append(errs, fmt.Errorf("mac %q: %w", s.MAC, err))
		}
	}
	if strings.ContainsAny(s.Tap, ", \t\n") {
		errs = append(errs, fmt.Errorf("tap name %q is not a network interface name", s.Tap))
	}
	return errors.Join(errs...)
}

// directIO reports whether path can be opened with O_DIRECT (tmpfs cannot),
// which cache=none needs.
func directIO(path string, readOnly bool) bool {
	flags := unix.O_RDWR
	if readOnly {
		flags = unix.O_RDONLY
	}
	fd, err := unix.Open(path, flags|unix.O_DIRECT|unix.O_CLOEXEC, 0)
	if err != nil {
		return false
	}
	unix.Close(fd)
	return true
}
