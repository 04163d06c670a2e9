// Package kernel imports guest kernels (from a file or from an OCI image),
// tells whether they can boot under Firecracker or banger's QEMU driver, and
// finds the host's own kernel as the QEMU driver's default. It is a plain
// library: bangerd's ImageService calls it and records the result in the
// store (store.Kernel{ID, Name, Path, InitrdPath} from Kernel's fields).
//
// # What is a kernel
//
// Inspect accepts two formats and refuses everything else with an error
// wrapping ErrNotKernel that says what the file seems to be:
//
//   - a bzImage (vmlinuz): the x86 boot protocol header, "HdrS" at 0x202 and
//     the 0xAA55 boot flag, protocol 2.06 or later. The file must hold all the
//     protected-mode code its header promises (setup_sects, syssize), which
//     catches truncated copies. The version string is read where the header's
//     kernel_version field points. The compressed payload (payload_offset,
//     payload_length) is decompressed when it is gzip, zstd, bzip2 or LZ4
//     (the legacy LZ4 frame, decoded here: Debian compresses with it); it must
//     then be an x86-64 ELF vmlinux, else the image is corrupt. xz payloads use
//     the x86 BCJ filter, which no Go xz reader supports, so for those (and
//     lzma, lzo) the payload is not inspected and Info.Notes says so.
//   - an ELF vmlinux: ELF64, x86-64, ET_EXEC, and Linux: it carries the
//     "Linux version " banner or a Linux/Xen ELF note. That tells a kernel from
//     an ordinary program: /bin/ls is ET_DYN (refused as such), and a static
//     non-PIE program has neither banner nor note.
//
// A PVH entry point (the Xen note XEN_ELFNOTE_PHYS32_ENTRY, type 18) is
// reported: QEMU boots such an ELF directly at its 32-bit entry, skipping
// decompression and real mode, which is the fastest boot under microvm. For
// a bzImage the note is looked for in the decompressed payload.
//
// Initrds must be what the kernel unpacks: a newc cpio ("070701"/"070702"),
// or one compressed with gzip, zstd, xz, lz4 or bzip2 whose decompressed
// start is a cpio header. Distribution initrds often start with an
// uncompressed microcode cpio; the first archive decides.
//
// # Where kernels are kept
//
// Each kernel is a directory of the kernels dir named by its content
// address: Dir/<hex>/{kernel, initrd, config, kernel.json}. The ID is
// "sha256:<hex>": the kernel file's digest, or, with an initrd, the digest
// of both digests (the same kernel with another initrd is another kernel).
// Files are copied into a staging directory Dir/.import-*, checked there
// (what is checked is what is kept, even if the source changes meanwhile),
// synced, and the directory renamed into place: a kernel is whole or
// absent, and a failed import leaves nothing. kernel.json is written last.
// Importing the same files again returns the existing kernel (Existing).
// Names are the store's: Import only proposes one (the release by default).
//
// The config is recorded so that `kernel inspect` can report readiness
// later: the embedded one (CONFIG_IKCONFIG: "IKCFG_ST", a gzip stream,
// "IKCFG_ED", found in a vmlinux or a decompressed payload) wins over an
// explicit ConfigPath, then config-RELEASE beside the kernel or in /boot.
//
// # Pull
//
// Pull opens the image with internal/image/oci (registries, OCI layouts,
// docker archives, the host's platform) and reads its layers in order,
// keeping only /boot's direct entries: regular files are staged, whiteouts
// and opaque markers delete, symlinks and hardlinks are followed only
// within /boot. Exactly one kernel (vmlinuz*, vmlinux*, bzImage*, counting a
// symlink and its target once) is taken, or the one PullRequest.KernelFile
// names; the initrd is the only one or the one whose version suffix matches.
// Then it is the same as Import, with /boot/config-RELEASE of the image as
// the config.
//
// # Readiness
//
// CheckFirecracker wants everything built in, since Firecracker guests
// boot without banger's initramfs: virtio-mmio with devices from the
// command line or ACPI, virtio-blk, virtio-net, vsock and its virtio
// transport, the 8250 serial console and ext4. CheckFirecrackerKernel adds
// the image format (Firecracker on x86-64 loads only an ELF vmlinux).
// CheckQEMU accepts modules for the devices (banger's initramfs loads them)
// but wants initramfs support with gzip, devtmpfs and the serial console
// built in; Report.InitramfsModules lists what the initramfs must carry.
//
// # The QEMU default
//
// FindHostKernel picks /boot/vmlinuz-$(uname -r) when its modules are in
// /lib/modules, else the newest /boot/vmlinuz-* that has modules (banger may
// itself run in a VM whose kernel is not in /boot). DefaultQEMU adds the
// initramfs that internal/initramfs builds for it. Under TCG on the microvm
// machine the guest hangs calibrating its clock in most boots unless the
// command line has tsc_early_khz=<host TSC kHz> tsc=reliable; the QEMU
// driver must pass them (the boot test takes the figure from /proc/cpuinfo).
package kernel
