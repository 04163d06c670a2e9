package qemu

import (
	"slices"
	"strings"
	"testing"

	"banger/internal/vmm"
)

func TestKernelCmdline(t *testing.T) {
	tests := []struct {
		name  string
		spec  string
		accel Accel
		tsc   int
		want  string
	}{
		{"tcg adds the TSC flags", "banger.hostname=dev", AccelTCG, 2596140,
			"console=ttyS0 reboot=t panic=-1 tsc_early_khz=2596140 tsc=reliable root=/dev/vda banger.hostname=dev"},
		{"kvm needs no TSC flags", "banger.hostname=dev", AccelKVM, 2596140,
			"console=ttyS0 reboot=t panic=-1 root=/dev/vda banger.hostname=dev"},
		{"tcg without a known TSC", "", AccelTCG, 0,
			"console=ttyS0 reboot=t panic=-1 root=/dev/vda"},
		{"the spec's own settings win", "root=LABEL=x console=hvc0 panic=5 tsc=unstable ro", AccelTCG, 1000,
			"reboot=t tsc_early_khz=1000 root=LABEL=x console=hvc0 panic=5 tsc=unstable ro"},
		{"init arguments stay last", "quiet -- root=/dev/vdb x", AccelKVM, 0,
			"console=ttyS0 reboot=t panic=-1 root=/dev/vda quiet -- root=/dev/vdb x"},
		{"only init arguments", "-- a b", AccelKVM, 0,
			"console=ttyS0 reboot=t panic=-1 root=/dev/vda -- a b"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := kernelCmdline(tt.spec, tt.accel, tt.tsc); got != tt.want {
				t.Errorf("got  %q\nwant %q", got, tt.want)
			}
		})
	}
}

// argAfter returns the values following each occurrence of flag.
func argAfter(args []string, flag string) []string {
	var out []string
	for i := 0; i+1 < len(args); i++ {
		if args[i] == flag {
			out = append(out, args[i+1])
		}
	}
	return out
}

func TestArgs(t *testing.T) {
	base := vmm.Spec{
		ID: "abc", Name: "dev", CPUs: 2, MemoryMiB: 512,
		Kernel: "/k/vmlinuz", Initrd: "/k/initrd.img",
		Root: vmm.Disk{Path: "/d/root,1.qcow2", Format: "qcow2"},
		Tap:  "tap-pool-3", MAC: "02:00:00:00:00:07",
		RunDir: "/run/b/abc", ConsoleLog: "/var/log/b/abc.log",
	}
	tests := []struct {
		name    string
		l       launch
		want    map[string][]string // flag -> values, in order
		absent  []string            // substrings no argument may contain
		wantHas []string            // exact arguments that must appear
	}{
		{
			name: "microvm under tcg with a tap",
			l:    launch{machine: MachineMicroVM, accel: AccelTCG, spec: base, cmdline: "console=ttyS0", directIO: true},
			want: map[string][]string{
				"-machine": {"microvm,acpi=on,x-option-roms=off,isa-serial=on,rtc=on"},
				"-accel":   {"tcg"},
				"-cpu":     {"max"},
				"-smp":     {"2"},
				"-m":       {"512"},
				"-kernel":  {"/k/vmlinuz"},
				"-initrd":  {"/k/initrd.img"},
				"-append":  {"console=ttyS0"},
				"-name":    {"guest=dev"},
				"-drive":   {"id=root,if=none,file=/d/root,,1.qcow2,format=qcow2,discard=unmap,cache=none,aio=native"},
				"-netdev":  {"tap,id=net0,ifname=tap-pool-3,script=no,downscript=no"},
				"-chardev": {"socket,id=qmp,fd=3,server=on,wait=off", "file,id=console,path=/dev/fd/5", "socket,id=agent,fd=4,server=on,wait=off"},
				"-device": {"virtio-blk-device,drive=root", "virtio-net-device,netdev=net0,mac=02:00:00:00:00:07",
					"virtio-serial-device,id=vser0", "virtserialport,bus=vser0.0,chardev=agent,name=banger.agent"},
				"-serial": {"chardev:console"},
				"-mon":    {"chardev=qmp,mode=control"},
			},
			wantHas: []string{"-nodefaults", "-no-user-config", "-nographic", "-no-reboot"},
			absent:  []string{"pci"},
		},
		{
			name: "q35 under kvm, no tap, read-only disk on tmpfs",
			l: launch{machine: MachineQ35, accel: AccelKVM, cmdline: "x", spec: func() vmm.Spec {
				s := base
				s.Tap, s.MAC, s.Initrd = "", "", ""
				s.Root = vmm.Disk{Path: "/d/root.raw", Format: "raw", ReadOnly: true}
				return s
			}()},
			want: map[string][]string{
				"-machine": {"q35"},
				"-accel":   {"kvm"},
				"-cpu":     {"host"},
				"-drive":   {"id=root,if=none,file=/d/root.raw,format=raw,discard=unmap,cache=writeback,aio=threads,readonly=on"},
				"-device":  {"virtio-blk-pci,drive=root", "virtio-serial-pci,id=vser0", "virtserialport,bus=vser0.0,chardev=agent,name=banger.agent"},
			},
			absent: []string{"-netdev", "-initrd", "virtio-net", "-device,virtio-blk-device"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			args := tt.l.args()
			for flag, want := range tt.want {
				if got := argAfter(args, flag); !slices.Equal(got, want) {
					t.Errorf("%s: got %q, want %q", flag, got, want)
				}
			}
			for _, a := range tt.wantHas {
				if !slices.Contains(args, a) {
					t.Errorf("no %s in %q", a, args)
				}
			}
			joined := strings.Join(args, ",")
			for _, s := range tt.absent {
				if strings.Contains(joined, s) {
					t.Errorf("arguments contain %q: %q", s, args)
				}
			}
		})
	}
}
