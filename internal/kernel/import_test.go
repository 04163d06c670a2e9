package kernel

import (
	"bytes"
	"compress/gzip"
	"context"
	"debug/elf"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/klauspost/compress/zstd"
	"github.com/ulikunitz/xz"
)

func TestImportHostKernel(t *testing.T) {
	kpath := hostVmlinuz(t)
	release := strings.TrimPrefix(filepath.Base(kpath), "vmlinuz-")
	dir := t.TempDir()
	ctx := context.Background()
	req := ImportRequest{KernelPath: kpath, Dir: dir}
	initrd := filepath.Join(filepath.Dir(kpath), "initrd.img-"+release)
	if _, err := os.Stat(initrd); err == nil {
		req.InitrdPath = initrd
	}

	k, err := Import(ctx, req)
	if err != nil {
		t.Fatalf("Import(%s): %v", kpath, err)
	}
	t.Logf("imported %s: %+v", kpath, k.Info)
	if k.Info.Format != FormatBzImage {
		t.Errorf("format %q, want %q", k.Info.Format, FormatBzImage)
	}
	if k.Info.Release != release || k.Name != release {
		t.Errorf("release %q, name %q, want %q (from the file name)", k.Info.Release, k.Name, release)
	}
	if !strings.HasPrefix(k.Info.Banner, release+" ") {
		t.Errorf("banner %q does not start with the release", k.Info.Banner)
	}
	if k.Info.Compression == "" || k.Info.BootProtocol == "" {
		t.Errorf("compression %q, boot protocol %q: want both read from the header", k.Info.Compression, k.Info.BootProtocol)
	}
	if cfgPath := filepath.Join(filepath.Dir(kpath), "config-"+release); fileExists(cfgPath) {
		cfg, err := ReadConfigFile(cfgPath)
		if err != nil {
			t.Fatal(err)
		}
		if k.ConfigSource != cfgPath {
			t.Errorf("config source %q, want the sibling %s", k.ConfigSource, cfgPath)
		}
		got, err := k.Config()
		if err != nil || len(got) != len(cfg) {
			t.Errorf("recorded config: %d symbols (err %v), want %d", len(got), err, len(cfg))
		}
		// Where the payload could be read, the PVH note is found exactly
		// when the config says the kernel has a PVH entry.
		if len(k.Info.Notes) == 0 && k.Info.PVH != (cfg["CONFIG_PVH"] == "y") {
			t.Errorf("PVH %v, but CONFIG_PVH=%q", k.Info.PVH, cfg["CONFIG_PVH"])
		}
	}
	want, _ := os.ReadFile(kpath)
	if got, err := os.ReadFile(k.Path); err != nil || !bytes.Equal(got, want) {
		t.Errorf("stored kernel %s differs from %s (err %v)", k.Path, kpath, err)
	}
	if req.InitrdPath != "" && (k.InitrdPath == "" || k.Initrd == nil) {
		t.Errorf("initrd not recorded: %+v", k)
	}

	again, err := Import(ctx, req)
	if err != nil {
		t.Fatalf("second Import: %v", err)
	}
	if !again.Existing || again.ID != k.ID || again.Path != k.Path {
		t.Errorf("second import: got existing=%v id=%s path=%s, want existing=true id=%s path=%s", again.Existing, again.ID, again.Path, k.ID, k.Path)
	}
	if got := dirEntries(t, dir); len(got) != 1 || got[0] != strings.TrimPrefix(k.ID, "sha256:") {
		t.Errorf("kernels dir holds %v, want only %s", got, k.ID)
	}
	loaded, err := Load(dir, k.ID)
	if err != nil || loaded.Path != k.Path || loaded.Info.Release != release {
		t.Errorf("Load: %+v, %v", loaded, err)
	}
	if err := Remove(dir, k.ID); err != nil {
		t.Fatalf("Remove: %v", err)
	}
	if got := dirEntries(t, dir); len(got) != 0 {
		t.Errorf("after Remove the kernels dir holds %v", got)
	}
	if _, err := Load(dir, k.ID); !errors.Is(err, ErrNotFound) {
		t.Errorf("Load after Remove: %v, want ErrNotFound", err)
	}
}

func TestInspectCrafted(t *testing.T) {
	const banner = "6.9.0-test (builder@example) #1 SMP PREEMPT_DYNAMIC"
	cfg := "CONFIG_VIRTIO_MMIO=y\nCONFIG_VIRTIO_BLK=y\n# CONFIG_ACPI is not set\nCONFIG_LOCALVERSION=\"-test\"\n"
	tests := []struct {
		name      string
		data      []byte
		format    Format
		release   string
		pvh       uint64
		ikconfig  bool
		compressn string
	}{
		{"vmlinux with PVH note", craftVmlinux(t, vmlinuxSpec{banner: banner, pvhEntry: 0x1000ab0}), FormatELF, "6.9.0-test", 0x1000ab0, false, ""},
		{"vmlinux with Linux note only", craftVmlinux(t, vmlinuxSpec{linuxNote: true}), FormatELF, "", 0, false, ""},
		{"vmlinux with embedded config", craftVmlinux(t, vmlinuxSpec{banner: banner, ikconfig: cfg}), FormatELF, "6.9.0-test", 0, true, ""},
		{"bzImage with gzip payload", craftBzImage(t, craftVmlinux(t, vmlinuxSpec{banner: banner, pvhEntry: 0x1000ab0, ikconfig: cfg}), banner), FormatBzImage, "6.9.0-test", 0x1000ab0, true, "gzip"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := writeFile(t, t.TempDir(), "k", tt.data)
			info, err := Inspect(p)
			if err != nil {
				t.Fatalf("Inspect: %v", err)
			}
			if info.Format != tt.format || info.Release != tt.release || info.Compression != tt.compressn {
				t.Errorf("got format %q release %q compression %q, want %q %q %q", info.Format, info.Release, info.Compression, tt.format, tt.release, tt.compressn)
			}
			if info.PVH != (tt.pvh != 0) || info.PVHEntry != tt.pvh {
				t.Errorf("got PVH %v entry %#x, want %v %#x", info.PVH, info.PVHEntry, tt.pvh != 0, tt.pvh)
			}
			if info.EmbeddedConfig != tt.ikconfig {
				t.Errorf("got embedded config %v, want %v", info.EmbeddedConfig, tt.ikconfig)
			}
			if tt.ikconfig && (info.config["CONFIG_VIRTIO_BLK"] != "y" || info.config["CONFIG_LOCALVERSION"] != "-test" || len(info.config) != 3) {
				t.Errorf("embedded config %v, want the 3 set symbols", info.config)
			}
		})
	}
}

func TestImportEmbeddedConfig(t *testing.T) {
	cfg := "CONFIG_VIRTIO_MMIO=y\nCONFIG_ACPI=y\nCONFIG_VIRTIO_BLK=y\nCONFIG_VIRTIO_NET=y\nCONFIG_VSOCKETS=y\nCONFIG_VIRTIO_VSOCKETS=y\nCONFIG_SERIAL_8250_CONSOLE=y\nCONFIG_EXT4_FS=y\n"
	src := t.TempDir()
	p := writeFile(t, src, "vmlinux", craftVmlinux(t, vmlinuxSpec{banner: "6.9.0-fc (x) #1", pvhEntry: 0x1000000, ikconfig: cfg}))
	// A sibling config that disagrees: the embedded one must win.
	writeFile(t, src, "config-6.9.0-fc", []byte("CONFIG_VIRTIO_BLK=m\n"))
	k, err := Import(context.Background(), ImportRequest{KernelPath: p, Dir: t.TempDir(), Name: "fc"})
	if err != nil {
		t.Fatalf("Import: %v", err)
	}
	if k.Name != "fc" || k.ConfigSource != "embedded" {
		t.Errorf("name %q config source %q, want fc, embedded", k.Name, k.ConfigSource)
	}
	r, err := CheckFirecrackerKernel(k)
	if err != nil {
		t.Fatal(err)
	}
	if !r.Ready {
		t.Errorf("a vmlinux with everything built in: got %s, want ready", r)
	}
}

func gz(b []byte) []byte {
	var out bytes.Buffer
	zw := gzip.NewWriter(&out)
	zw.Write(b)
	zw.Close()
	return out.Bytes()
}

func TestImportRefusesNonKernels(t *testing.T) {
	good := craftBzImage(t, craftVmlinux(t, vmlinuxSpec{banner: "6.9.0-test (x) #1", pvhEntry: 0x1000000}), "6.9.0-test (x) #1")
	corrupt := bytes.Clone(good)
	for i := 1024 + 16 + 20; i < 1024+16+60; i++ { // inside the gzip payload
		corrupt[i] ^= 0x5a
	}
	ls, err := os.ReadFile("/bin/ls")
	if err != nil {
		t.Skipf("no /bin/ls: %v", err)
	}
	tests := []struct {
		name, want string
		data       []byte
	}{
		{"text file", "is not a Linux kernel (no bzImage header, not an ELF vmlinux)", []byte("hello, I am not a kernel\n")},
		{"empty file", "it is empty", nil},
		{"/bin/ls", "a shared library or position-independent program", ls},
		{"static x86-64 program", "without a \"Linux version\" string or a Linux ELF note", craftVmlinux(t, vmlinuxSpec{})},
		{"arm64 ELF", "not x86-64", craftVmlinux(t, vmlinuxSpec{machine: elf.EM_AARCH64, banner: "6.9.0 (x)"})},
		{"truncated bzImage", "a truncated bzImage", good[:len(good)-100]},
		{"bzImage cut inside its header", "a truncated bzImage", good[:0x230]},
		{"bzImage with corrupt payload", "payload is corrupt", corrupt},
		{"gzip-compressed kernel", "it is gzip-compressed; decompress it first", gz(good)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := writeFile(t, t.TempDir(), "vmlinuz", tt.data)
			dir := filepath.Join(t.TempDir(), "kernels")
			_, err := Import(context.Background(), ImportRequest{KernelPath: p, Dir: dir})
			if err == nil {
				t.Fatalf("Import accepted %s", tt.name)
			}
			if !errors.Is(err, ErrNotKernel) || !strings.Contains(err.Error(), tt.want) || !strings.Contains(err.Error(), p) {
				t.Errorf("got error %q, want ErrNotKernel naming %s and saying %q", err, p, tt.want)
			}
			if got := dirEntries(t, dir); len(got) != 0 {
				t.Errorf("kernels dir holds %v after a refused import, want nothing", got)
			}
		})
	}
	if _, err := Import(context.Background(), ImportRequest{KernelPath: filepath.Join(t.TempDir(), "absent"), Dir: t.TempDir()}); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("missing file: got %v, want ErrNotExist", err)
	}
}

func TestInitrds(t *testing.T) {
	cpio := cpioNewc("init", "#!/bin/sh\n")
	var zs, xzb bytes.Buffer
	zw, _ := zstd.NewWriter(&zs)
	zw.Write(cpio)
	zw.Close()
	xw, _ := xz.NewWriter(&xzb)
	xw.Write(cpio)
	xw.Close()
	kernel := craftBzImage(t, craftVmlinux(t, vmlinuxSpec{banner: "6.9.0-test (x) #1"}), "6.9.0-test (x) #1")
	tests := []struct {
		name, compression, wantErr string
		data                       []byte
	}{
		{"plain newc", "none", "", cpio},
		{"gzip", "gzip", "", gz(cpio)},
		{"zstd", "zstd", "", zs.Bytes()},
		{"xz", "xz", "", xzb.Bytes()},
		{"microcode cpio then compressed", "none", "", append(cpioNewc("kernel/x86/microcode/GenuineIntel.bin", "uc"), gz(cpio)...)},
		{"text", "", "not a cpio archive", []byte("not an initrd at all")},
		{"gzip of text", "", "gzip-compressed, but not a cpio archive inside", gz([]byte("plain text here"))},
		{"corrupt zstd", "", "zstd data is corrupt", zs.Bytes()[:8]},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			src := t.TempDir()
			kp := writeFile(t, src, "vmlinuz", kernel)
			ip := writeFile(t, src, "initrd", tt.data)
			dir := filepath.Join(t.TempDir(), "kernels")
			k, err := Import(context.Background(), ImportRequest{KernelPath: kp, InitrdPath: ip, Dir: dir})
			if tt.wantErr != "" {
				if !errors.Is(err, ErrNotInitrd) || !strings.Contains(err.Error(), tt.wantErr) || !strings.Contains(err.Error(), ip) {
					t.Errorf("got %v, want ErrNotInitrd naming %s and saying %q", err, ip, tt.wantErr)
				}
				if got := dirEntries(t, dir); len(got) != 0 {
					t.Errorf("kernels dir holds %v after a refused import", got)
				}
				return
			}
			if err != nil {
				t.Fatalf("Import: %v", err)
			}
			if k.Initrd == nil || k.Initrd.Compression != tt.compression {
				t.Errorf("initrd %+v, want compression %q", k.Initrd, tt.compression)
			}
			if k.ID == k.KernelDigest {
				t.Errorf("id %s equals the kernel digest: the initrd must be part of the identity", k.ID)
			}
		})
	}
}

func TestLz4Block(t *testing.T) {
	// token 0x52: 5 literals "abcde", then a match of 2+4=6 bytes at offset
	// 5 (overlapping: copies "abcde" and "a"); token 0x30: 3 final literals.
	block := []byte{0x52, 'a', 'b', 'c', 'd', 'e', 5, 0, 0x30, 'x', 'y', 'z'}
	got, err := lz4Block(nil, block, 1<<20)
	if err != nil || string(got) != "abcdeabcdeaxyz" {
		t.Errorf("lz4Block = %q, %v; want %q", got, err, "abcdeabcdeaxyz")
	}
	for name, bad := range map[string][]byte{
		"offset past start": {0x12, 'a', 9, 0},
		"literals past end": {0x50, 'a'},
		"zero offset":       {0x12, 'a', 0, 0},
	} {
		if _, err := lz4Block(nil, bad, 1<<20); err == nil {
			t.Errorf("%s: lz4Block accepted %v", name, bad)
		}
	}
}

func TestReap(t *testing.T) {
	dir := t.TempDir()
	for _, d := range []string{".import-123", ".pull-9", ".rm-" + strings.Repeat("a", 64), strings.Repeat("b", 64)} {
		if err := os.MkdirAll(filepath.Join(dir, d, "sub"), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := Reap(dir); err != nil {
		t.Fatalf("Reap: %v", err)
	}
	if got := dirEntries(t, dir); len(got) != 1 || got[0] != strings.Repeat("b", 64) {
		t.Errorf("after Reap: %v, want only the kernel directory", got)
	}
	if err := Reap(filepath.Join(dir, "absent")); err != nil {
		t.Errorf("Reap of a missing dir: %v", err)
	}
}
