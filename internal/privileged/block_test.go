package privileged

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"banger/internal/blockdev"
	"banger/internal/disk"

	"golang.org/x/sys/unix"
)

// The helper's BlockOps is blockdev.Local, and its client is the dm-snapshot
// strategy's BlockOps.
var (
	_ BlockOps      = blockdev.Local{}
	_ disk.BlockOps = (*BlockClient)(nil)
)

// Made-up loop devices the fake's LoopList reports beside the host's real ones.
const (
	baseLoop     = "/dev/loop9101" // read-only, over disks/vm1/base.img
	cowLoop      = "/dev/loop9102" // writable, over disks/vm1/cow.img
	foreignLoop  = "/dev/loop9103" // over a file outside the root
	stateLoop    = "/dev/loop9104" // over a file under the root but not disks/images
	lookalike    = "/dev/loop9105" // over ROOT-evil/state/disks/x.img
	deletedLoop  = "/dev/loop9106" // over a deleted disk file
	heldLoop     = "/dev/loop9107" // read-only, already under a dm table
	imageRWLoop  = "/dev/loop9108" // writable, over an image
	imageROLoop  = "/dev/loop9109" // read-only, over an image
	cow2Loop     = "/dev/loop9110" // writable, over disks/vm2/cow.img
	unboundLoop  = "/dev/loop9999" // bound to nothing
	otherRootPfx = "banger-00000000-"
)

// blockFixture is a harness whose root holds a VM's disk files and an image, with
// made-up banger and foreign loops and dm devices in the fake.
type blockFixture struct {
	h                   *harness
	root, disks, images string
	prefix              string // this root's dm prefix
	base, cow, image    string
	outside             string // a file outside the root
}

func newBlockFixture(t *testing.T, devices devPaths) *blockFixture {
	t.Helper()
	h := newHarnessDevices(t, devices)
	f := &blockFixture{h: h, root: h.lay.Root, disks: h.lay.DisksDir(), images: h.lay.ImagesDir(), prefix: DMPrefix(h.lay.DisksDir())}
	if err := h.lay.Create(-1, -1); err != nil {
		t.Fatal(err)
	}
	vm := filepath.Join(f.disks, "vm1")
	if err := os.Mkdir(vm, 0o750); err != nil {
		t.Fatal(err)
	}
	f.base, f.cow, f.image = filepath.Join(vm, "base.img"), filepath.Join(vm, "cow.img"), filepath.Join(f.images, "base.ext4")
	for _, p := range []string{f.base, f.cow, f.image} {
		mustWrite(t, p)
	}
	f.outside = filepath.Join(t.TempDir(), "outside.img")
	mustWrite(t, f.outside)
	h.block.loops = []blockdev.Loop{
		{Device: baseLoop, BackingFile: f.base, ReadOnly: true},
		{Device: cowLoop, BackingFile: f.cow},
		{Device: foreignLoop, BackingFile: f.outside},
		{Device: stateLoop, BackingFile: filepath.Join(h.lay.StateDir, "banger.db")},
		{Device: lookalike, BackingFile: f.root + "-evil/state/disks/x.img"},
		{Device: deletedLoop, BackingFile: filepath.Join(f.disks, "gone", "cow.img"), Deleted: true},
		{Device: heldLoop, BackingFile: filepath.Join(f.disks, "vm3", "base.img"), ReadOnly: true, Holders: []string{"dm-3"}},
		{Device: imageRWLoop, BackingFile: f.image},
		{Device: imageROLoop, BackingFile: f.image, ReadOnly: true},
		{Device: cow2Loop, BackingFile: filepath.Join(f.disks, "vm2", "cow.img")},
	}
	h.block.dms = []string{f.prefix + "vm1.origin", f.prefix + "vm2.origin", otherRootPfx + "vm1", "vg0-root"}
	return f
}

func attachCase(name, path string, ro bool) hostileCase {
	return hostileCase{"attach: " + name, func(ctx context.Context, c *Client) error {
		_, err := c.LoopAttach(ctx, LoopAttachRequest{Path: path, ReadOnly: ro})
		return err
	}}
}

func detachCase(name, dev string) hostileCase {
	return hostileCase{"detach: " + name, func(ctx context.Context, c *Client) error {
		return c.LoopDetach(ctx, LoopDetachRequest{Device: dev})
	}}
}

func dmCreateCase(name, dm, table string) hostileCase {
	return hostileCase{"dm create: " + name, func(ctx context.Context, c *Client) error {
		_, err := c.DMCreate(ctx, DMCreateRequest{Name: dm, Table: table})
		return err
	}}
}

func dmRemoveCase(name, dm string) hostileCase {
	return hostileCase{"dm remove: " + name, func(ctx context.Context, c *Client) error {
		return c.DMRemove(ctx, DMRemoveRequest{Name: dm})
	}}
}

// TestHostileBlockInputIsRefused sends hostile loop and device-mapper requests
// through the real client, server and socket. Each must come back as CodeInvalid with
// a message, and nothing that changes the kernel's state may reach BlockOps (the
// server may read the loop and dm lists to decide). A real loop device over a file
// outside the root, attached here with blockdev, must still be there at the end.
func TestHostileBlockInputIsRefused(t *testing.T) {
	f := newBlockFixture(t, devPaths{})
	h := f.h
	vm1, vm2 := f.prefix+"vm1", f.prefix+"vm2"
	disks := f.disks

	mustSymlink(t, "/etc/passwd", filepath.Join(disks, "passwd-link"))
	mustSymlink(t, "/etc", filepath.Join(disks, "etc-link"))
	rel, err := filepath.Rel(disks, f.outside)
	if err != nil {
		t.Fatal(err)
	}
	mustSymlink(t, rel, filepath.Join(disks, "rel-escape"))
	mustSymlink(t, "../banger.db", filepath.Join(disks, "db-link")) // inside the root, outside disks
	mustWrite(t, h.lay.StorePath())
	if err := unix.Mkfifo(filepath.Join(disks, "fifo"), 0o600); err != nil {
		t.Fatal(err)
	}
	empty := filepath.Join(disks, "vm1", "empty.img")
	if err := os.WriteFile(empty, nil, 0o600); err != nil {
		t.Fatal(err)
	}

	okOrigin := "0 2048 linear " + baseLoop + " 0\n2048 2048 zero\n"
	okSnap := "0 4096 snapshot /dev/mapper/" + vm1 + ".origin " + cowLoop + " P 8\n"
	cases := []hostileCase{
		attachCase("/etc/passwd", "/etc/passwd", true),
		attachCase("/dev/sda", "/dev/sda", true),
		attachCase("relative", "state/disks/vm1/cow.img", false),
		attachCase("empty", "", true),
		attachCase("NUL byte", f.cow+"\x00/etc/passwd", false),
		attachCase("dotdot out", disks+"/../../../etc/passwd", true),
		attachCase("unclean", disks+"//vm1/cow.img", false),
		attachCase("the root", f.root, true),
		attachCase("the disks dir", disks, true),
		attachCase("a directory", filepath.Join(disks, "vm1"), true),
		attachCase("the store (state, not disks)", h.lay.StorePath(), true),
		attachCase("symlink to /etc/passwd", filepath.Join(disks, "passwd-link"), true),
		attachCase("symlinked directory", filepath.Join(disks, "etc-link", "passwd"), true),
		attachCase("relative symlink escape", filepath.Join(disks, "rel-escape"), true),
		attachCase("symlink out of disks", filepath.Join(disks, "db-link"), true),
		attachCase("fifo", filepath.Join(disks, "fifo"), true),
		attachCase("missing file", filepath.Join(disks, "vm1", "nope.img"), true),
		attachCase("empty file", empty, false),
		attachCase("image read-write", f.image, false),
		attachCase("lookalike root", f.root+"-evil/state/disks/x.img", true),

		detachCase("/dev/sda", "/dev/sda"),
		detachCase("loop-control", "/dev/loop-control"),
		detachCase("partition", "/dev/loop0p1"),
		detachCase("no /dev", "loop0"),
		detachCase("leading zero", "/dev/loop01"),
		detachCase("dotdot", "/dev/loop1/../sda"),
		detachCase("major:minor", "7:0"),
		detachCase("foreign loop", foreignLoop),
		detachCase("loop over the store", stateLoop),
		detachCase("loop over a lookalike root", lookalike),

		dmCreateCase("no prefix", "vm1", okSnap),
		dmCreateCase("other root", otherRootPfx+"vm1", okSnap),
		dmCreateCase("prefix only", f.prefix, okSnap),
		dmCreateCase("slash", f.prefix+"../control", okSnap),
		dmCreateCase("control", "control", okSnap),
		dmCreateCase(".cow suffix", vm1+".cow", okSnap),
		dmCreateCase("double origin", vm1+".origin.origin", okOrigin),
		dmCreateCase("empty table", vm1, ""),
		dmCreateCase("crypt", vm1, "0 2048 crypt aes-xts-plain64 00 0 "+cowLoop+" 0\n"),
		dmCreateCase("linear over /dev/sda", vm1+".origin", "0 2048 linear /dev/sda 0\n2048 2048 zero\n"),
		dmCreateCase("linear over 8:0", vm1+".origin", "0 2048 linear 8:0 0\n2048 2048 zero\n"),
		dmCreateCase("linear over a foreign loop", vm1+".origin", "0 2048 linear "+foreignLoop+" 0\n2048 2048 zero\n"),
		dmCreateCase("linear over a writable loop", vm1+".origin", "0 2048 linear "+cowLoop+" 0\n2048 2048 zero\n"),
		dmCreateCase("linear over an unbound loop", vm1+".origin", "0 2048 linear "+unboundLoop+" 0\n2048 2048 zero\n"),
		dmCreateCase("linear over a held loop", vm1+".origin", "0 2048 linear "+heldLoop+" 0\n2048 2048 zero\n"),
		dmCreateCase("negative start", vm1+".origin", "-1 2048 linear "+baseLoop+" 0\n2047 2048 zero\n"),
		dmCreateCase("negative offset", vm1+".origin", "0 2048 linear "+baseLoop+" -2048\n2048 2048 zero\n"),
		dmCreateCase("huge length", vm1, "0 9223372036854775807 snapshot "+baseLoop+" "+cowLoop+" P 8\n"),
		dmCreateCase("past 64 TiB", vm1+".origin", "0 2048 linear "+baseLoop+" 0\n2048 137438953472 zero\n"),
		dmCreateCase("zero length", vm1, "0 0 snapshot "+baseLoop+" "+cowLoop+" P 8\n"),
		dmCreateCase("leading zeros", vm1, "0 04096 snapshot "+baseLoop+" "+cowLoop+" P 8\n"),
		dmCreateCase("plus sign", vm1, "0 +4096 snapshot "+baseLoop+" "+cowLoop+" P 8\n"),
		dmCreateCase("gap", vm1+".origin", "0 2048 linear "+baseLoop+" 0\n4096 2048 zero\n"),
		dmCreateCase("extra line", vm1, okSnap+"4096 2048 zero\n"),
		dmCreateCase("extra linear in origin", vm1+".origin", okOrigin+"4096 8 linear "+baseLoop+" 0\n"),
		dmCreateCase("empty line", vm1+".origin", "0 2048 linear "+baseLoop+" 0\n\n2048 2048 zero\n"),
		dmCreateCase("tab", vm1, "0 4096\tsnapshot "+baseLoop+" "+cowLoop+" P 8\n"),
		dmCreateCase("CR", vm1, "0 4096 snapshot "+baseLoop+" "+cowLoop+" P 8\r\n"),
		dmCreateCase("double space", vm1, "0 4096  snapshot "+baseLoop+" "+cowLoop+" P 8\n"),
		dmCreateCase("oversized", vm1, okSnap+strings.Repeat("#", maxDMTable)),
		dmCreateCase("non-persistent", vm1, "0 4096 snapshot "+baseLoop+" "+cowLoop+" N 8\n"),
		dmCreateCase("chunk 3", vm1, "0 4096 snapshot "+baseLoop+" "+cowLoop+" P 3\n"),
		dmCreateCase("chunk 4096", vm1, "0 4096 snapshot "+baseLoop+" "+cowLoop+" P 4096\n"),
		dmCreateCase("snapshot-origin target", vm1, "0 4096 snapshot-origin "+baseLoop+"\n"),
		dmCreateCase("origin of another VM", vm1, "0 4096 snapshot /dev/mapper/"+vm2+".origin "+cowLoop+" P 8\n"),
		dmCreateCase("origin of another root", vm1, "0 4096 snapshot /dev/mapper/"+otherRootPfx+"vm1 "+cowLoop+" P 8\n"),
		dmCreateCase("origin not created", f.prefix+"vm9", "0 4096 snapshot /dev/mapper/"+f.prefix+"vm9.origin "+cowLoop+" P 8\n"),
		dmCreateCase("origin /dev/sda", vm1, "0 4096 snapshot /dev/sda "+cowLoop+" P 8\n"),
		dmCreateCase("COW over a read-only loop", vm1, "0 4096 snapshot "+imageROLoop+" "+baseLoop+" P 8\n"),
		dmCreateCase("COW over an image", vm1, "0 4096 snapshot "+baseLoop+" "+imageRWLoop+" P 8\n"),
		dmCreateCase("COW over a deleted file", vm1, "0 4096 snapshot "+baseLoop+" "+deletedLoop+" P 8\n"),
		dmCreateCase("COW is the origin", vm1, "0 4096 snapshot "+cowLoop+" "+cowLoop+" P 8\n"),
		dmCreateCase("COW foreign", vm1, "0 4096 snapshot "+baseLoop+" "+foreignLoop+" P 8\n"),
		dmCreateCase("writable origin", vm1, "0 4096 snapshot "+cow2Loop+" "+cowLoop+" P 8\n"),
		dmCreateCase("snapshot table for an origin name", vm1+".origin", okSnap),
		dmCreateCase("origin table for a snapshot name", vm1, okOrigin),
		dmCreateCase("snapshot missing args", vm1, "0 4096 snapshot "+baseLoop+" "+cowLoop+"\n"),

		dmRemoveCase("no prefix", "vm1"),
		dmRemoveCase("other root", otherRootPfx+"vm1"),
		dmRemoveCase("host volume", "vg0-root"),
		dmRemoveCase("control", "control"),
		dmRemoveCase("dotdot", "../"+vm1),
		dmRemoveCase("empty", ""),
		dmRemoveCase("prefix only", f.prefix),
	}

	var realForeign string
	if os.Geteuid() == 0 {
		// A real loop device over a file outside the root: the helper must not detach it.
		dev, err := blockdev.LoopAttach(context.Background(), f.outside, true)
		if err != nil {
			t.Fatalf("attach a foreign loop: %v", err)
		}
		t.Cleanup(func() { _ = blockdev.LoopDetach(context.Background(), dev) })
		realForeign = dev
		dev2 := filepath.Join(disks, "vm1", "blockdev")
		if err := unix.Mknod(dev2, unix.S_IFBLK|0o600, int(unix.Mkdev(8, 0))); err != nil {
			t.Fatalf("mknod: %v", err)
		}
		foreign := filepath.Join(disks, "vm1", "foreign.img")
		mustWrite(t, foreign)
		if err := os.Chown(foreign, 12345, 12345); err != nil {
			t.Fatal(err)
		}
		cases = append(cases,
			detachCase("real foreign loop", dev),
			attachCase("block device node", dev2, true),
			attachCase("file of another user", foreign, true),
		)
	}
	if n := len(cases); n < 25 {
		t.Fatalf("only %d hostile block cases; the brief asks for at least 25", n)
	}

	ctx := context.Background()
	before := len(h.audit.Lines(t))
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.call(ctx, h.client)
			we := wantCode(t, err, CodeInvalid)
			if we.Message == "" {
				t.Errorf("refusal has no message")
			}
			t.Logf("refused: %s", we.Message)
			if m := h.block.Mutations(); len(m) != 0 {
				t.Fatalf("hostile input reached the kernel layer: %s", fmtCalls(m))
			}
		})
	}
	if calls := h.net.Calls(); len(calls) != 0 {
		t.Errorf("block calls reached NetOps: %s", fmtCalls(calls))
	}
	lines := h.audit.Lines(t)[before:]
	if len(lines) != len(cases) {
		t.Fatalf("got %d audit lines for %d calls, want one per call", len(lines), len(cases))
	}
	for i, l := range lines {
		if l["result"] != CodeInvalid {
			t.Errorf("audit line %d: got result %v, want %q", i, l["result"], CodeInvalid)
		}
	}
	if realForeign != "" {
		loops, err := blockdev.LoopList(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if l, ok := findLoop(loops, realForeign); !ok || l.BackingFile != f.outside {
			t.Errorf("the foreign loop %s over %s is gone or changed after the refused detach: %+v", realForeign, f.outside, l)
		}
	}
}

// TestValidBlockInputReachesBlockOps proves valid calls pass through exactly: the
// file attached is the one named (through a descriptor), tables arrive in canonical
// form, an unbound device is not touched, and the lists hold only banger's devices.
func TestValidBlockInputReachesBlockOps(t *testing.T) {
	f := newBlockFixture(t, devPaths{})
	h := f.h
	ctx := context.Background()
	mustSymlink(t, "../../images/base.ext4", filepath.Join(f.disks, "vm1", "image-link"))
	vm1 := f.prefix + "vm1"
	tests := []struct {
		name string
		call func() error
		want []netCall
	}{
		{"attach base read-only", func() error {
			r, err := h.client.LoopAttach(ctx, LoopAttachRequest{Path: f.base, ReadOnly: true})
			if err == nil && !loopDevRe.MatchString(r.Device) {
				t.Errorf("got device %q, want /dev/loopN", r.Device)
			}
			return err
		}, []netCall{{"LoopAttach", []any{f.base, true}}}},
		{"attach COW writable", func() error {
			_, err := h.client.LoopAttach(ctx, LoopAttachRequest{Path: f.cow})
			return err
		}, []netCall{{"LoopAttach", []any{f.cow, false}}}},
		{"attach image read-only", func() error {
			_, err := h.client.LoopAttach(ctx, LoopAttachRequest{Path: f.image, ReadOnly: true})
			return err
		}, []netCall{{"LoopAttach", []any{f.image, true}}}},
		{"attach through a symlink inside the root", func() error {
			_, err := h.client.LoopAttach(ctx, LoopAttachRequest{Path: filepath.Join(f.disks, "vm1", "image-link"), ReadOnly: true})
			return err
		}, []netCall{{"LoopAttach", []any{f.image, true}}}},
		{"detach banger's loop", func() error {
			return h.client.LoopDetach(ctx, LoopDetachRequest{Device: cowLoop})
		}, []netCall{{"LoopDetach", []any{cowLoop}}}},
		{"detach a loop over a deleted disk file", func() error {
			return h.client.LoopDetach(ctx, LoopDetachRequest{Device: deletedLoop})
		}, []netCall{{"LoopDetach", []any{deletedLoop}}}},
		{"detach an unbound loop touches nothing", func() error {
			return h.client.LoopDetach(ctx, LoopDetachRequest{Device: unboundLoop})
		}, nil},
		{"create origin", func() error {
			r, err := h.client.DMCreate(ctx, DMCreateRequest{Name: vm1 + ".origin", Table: "0 2048 linear " + baseLoop + " 0\n2048 6144 zero"})
			if err == nil && r.Device != "/dev/mapper/"+vm1+".origin" {
				t.Errorf("got device %q, want /dev/mapper/%s.origin", r.Device, vm1)
			}
			return err
		}, []netCall{{"DMCreate", []any{vm1 + ".origin", "0 2048 linear " + baseLoop + " 0\n2048 6144 zero\n"}}}},
		{"remove", func() error {
			return h.client.DMRemove(ctx, DMRemoveRequest{Name: vm1})
		}, []netCall{{"DMRemove", []any{vm1}}}},
		{"remove origin", func() error {
			return h.client.DMRemove(ctx, DMRemoveRequest{Name: vm1 + ".origin"})
		}, []netCall{{"DMRemove", []any{vm1 + ".origin"}}}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			h.block.Reset()
			if err := tc.call(); err != nil {
				t.Fatalf("got %v, want success", err)
			}
			if got := h.block.Mutations(); fmtCalls(got) != fmtCalls(tc.want) {
				t.Errorf("got calls %s\nwant %s", fmtCalls(got), fmtCalls(tc.want))
			}
		})
	}

	t.Run("lists hold only banger's", func(t *testing.T) {
		loops, err := h.client.LoopList(ctx)
		if err != nil {
			t.Fatal(err)
		}
		var got []string
		for _, l := range loops {
			got = append(got, l.Device)
		}
		want := []string{baseLoop, cowLoop, deletedLoop, heldLoop, imageRWLoop, imageROLoop, cow2Loop}
		if strings.Join(got, " ") != strings.Join(want, " ") {
			t.Errorf("got loops %v, want %v", got, want)
		}
		names, err := h.client.DMList(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if want := []string{vm1 + ".origin", f.prefix + "vm2.origin"}; strings.Join(names, " ") != strings.Join(want, " ") {
			t.Errorf("got dm names %v, want %v", names, want)
		}
	})

	t.Run("DMAvailable", func(t *testing.T) {
		bc := NewBlockClient(h.client)
		if err := bc.DMAvailable(ctx); err != nil {
			t.Errorf("got %v, want nil", err)
		}
		h.block.mu.Lock()
		h.block.dmErr = errors.New("device-mapper is not available: /dev/mapper/control is missing")
		h.block.mu.Unlock()
		err := bc.DMAvailable(ctx)
		if err == nil || err.Error() != "device-mapper is not available: /dev/mapper/control is missing" {
			t.Errorf("got %v, want the helper's reason", err)
		}
		var we *Error
		if errors.As(err, &we) {
			t.Errorf("unavailability came back as a helper error %v, want the plain reason", we)
		}
	})

	t.Run("kernel failure is CodeFailed naming the file", func(t *testing.T) {
		h.block.mu.Lock()
		h.block.fail["LoopAttach"] = errors.New("no free loop device")
		h.block.mu.Unlock()
		t.Cleanup(func() {
			h.block.mu.Lock()
			delete(h.block.fail, "LoopAttach")
			h.block.mu.Unlock()
		})
		_, err := h.client.LoopAttach(ctx, LoopAttachRequest{Path: f.cow})
		we := wantCode(t, err, CodeFailed)
		mustContain(t, we.Message, f.cow, "no free loop device")
	})

	t.Run("snapshot whose node cannot be handed over is removed", func(t *testing.T) {
		h.block.Reset()
		// No node exists under the real /dev/mapper for the fake's device.
		_, err := h.client.DMCreate(ctx, DMCreateRequest{Name: vm1, Table: "0 4096 snapshot " + baseLoop + " " + cowLoop + " P 8\n"})
		we := wantCode(t, err, CodeFailed)
		mustContain(t, we.Message, "hand the device to the owner")
		want := []netCall{{"DMCreate", []any{vm1, "0 4096 snapshot " + baseLoop + " " + cowLoop + " P 8\n"}}, {"DMRemove", []any{vm1}}}
		if got := h.block.Mutations(); fmtCalls(got) != fmtCalls(want) {
			t.Errorf("got calls %s\nwant %s", fmtCalls(got), fmtCalls(want))
		}
	})
}

func TestDMPrefixMatchesDisk(t *testing.T) {
	for _, dir := range []string{"/var/lib/banger/state/disks", "/tmp/bt-1/state/disks", "/tmp/bt-1/state/disks/"} {
		want := disk.NewDMSnapshot(disk.Config{DisksDir: dir}).Prefix()
		if got := DMPrefix(dir); got != want {
			t.Errorf("DMPrefix(%q) = %q, want disk's %q", dir, got, want)
		}
	}
}

func TestFormatDMTableIsCanonical(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"0 8 zero", "0 8 zero\n"},
		{"0 2048 linear /dev/loop1 0\n2048 8 zero\n", "0 2048 linear /dev/loop1 0\n2048 8 zero\n"},
		{"0 16 snapshot /dev/loop1 /dev/loop2 P 8\n", "0 16 snapshot /dev/loop1 /dev/loop2 P 8\n"},
	} {
		ts, e := parseDMTable(tc.in)
		if e != nil {
			t.Fatalf("parseDMTable(%q): %v", tc.in, e)
		}
		if got := formatDMTable(ts); got != tc.want {
			t.Errorf("formatDMTable(parse(%q)) = %q, want %q", tc.in, got, tc.want)
		}
	}
}
