package ext4

import (
	"banger/internal/image/layers"
)

// SizePolicy decides how much larger than its content an image is made.
// Free space is max(HeadroomPercent of the content, MinHeadroom); spare
// inodes likewise. A VM's disk can grow later (`--disk`); this is what a
// fresh image has to work with.
type SizePolicy struct {
	HeadroomPercent int   // default 20
	MinHeadroom     int64 // bytes; default 64 MiB
	MinInodes       int   // spare inodes at least; default 8192
}

// Defaults for SizePolicy.
const (
	DefaultHeadroomPercent = 20
	DefaultMinHeadroom     = 64 << 20
	DefaultMinInodes       = 8192
)

// WithDefaults returns p with zero fields set to the defaults.
func (p SizePolicy) WithDefaults() SizePolicy {
	if p.HeadroomPercent <= 0 {
		p.HeadroomPercent = DefaultHeadroomPercent
	}
	if p.MinHeadroom <= 0 {
		p.MinHeadroom = DefaultMinHeadroom
	}
	if p.MinInodes <= 0 {
		p.MinInodes = DefaultMinInodes
	}
	return p
}

// Plan is what mkfs.ext4 is asked for.
type Plan struct {
	Bytes      int64 // size of the image file, a multiple of 1 MiB
	Inodes     int
	JournalMiB int
	// UsedBytes estimates what the content and metadata occupy, which is
	// also about what mkfs.ext4 writes to the host disk.
	UsedBytes int64
}

const (
	mib       = 1 << 20
	inodeSize = 256
)

// Plan sizes an image for a tree with the given stats.
func (p SizePolicy) Plan(s layers.Stats) Plan {
	p = p.WithDefaults()
	const bs = layers.BlockSize
	// Content: file data, directory blocks (one each, plus the entries'
	// bytes), long symlink targets, and an xattr block for each file that
	// may not fit its attributes in the inode.
	blocks := s.DataBlocks + int64(s.Dirs) + (s.DirEntryBytes+bs-1)/bs + int64(s.LongLinks) + int64(s.XattrNodes)
	// Extent tree blocks of fragmented or sparse files, and slack.
	blocks += blocks/100 + 16
	content := blocks * bs

	inodes := s.Nodes + max(s.Nodes*p.HeadroomPercent/100, p.MinInodes)
	itable := int64(inodes) * inodeSize

	used := content + itable
	free := max(used*int64(p.HeadroomPercent)/100, p.MinHeadroom)
	total := used + free
	journal := journalMiB(total)
	total += int64(journal) * mib
	// Bitmaps, group descriptors and the blocks reserved for online resize:
	// about 1.5% of a filesystem, more in small ones.
	total += total/64 + 4*mib
	total = (total + mib - 1) / mib * mib
	return Plan{Bytes: total, Inodes: inodes, JournalMiB: journal, UsedBytes: used + int64(journal)*mib}
}

// journalMiB follows mke2fs's own choice by filesystem size, capped lower:
// these are single-user VM disks.
func journalMiB(bytes int64) int {
	switch {
	case bytes < 256*mib:
		return 8
	case bytes < 1024*mib:
		return 16
	case bytes < 16<<30:
		return 64
	}
	return 128
}
