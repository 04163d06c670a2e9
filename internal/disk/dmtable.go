package disk

import "fmt"

// The device-mapper tables of a dm-snapshot disk. Sizes are in 512-byte sectors.
//
// A disk the size of its base is one device:
//
//	NAME:         0 S snapshot BASELOOP COWLOOP P 8
//
// A disk larger than its base needs an origin as large as the disk, since a snapshot
// is exactly its origin's size. The origin is the base followed by zeros, and the
// snapshot sits on it:
//
//	NAME.origin:  0 B linear BASELOOP 0
//	              B S-B zero
//	NAME:         0 S snapshot /dev/mapper/NAME.origin COWLOOP P 8
//
// The snapshot target never writes to its origin (that is snapshot-origin's job,
// which banger does not use): every write, including those beyond the base, lands in
// the COW device, and reads of untouched chunks past the base come from the zero
// target. So the base stays read-only and the zero target is never written.
//
// P makes the exception store persistent: the COW file records which chunks it
// holds, so the same tables over the same files bring the disk back after a reboot
// (Activate). Chunks are 8 sectors (4 KiB), ext4's block size, so one guest block
// write copies one chunk.
const chunkSectors = 8

// originTable is the base followed by zeros, sizeSectors long.
func originTable(baseDev string, baseSectors, sizeSectors int64) string {
	return fmt.Sprintf("0 %d linear %s 0\n%d %d zero\n", baseSectors, baseDev, baseSectors, sizeSectors-baseSectors)
}

// snapshotTable is a persistent snapshot of originDev with its exceptions in cowDev.
func snapshotTable(originDev, cowDev string, sizeSectors int64) string {
	return fmt.Sprintf("0 %d snapshot %s %s P %d\n", sizeSectors, originDev, cowDev, chunkSectors)
}

// cowBytes is the size of a COW file that can never fill, so the snapshot can never
// be invalidated by running out of room: one data chunk per chunk of the disk, plus
// the persistent store's header chunk and one metadata chunk per 256 data chunks
// (a metadata chunk holds 4096/16 exceptions), plus slack. The file is sparse: only
// chunks the guest writes take space.
func cowBytes(sizeBytes int64) int64 {
	chunk := int64(chunkSectors * 512)
	data := (sizeBytes + chunk - 1) / chunk
	meta := data/(chunk/16) + 2
	return (1+data+meta)*chunk + 1<<20
}
