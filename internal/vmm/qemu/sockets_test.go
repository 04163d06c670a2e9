package qemu

import (
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"banger/internal/vmm"
)

func TestListenUnix(t *testing.T) {
	dir := shortDir(t)
	t.Run("fresh, 0600, accepts before anyone serves", func(t *testing.T) {
		p := filepath.Join(dir, "fresh.sock")
		f, err := listenUnix(p)
		if err != nil {
			t.Fatalf("listenUnix: %v", err)
		}
		defer f.Close()
		fi, err := os.Lstat(p)
		if err != nil || fi.Mode().Type() != os.ModeSocket || fi.Mode().Perm() != 0o600 {
			t.Fatalf("socket file: %v, %v; want a socket with mode 0600", fi.Mode(), err)
		}
		c, err := net.Dial("unix", p) // queued in the backlog: nobody accepts yet
		if err != nil {
			t.Fatalf("dial a listening socket nobody serves yet: %v", err)
		}
		c.Close()
	})
	t.Run("stale socket is replaced", func(t *testing.T) {
		p := filepath.Join(dir, "stale.sock")
		old, err := listenUnix(p)
		if err != nil {
			t.Fatal(err)
		}
		old.Close() // the file stays, nobody listens: a VMM killed with SIGKILL
		f, err := listenUnix(p)
		if err != nil {
			t.Fatalf("listenUnix over a stale socket: %v", err)
		}
		f.Close()
	})
	t.Run("live socket is refused", func(t *testing.T) {
		p := filepath.Join(dir, "live.sock")
		l, err := net.Listen("unix", p)
		if err != nil {
			t.Fatal(err)
		}
		defer l.Close()
		if f, err := listenUnix(p); err == nil || !strings.Contains(err.Error(), "in use") {
			if f != nil {
				f.Close()
			}
			t.Fatalf("listenUnix over a live socket: %v, want an in-use error", err)
		}
	})
	t.Run("other file is refused and kept", func(t *testing.T) {
		p := writeFile(t, dir, "file.sock", "data")
		if _, err := listenUnix(p); err == nil || !strings.Contains(err.Error(), "not a socket") {
			t.Fatalf("listenUnix over a regular file: %v, want a not-a-socket error", err)
		}
		if b, err := os.ReadFile(p); err != nil || string(b) != "data" {
			t.Errorf("the regular file was touched: %q, %v", b, err)
		}
	})
	t.Run("path too long", func(t *testing.T) {
		p := filepath.Join(dir, strings.Repeat("x", 120))
		if _, err := listenUnix(p); err == nil || !strings.Contains(err.Error(), "shorter runtime directory") {
			t.Fatalf("listenUnix with a long path: %v", err)
		}
	})
}

func TestRemoveSockets(t *testing.T) {
	dir := shortDir(t)
	sock := filepath.Join(dir, "a.sock")
	f, err := listenUnix(sock)
	if err != nil {
		t.Fatal(err)
	}
	f.Close()
	file := writeFile(t, dir, "not-a-socket", "keep me")
	err = vmm.RemoveSockets(sock, file, filepath.Join(dir, "missing.sock"), "")
	if err == nil || !strings.Contains(err.Error(), "not a socket") {
		t.Errorf("RemoveSockets: %v, want an error about the regular file", err)
	}
	if _, err := os.Lstat(sock); !os.IsNotExist(err) {
		t.Errorf("socket still there: %v", err)
	}
	if _, err := os.Stat(file); err != nil {
		t.Errorf("a regular file named in a handle was removed: %v", err)
	}
}

func TestValidate(t *testing.T) {
	dir := shortDir(t)
	kernel := writeFile(t, dir, "vmlinuz", "k")
	disk := writeFile(t, dir, "root.img", "d")
	good := vmm.Spec{
		CPUs: 1, MemoryMiB: 128, Kernel: kernel,
		Root:   vmm.Disk{Path: disk, Format: "raw"},
		RunDir: dir, ConsoleLog: filepath.Join(dir, "console.log"),
	}
	if err := validate(good); err != nil {
		t.Fatalf("validate(good spec): %v", err)
	}
	tests := []struct {
		name   string
		modify func(*vmm.Spec)
		want   string
	}{
		{"no cpus", func(s *vmm.Spec) { s.CPUs = 0 }, "cpus 0"},
		{"no memory", func(s *vmm.Spec) { s.MemoryMiB = 0 }, "memory 0 MiB"},
		{"missing kernel", func(s *vmm.Spec) { s.Kernel = filepath.Join(dir, "nope") }, "kernel " + dir + "/nope does not exist"},
		{"kernel is a directory", func(s *vmm.Spec) { s.Kernel = dir }, "is not a file"},
		{"missing initrd", func(s *vmm.Spec) { s.Initrd = filepath.Join(dir, "nope") }, "initrd"},
		{"unknown format", func(s *vmm.Spec) { s.Root.Format = "vmdk" }, `format "vmdk"`},
		{"no run dir", func(s *vmm.Spec) { s.RunDir = filepath.Join(dir, "nope") }, "runtime directory"},
		{"no console", func(s *vmm.Spec) { s.ConsoleLog = "" }, "no console log"},
		{"console dir missing", func(s *vmm.Spec) { s.ConsoleLog = "/nonexistent/x.log" }, "console log directory"},
		{"bad mac", func(s *vmm.Spec) { s.MAC = "02:00" }, "mac"},
		{"bad tap", func(s *vmm.Spec) { s.Tap = "tap,x" }, "tap name"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := good
			tt.modify(&s)
			err := validate(s)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("validate: %v, want an error mentioning %q", err, tt.want)
			}
		})
	}
}
