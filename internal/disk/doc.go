// Package disk gives each VM a writable root disk over a shared, read-only base
// image (an ext4 file made by the image service), through interchangeable
// strategies behind one interface, Strategy, and one conformance suite
// (internal/disk/disktest), in the manner of containerd's snapshotters.
//
// # Strategies, fastest first (the order auto tries)
//
// dm-snapshot: a device-mapper snapshot stacked on two loop devices, the base
// (read-only) and a sparse COW file in the VM's directory. The VMM opens
// /dev/mapper/NAME. Creation costs a few ioctls and dmsetup calls whatever the
// base's size; the COW file takes space only for blocks the guest writes; the guest
// writes to a real block device, with no image format in the way. It needs
// device-mapper and root: every kernel step goes through BlockOps, which
// banger-helper implements in production (blockdev.Local in-process). Costs: kernel
// state that must be reaped after a crash (Reap) and rebuilt after a host reboot
// (Activate, from the persistent COW), and /dev/mapper nodes the helper must hand to
// the owner so that an unprivileged VMM can open them. Tables: see dmtable.go.
// Parallel clones serialise on a flock in the disks directory; the loop functions
// also survive races with other attachers on the host.
//
// reflink: FICLONE of the base into the VM's directory. The clone shares all
// extents with the base and the filesystem copies a block when either side writes
// it. Sub-millisecond and flat in the base's size, no kernel state, raw format for
// every VMM, and the clone outlives its base. Needs a filesystem with reflinks
// (XFS made with reflink=1, btrfs) holding both the images and the disks;
// Available probes by cloning a temporary file there.
//
// qcow2: a qcow2 overlay whose backing file is the base (absolute path, format
// stated as raw so it is never probed). Milliseconds (one qemu-img run) and flat in
// the base's size, on any filesystem. QEMU only: Firecracker opens raw images, so
// Select never gives qcow2 to the firecracker driver. The overlay depends on the
// base staying where it is, which the image service guarantees by refusing to
// remove an image in use.
//
// copy: a copy of the base's data extents only (SEEK_DATA/SEEK_HOLE, then
// copy_file_range, falling back to read/write that skips zero blocks). Works on any
// filesystem and for any VMM; its time grows with the base's data (not its size),
// and each disk costs that data again. The last resort.
//
// # Growing (--disk SIZE)
//
// A requested size larger than the base grows the disk and its ext4 filesystem;
// smaller is ErrTooSmall (banger never shrinks a root). Sizes round up to 4 KiB.
//
//   - reflink, copy: truncate the file larger (a hole), then e2fsck -fy and resize2fs
//     on the file. resize2fs may leave off a last block group too small to hold its
//     own metadata, so the filesystem can end a few blocks short of the disk.
//   - dm-snapshot: the origin becomes a linear+zero table as large as the disk, the
//     snapshot sits on it, and the helper runs e2fsck and resize2fs on the snapshot.
//   - qcow2: the overlay is made with the new virtual size. e2fsprogs need a file or
//     block device, which a qcow2 is not: where this process may mount FUSE (root, or
//     fusermount3 from the fuse3 package installed) banger exports the overlay as a
//     raw file with qemu-storage-daemon and runs e2fsck and resize2fs on that; the
//     daemon is stopped (flushing the overlay) before Clone returns. Elsewhere (an
//     unprivileged bangerd without fuse3) the filesystem is left at the base's size
//     and the Disk says NeedsOnlineResize: the guest agent must run resize2fs on
//     its mounted root at boot (ext4 grows online). qemu-nbd would need the nbd
//     kernel module and root, so it is not used.
//
// # State, failure and cleanup
//
// A Disk is plain JSON-serialisable data: the strategy's name, the path and format
// the VMM opens, the size, and whatever Remove needs (the files it made, the dm
// device names). bangerd stores it with the VM and shows the strategy in vm inspect.
//
// Clone is transactional (a named error and a deferred undo list): a failure at any
// step removes what the earlier steps made, in reverse order, including the VM's
// directory if Clone made it. A clone into a directory that already holds a disk
// fails without touching that disk. Remove is idempotent and deletes only files
// inside the disk's directory. Reap, called when bangerd opens with the disks of the
// VMs it still has, removes this root's other dm devices (their names carry a hash
// of the disks directory, so two banger roots on one host never touch each other's),
// detaches loop devices backed by files under the disks directory, and unmounts FUSE
// exports left by an interrupted qcow2 grow.
package disk
