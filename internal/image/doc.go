// Package image turns container images and root filesystem archives into
// ext4 root filesystem images for banger's VMs, as an unprivileged process,
// without trusting the input.
//
// # Sources and identity
//
// Pull takes a registry reference, an OCI layout directory or a `docker
// save` archive (package oci); Import takes a rootfs tarball (plain, gzip or
// zstd), a directory or an existing ext4 file. Every image is identified by
// a digest: the config digest for OCI images (it names the uncompressed
// layers, so the same image from any source has the same id), the sha256 of
// the file for tarballs and ext4 files, and the sha256 of a canonical tar
// stream of the tree for directories. Resolve and ResolveImport compute the
// id cheaply (manifests only, for registries), so the caller can skip a
// pull whose result it already has.
//
// # How the ext4 image is built without root
//
// Layers are applied, in order, to a model of the tree (package layers):
// metadata in memory, regular file contents as numbered blobs in a private
// staging directory. Whiteouts (.wh.NAME) and opaque directories
// (.wh..wh..opq) are applied to the model; hardlinks are shared nodes. Each
// layer's uncompressed stream is checked against the diff_id its config
// names.
//
// The model is then laid out as plain directories and files (mode 0700/0600,
// owned by this process) for `mkfs.ext4 -d`, which copies contents, hardlinks
// and times into a new image file and needs no privilege. A generated
// `debugfs -w -f` script then sets, inside the image file only, what an
// unprivileged process cannot create on the host: every inode's owner and
// mode (setuid, setgid and sticky included), symlinks, character and block
// devices, fifos, hardlinks between them, and xattrs (package ext4). The
// result must pass `e2fsck -fn` before it is renamed into place.
//
// We chose this over the alternatives because it needs nothing beyond
// e2fsprogs: a user namespace cannot map the arbitrary uids an image holds
// without newuidmap and subordinate id ranges, nor create device nodes; and
// a root-helper step would widen the helper's surface with archive parsing,
// the riskiest code here.
//
// # Hostile input
//
// Nothing an archive says is ever created on the host as itself: no archive
// path is used as a host path (blobs have our names), no symlink, device
// node, setuid bit or foreign owner exists outside the model and the image,
// and every host-side operation on the staging area goes through an os.Root.
// Paths are resolved inside the model: "../" cannot climb above the image
// root, absolute and escaping symlinks resolve inside the image (a symlink
// a -> /etc followed by a/passwd writes the image's /etc/passwd), hardlinks
// name only image files. A device node for a host disk becomes an inode in
// the image and nothing else. Names that could break a debugfs script line
// (newline, carriage return, NUL) and other unrepresentable entries are
// refused (ErrUnsafe); file sizes, total content and the number of files are
// capped (layers.Limits, ErrTooLarge), and all-zero runs are staged as holes,
// so a huge sparse file or a zip bomb cannot fill the host's disk.
//
// # Output
//
// The image file is written next to its destination under a temporary name
// and renamed into place only when complete and checked; on any failure the
// temporary file and the staging area are removed, so there is no partial
// output. Its size is the content plus headroom (ext4.SizePolicy).
//
// Files the caller injects (the guest agent and its init wiring) are applied
// as a last layer at conversion time; Reinject puts newer ones into a copy of
// an existing image.
package image
