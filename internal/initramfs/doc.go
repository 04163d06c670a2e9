// Package initramfs builds the initramfs banger boots distribution kernels
// with: a gzip-compressed newc cpio holding
//
//	/init                              banger-init (cmd/banger-init), static
//	/dev/console                       the node the kernel opens for /init's stdio
//	/dev /proc /sys /run /newroot      mount points
//	/lib/modules/VERSION/kernel/...    the modules, decompressed
//	/etc/banger-init/modules           their paths, one a line, in load order
//
// # Modules
//
// Build resolves the requested modules (DefaultModules: virtio PCI and MMIO
// transports, virtio-blk, -net and -console, vsock and its virtio transport,
// ext4, overlay) against depmod's files for the kernel: modules.dep for
// files and dependencies, modules.builtin for what needs no file, and
// modules.softdep "pre:" entries (resolved through modules.alias; a soft
// dependency that cannot be found is skipped, as modprobe does). The order is
// a depth-first post-order, so every module follows what it needs. Names
// match as the kernel matches them (dashes and underscores alike).
//
// .ko.xz, .ko.zst and .ko.gz files are decompressed at build time (with
// github.com/ulikunitz/xz, klauspost/compress/zstd and compress/gzip), so
// /init hands plain ELF files to finit_module and does not depend on the
// kernel's CONFIG_MODULE_DECOMPRESS.
//
// # Building once
//
// The output is named by a key, the sha256 of: a format version, the kernel
// release, the requested module list, the init binary's digest, and the
// kernel's modules.dep and modules.builtin. The same inputs reuse the file
// (Result.Reused); a new banger-init or a reinstalled kernel gives a new
// one. The file is written to a temporary name and renamed, so it is whole
// or absent. The archive itself is deterministic (mtime 0, owner root,
// sequential inode numbers).
//
// # The format
//
// The newc writer is a hundred lines here rather than a library because
// the library at hand writes no device nodes. gzip because every
// distribution kernel unpacks it (CONFIG_RD_GZIP) and it costs the guest a
// few milliseconds for a few MiB.
//
// # /init
//
// The init logic is in the subpackage guestinit, which imports only the
// standard library and golang.org/x/sys/unix so that banger-init stays
// small (about 2 MB stripped). It mounts /proc, /sys and devtmpfs on /dev
// (a tmpfs with the few nodes it needs if the kernel has no devtmpfs),
// loads the listed modules with finit_module (EEXIST is success; other
// failures are logged and the boot goes on, since the device they drive may
// not be on this machine), reads root=, rootfstype=, rootflags=, ro/rw,
// banger.init= and banger.rootwait= from /proc/cmdline, waits for the root
// device by polling /sys/class/block (no udev; it makes the /dev node from
// sysfs's dev file if devtmpfs has not; LABEL= and UUID= are matched by
// reading ext2/3/4 superblocks), mounts it on /newroot read-write unless
// "ro", moves /proc, /sys and /dev into it, deletes the initramfs's files
// (only those on the rootfs device, never across a mount: they would
// otherwise hold guest memory for the VM's life), and switches root as
// switch_root does (chdir, mount --move . /, chroot .) before exec'ing
// banger.init, by default /sbin/banger-agent init, else /sbin/init.
//
// Each line it prints goes to /dev/console and to /dev/kmsg at debug level
// (kept in dmesg without being printed twice). A fatal error is printed
// with the failing step and the machine powers off after FatalDelay: PID 1
// must never exit (the kernel would panic) nor hang silently.
package initramfs
