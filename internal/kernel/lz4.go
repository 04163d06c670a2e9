package kernel

import (
	"encoding/binary"
	"errors"
	"fmt"
)

// lz4LegacyMagic starts the LZ4 "legacy" frame format, which the kernel
// uses for CONFIG_KERNEL_LZ4 and lz4 initrds: after the magic, blocks of a
// 4-byte little-endian compressed size and an LZ4 block, each decompressing
// to at most 8 MiB. No library at hand reads it, and a block decoder is short.
const lz4LegacyMagic = 0x184C2102

const lz4LegacyBlockMax = 8 << 20

// unlz4Legacy decompresses a legacy-format stream, up to limit bytes of
// output. Trailing bytes too short to be a block (the kernel build appends
// the decompressed size) end the stream.
func unlz4Legacy(src []byte, sizeHint, limit int) ([]byte, error) {
	if len(src) < 4 || binary.LittleEndian.Uint32(src) != lz4LegacyMagic {
		return nil, errors.New("lz4: no legacy frame magic")
	}
	src = src[4:]
	out := make([]byte, 0, min(max(sizeHint, 0), limit))
	for len(src) > 4 {
		n := int(binary.LittleEndian.Uint32(src))
		if n == lz4LegacyMagic { // a concatenated stream
			src = src[4:]
			continue
		}
		if n == 0 || n > len(src)-4 {
			break
		}
		var err error
		out, err = lz4Block(out, src[4:4+n], limit)
		if err != nil {
			return nil, err
		}
		src = src[4+n:]
	}
	if len(out) == 0 {
		return nil, errors.New("lz4: no data")
	}
	return out, nil
}

// lz4Block appends the decompression of one LZ4 block to dst.
func lz4Block(dst, src []byte, limit int) ([]byte, error) {
	start := len(dst)
	i := 0
	for i < len(src) {
		token := src[i]
		i++
		lit := int(token >> 4)
		if lit == 15 {
			for {
				if i >= len(src) {
					return nil, errors.New("lz4: truncated literal length")
				}
				b := src[i]
				i++
				lit += int(b)
				if b != 255 {
					break
				}
			}
		}
		if lit > len(src)-i {
			return nil, errors.New("lz4: literals past the end of the block")
		}
		if len(dst)+lit > limit || len(dst)-start+lit > lz4LegacyBlockMax {
			return nil, fmt.Errorf("lz4: output over %d bytes", limit)
		}
		dst = append(dst, src[i:i+lit]...)
		i += lit
		if i == len(src) {
			break // the last sequence has literals only
		}
		if i+2 > len(src) {
			return nil, errors.New("lz4: truncated match offset")
		}
		off := int(src[i]) | int(src[i+1])<<8
		i += 2
		if off == 0 || off > len(dst)-start { // legacy blocks are independent
			return nil, errors.New("lz4: match offset out of range")
		}
		ml := int(token & 15)
		if ml == 15 {
			for {
				if i >= len(src) {
					return nil, errors.New("lz4: truncated match length")
				}
				b := src[i]
				i++
				ml += int(b)
				if b != 255 {
					break
				}
			}
		}
		ml += 4
		if len(dst)+ml > limit {
			return nil, fmt.Errorf("lz4: output over %d bytes", limit)
		}
		// Byte by byte: a match may overlap the bytes it produces.
		p := len(dst) - off
		for k := 0; k < ml; k++ {
			dst = append(dst, dst[p+k])
		}
	}
	return dst, nil
}
