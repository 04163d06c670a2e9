package jailhelper_test

import (
	"strings"
	"testing"

	"banger/internal/jailrun"
	"banger/internal/privileged"
	"banger/internal/vmm/firecracker"
)

// TestJailLayoutsAgree holds the helper's jail (jailrun, which the root binary links
// instead of the driver) to the driver's (firecracker.Jailer) for the same inputs:
// the same directories, PID file and jailer command line, so that bangerd finds the
// sockets and PID of every jail the helper builds. It also pins the helper's
// protocol constants to the driver's.
func TestJailLayoutsAgree(t *testing.T) {
	for _, tc := range []struct {
		name    string
		cgroups []string
		level   string
	}{
		{"plain", nil, ""},
		{"limits and level", []string{firecracker.CPUMax(2), "memory.max=1073741824"}, "Info"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			const base, exec, id = "/var/lib/banger/jail", "/usr/local/bin/firecracker", "0123456789abcdef"
			drv := firecracker.Jailer{
				Binary: "/usr/local/bin/jailer", ExecFile: exec, ID: id, UID: 1000, GID: 1000,
				ChrootBaseDir: base, Cgroups: tc.cgroups, KeepStdio: true,
				Firecracker: firecracker.Firecracker{LogPath: firecracker.JailLog, Level: tc.level},
			}
			hlp := jailrun.Jail{ExecFile: exec, Base: base, ID: id, UID: 1000, GID: 1000, Cgroups: tc.cgroups, Level: tc.level}
			for _, p := range []struct{ what, drv, hlp string }{
				{"jail dir", drv.JailDir(), hlp.Dir()},
				{"chroot", drv.ChrootDir(), hlp.ChrootDir()},
				{"pid file", drv.PIDFile(), hlp.PIDFile()},
				{"api socket", drv.APISocketHostPath(), hlp.HostPath(jailrun.APISocket)},
			} {
				if p.drv != p.hlp {
					t.Errorf("%s: driver %s, helper %s", p.what, p.drv, p.hlp)
				}
			}
			cmd, err := drv.Command()
			if err != nil {
				t.Fatal(err)
			}
			args, err := hlp.Args()
			if err != nil {
				t.Fatal(err)
			}
			if got, want := join(args), join(cmd.Args); got != want {
				t.Errorf("jailer arguments:\nhelper %s\ndriver %s", got, want)
			}
		})
	}
	for _, c := range []struct{ what, drv, hlp string }{
		{"api socket", firecracker.JailAPISocket, jailrun.APISocket},
		{"log", firecracker.JailLog, jailrun.LogPath},
		{"kernel", firecracker.JailKernel, privileged.JailDstKernel},
		{"initrd", firecracker.JailInitrd, privileged.JailDstInitrd},
		{"rootfs", firecracker.JailRootfs, privileged.JailDstRootfs},
	} {
		if c.drv != c.hlp {
			t.Errorf("%s: driver %q, helper %q", c.what, c.drv, c.hlp)
		}
	}
}

func join(s []string) string { return strings.Join(s, " ") }
