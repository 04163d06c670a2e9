package firecracker_test

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"banger/internal/vmm/firecracker"
)

func TestFirecrackerCommand(t *testing.T) {
	base := firecracker.Firecracker{Binary: "/usr/bin/firecracker", APISocket: "/run/banger/vms/0123abcd.api.sock", ID: "0123abcd"}
	for _, tt := range []struct {
		name    string
		edit    func(*firecracker.Firecracker)
		want    []string
		wantErr string
	}{
		{"minimal", func(*firecracker.Firecracker) {}, []string{"--api-sock", "/run/banger/vms/0123abcd.api.sock", "--id", "0123abcd"}, ""},
		{"logging and no seccomp", func(f *firecracker.Firecracker) { f.LogPath, f.Level, f.NoSeccomp = "/var/log/fc.log", "Debug", true },
			[]string{"--api-sock", "/run/banger/vms/0123abcd.api.sock", "--id", "0123abcd", "--log-path", "/var/log/fc.log", "--level", "Debug", "--no-seccomp"}, ""},
		{"no binary", func(f *firecracker.Firecracker) { f.Binary = "" }, nil, "no binary"},
		{"no socket", func(f *firecracker.Firecracker) { f.APISocket = "" }, nil, "no API socket"},
		{"underscore id", func(f *firecracker.Firecracker) { f.ID = "vm_1" }, nil, `instance id "vm_1"`},
		{"bad level", func(f *firecracker.Firecracker) { f.Level = "Loud" }, nil, `--level "Loud"`},
		{"socket too long", func(f *firecracker.Firecracker) { f.APISocket = "/" + strings.Repeat("s", 110) }, nil, "over Linux's 107"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			f := base
			tt.edit(&f)
			cmd, err := f.Command()
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("got %v, want an error containing %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if cmd.Path != f.Binary || !slices.Equal(cmd.Args, tt.want) {
				t.Errorf("got %s %q, want %s %q", cmd.Path, cmd.Args, f.Binary, tt.want)
			}
		})
	}
}

func jailerExample() firecracker.Jailer {
	return firecracker.Jailer{
		Binary:        "/usr/bin/jailer",
		ExecFile:      "/usr/bin/firecracker",
		ID:            "0123abcd",
		UID:           990,
		GID:           990,
		ChrootBaseDir: "/var/lib/banger/jail",
		NetNS:         "banger",
		Cgroups:       []string{firecracker.CPUMax(2), "memory.max=1073741824"},
		Firecracker:   firecracker.Firecracker{LogPath: firecracker.JailLog, Level: "Info", ID: "ignored"},
	}
}

func TestJailerCommand(t *testing.T) {
	cmd, err := jailerExample().Command()
	if err != nil {
		t.Fatal(err)
	}
	want := []string{
		"--id", "0123abcd", "--exec-file", "/usr/bin/firecracker", "--uid", "990", "--gid", "990",
		"--chroot-base-dir", "/var/lib/banger/jail", "--cgroup-version", "2",
		"--cgroup", "cpu.max=200000 100000", "--cgroup", "memory.max=1073741824",
		"--netns", "/var/run/netns/banger", "--daemonize", "--new-pid-ns",
		"--", "--api-sock", "/run/firecracker.socket", "--log-path", "/firecracker.log", "--level", "Info",
	}
	if cmd.Path != "/usr/bin/jailer" || !slices.Equal(cmd.Args, want) {
		t.Errorf("got\n%q\nwant\n%q", cmd.Args, want)
	}
	// The jailer passes --id to Firecracker itself; a second one would be refused.
	if n := slices.Index(cmd.Args, "--"); slices.Contains(cmd.Args[n:], "--id") {
		t.Error("--id forwarded to firecracker")
	}
}

// TestJailerCommandKeepStdio: without --daemonize Firecracker keeps the
// jailer's stdout, its serial console; nothing else changes.
func TestJailerCommandKeepStdio(t *testing.T) {
	daemonized, err := jailerExample().Command()
	if err != nil {
		t.Fatal(err)
	}
	j := jailerExample()
	j.KeepStdio = true
	cmd, err := j.Command()
	if err != nil {
		t.Fatal(err)
	}
	want := slices.DeleteFunc(slices.Clone(daemonized.Args), func(a string) bool { return a == "--daemonize" })
	if !slices.Equal(cmd.Args, want) {
		t.Errorf("got\n%q\nwant\n%q", cmd.Args, want)
	}
}

func TestJailerValidate(t *testing.T) {
	for _, tt := range []struct {
		name    string
		edit    func(*firecracker.Jailer)
		wantErr string
	}{
		{"root uid", func(j *firecracker.Jailer) { j.UID = 0 }, "must not run as root"},
		{"relative exec file", func(j *firecracker.Jailer) { j.ExecFile = "firecracker" }, "absolute path"},
		{"bad id", func(j *firecracker.Jailer) { j.ID = "vm_1" }, "--id"},
		{"netns path", func(j *firecracker.Jailer) { j.NetNS = "/var/run/netns/x" }, "--netns"},
		{"bad cgroup", func(j *firecracker.Jailer) { j.Cgroups = []string{"cpu.max"} }, "--cgroup"},
		{"cgroup newline", func(j *firecracker.Jailer) { j.Cgroups = []string{"cpu.max=1\n2"} }, "--cgroup"},
		{"relative base", func(j *firecracker.Jailer) { j.ChrootBaseDir = "jail" }, "--chroot-base-dir"},
		{"socket too long", func(j *firecracker.Jailer) { j.ChrootBaseDir = "/" + strings.Repeat("d", 60) }, "over Linux's 107"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			j := jailerExample()
			tt.edit(&j)
			_, err := j.Command()
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("got %v, want an error containing %q", err, tt.wantErr)
			}
		})
	}
}

func TestJailerPaths(t *testing.T) {
	j := jailerExample()
	for _, tt := range []struct{ got, want string }{
		{j.JailDir(), "/var/lib/banger/jail/firecracker/0123abcd"},
		{j.ChrootDir(), "/var/lib/banger/jail/firecracker/0123abcd/root"},
		{j.APISocketHostPath(), "/var/lib/banger/jail/firecracker/0123abcd/root/run/firecracker.socket"},
		{j.HostPath(firecracker.JailVsockSocket), "/var/lib/banger/jail/firecracker/0123abcd/root/run/vsock.sock"},
		{j.PIDFile(), "/var/lib/banger/jail/firecracker/0123abcd/root/firecracker.pid"},
	} {
		if tt.got != tt.want {
			t.Errorf("got %s, want %s", tt.got, tt.want)
		}
	}
	j.ChrootBaseDir = ""
	if got, want := j.ChrootDir(), "/srv/jailer/firecracker/0123abcd/root"; got != want {
		t.Errorf("default base: got %s, want %s", got, want)
	}
}

func TestReadPIDFile(t *testing.T) {
	dir := t.TempDir()
	for _, tt := range []struct {
		content string
		want    int
	}{
		{"4242", 4242},
		{"4242\n", 4242},
		{"", 0},
		{"abc", 0},
		{"-1", 0},
		{"0", 0},
	} {
		p := filepath.Join(dir, "fc.pid")
		if err := os.WriteFile(p, []byte(tt.content), 0o600); err != nil {
			t.Fatal(err)
		}
		got, err := firecracker.ReadPIDFile(p)
		if tt.want == 0 && err == nil {
			t.Errorf("%q: got %d, want an error", tt.content, got)
		}
		if tt.want != 0 && (err != nil || got != tt.want) {
			t.Errorf("%q: got %d, %v; want %d", tt.content, got, err, tt.want)
		}
	}
	if _, err := firecracker.ReadPIDFile(filepath.Join(dir, "missing")); err == nil {
		t.Error("missing file: got nil error")
	}
}
