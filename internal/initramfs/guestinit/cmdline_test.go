package guestinit

import (
	"bytes"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"
)

func TestParseCmdline(t *testing.T) {
	def := Cmdline{Root: DefaultRoot, RootFSType: DefaultRootFSType, RootWait: DefaultRootWait}
	tests := []struct {
		name, in string
		want     Cmdline
	}{
		{"empty", "", def},
		{"kernel words only", "console=ttyS0 panic=-1 quiet\n", def},
		{"root and type", "root=/dev/vdb rootfstype=xfs rootflags=noatime,nouuid ro", Cmdline{Root: "/dev/vdb", RootFSType: "xfs", RootFlags: "noatime,nouuid", ReadOnly: true, RootWait: DefaultRootWait}},
		{"last of ro/rw wins", "ro rw", def},
		{"label", "root=LABEL=bangerroot", Cmdline{Root: "LABEL=bangerroot", RootFSType: "ext4", RootWait: DefaultRootWait}},
		{"init and its args", `banger.init=/sbin/testinit console=ttyS0 -- hello "two words"`, Cmdline{Root: DefaultRoot, RootFSType: "ext4", Init: "/sbin/testinit", InitArgs: []string{"hello", "two words"}, RootWait: DefaultRootWait}},
		{"quoted value", `rootflags="data=ordered,errors=remount-ro" banger.rootwait=2s`, Cmdline{Root: DefaultRoot, RootFSType: "ext4", RootFlags: "data=ordered,errors=remount-ro", RootWait: 2 * time.Second}},
		{"rootwait in seconds", "banger.rootwait=7", Cmdline{Root: DefaultRoot, RootFSType: "ext4", RootWait: 7 * time.Second}},
		{"bad rootwait ignored", "banger.rootwait=soon root=", def},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := ParseCmdline(tt.in); !reflect.DeepEqual(got, tt.want) {
				t.Errorf("ParseCmdline(%q)\n got %+v\nwant %+v", tt.in, got, tt.want)
			}
		})
	}
}

func TestInitCommand(t *testing.T) {
	has := func(paths ...string) func(string) bool {
		return func(p string) bool {
			for _, x := range paths {
				if p == x {
					return true
				}
			}
			return false
		}
	}
	tests := []struct {
		name   string
		cmd    Cmdline
		exists func(string) bool
		want   []string
		ok     bool
	}{
		{"agent by default", Cmdline{}, has(DefaultInit, FallbackInit), []string{DefaultInit, "init"}, true},
		{"fallback to /sbin/init", Cmdline{InitArgs: []string{"single"}}, has(FallbackInit), []string{FallbackInit, "single"}, true},
		{"neither", Cmdline{}, has(), []string{DefaultInit}, false},
		{"explicit init", Cmdline{Init: "/bin/sh", InitArgs: []string{"-x"}}, has("/bin/sh", DefaultInit), []string{"/bin/sh", "-x"}, true},
		{"explicit init missing: no fallback", Cmdline{Init: "/bin/sh"}, has(DefaultInit), []string{"/bin/sh"}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, ok := tt.cmd.InitCommand(tt.exists)
			if ok != tt.ok || !reflect.DeepEqual(got, tt.want) {
				t.Errorf("got %v %v, want %v %v", got, ok, tt.want, tt.ok)
			}
		})
	}
}

func TestConsoleAndLoadModules(t *testing.T) {
	var con, kmsg bytes.Buffer
	log := NewConsole(&con)
	log.Printf("one %d\n", 1)
	log.kmsg = &kmsg
	log.Printf("two")
	if got, want := con.String(), "banger-init: one 1\nbanger-init: two\n"; got != want {
		t.Errorf("console %q, want %q", got, want)
	}
	if got, want := kmsg.String(), "<7>banger-init: two\n"; got != want {
		t.Errorf("kmsg %q, want %q", got, want)
	}

	// A missing list loads nothing and fails nothing; an unreadable module
	// is reported by name and the rest go on.
	con.Reset()
	if failed := LoadModules(log, filepath.Join(t.TempDir(), "absent")); failed != nil {
		t.Errorf("missing list: failed %v, want none", failed)
	}
	list := filepath.Join(t.TempDir(), "modules")
	if err := os.WriteFile(list, []byte("# comment\n/nonexistent/a.ko\n\n/nonexistent/b.ko\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	failed := LoadModules(log, list)
	if !reflect.DeepEqual(failed, []string{"a.ko", "b.ko"}) {
		t.Errorf("failed %v, want [a.ko b.ko]", failed)
	}
	if !strings.Contains(con.String(), "load module /nonexistent/a.ko: open /nonexistent/a.ko: no such file or directory") {
		t.Errorf("console lacks the labelled error:\n%s", con.String())
	}
}
