package layers

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
)

const (
	// readChunk is how much file content is read at once.
	readChunk = 1 << 20
	// holeChunk is the granularity of hole detection: an all-zero run this
	// long is skipped (left as a hole) instead of written, so a huge sparse
	// file costs reading time but no disk.
	holeChunk = 64 << 10
)

// staging holds regular file contents as numbered blobs in one directory that
// this process created. Blob names are ours, never names from an archive, so
// nothing an archive says decides where bytes land on the host; and all access
// goes through an os.Root, which refuses any path leaving the directory.
type staging struct {
	root  *os.Root // the staging directory
	blobs *os.Root // its "blobs" subdirectory, where content is written
	max   int64    // most content bytes held at once (Limits.MaxDataBytes)

	// Used by one goroutine at a time (the Tree's owner); no lock.
	seq  int
	live int64  // content bytes currently held
	buf  []byte // read buffer, readChunk bytes
	zero []byte // holeChunk zero bytes to compare against
}

func newStaging(root *os.Root, max int64) (*staging, error) {
	if err := root.Mkdir(blobDir, 0o700); err != nil {
		return nil, fmt.Errorf("staging area: %w", err)
	}
	blobs, err := root.OpenRoot(blobDir)
	if err != nil {
		return nil, fmt.Errorf("staging area: %w", err)
	}
	return &staging{root: root, blobs: blobs, max: max, buf: make([]byte, readChunk), zero: make([]byte, holeChunk)}, nil
}

// blobDir holds the blobs, named by number.
const blobDir = "blobs"

func (s *staging) close() error {
	return errors.Join(s.blobs.Close(), s.root.Close())
}

// write stores size bytes from r as a new blob, leaving all-zero runs as
// holes, and returns its name (relative to the staging directory) and the
// 4 KiB blocks it occupies.
func (s *staging) write(ctx context.Context, r io.Reader, size int64) (name string, blocks int64, err error) {
	s.seq++
	base := strconv.Itoa(s.seq)
	name = blobDir + "/" + base
	f, err := s.blobs.OpenFile(base, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return "", 0, fmt.Errorf("staging area: %w", err)
	}
	defer func() {
		if cerr := f.Close(); cerr != nil && err == nil {
			err = fmt.Errorf("staging area: %w", cerr)
		}
		if err != nil {
			s.live -= blocks * BlockSize
			_ = s.blobs.Remove(base)
			name, blocks = "", 0
		}
	}()
	var off int64
	for off < size {
		if err := ctx.Err(); err != nil {
			return name, blocks, err
		}
		n := int(min(int64(len(s.buf)), size-off))
		if _, err := io.ReadFull(r, s.buf[:n]); err != nil {
			if err == io.EOF {
				err = io.ErrUnexpectedEOF
			}
			return name, blocks, fmt.Errorf("read file content: %w", err)
		}
		// Write each maximal run of non-zero chunks with one pwrite.
		runStart := -1
		flush := func(end int) error {
			run := s.buf[runStart:end]
			b := (int64(len(run)) + BlockSize - 1) / BlockSize
			if s.live+b*BlockSize > s.max {
				return fmt.Errorf("more than %d bytes of file content (Limits.MaxDataBytes): %w", s.max, ErrTooLarge)
			}
			if _, err := f.WriteAt(run, off+int64(runStart)); err != nil {
				return fmt.Errorf("staging area: %w", err)
			}
			s.live += b * BlockSize
			blocks += b
			runStart = -1
			return nil
		}
		for i := 0; i < n; i += holeChunk {
			j := min(i+holeChunk, n)
			if !bytes.Equal(s.buf[i:j], s.zero[:j-i]) {
				if runStart < 0 {
					runStart = i
				}
				continue
			}
			if runStart >= 0 {
				if err := flush(i); err != nil {
					return name, blocks, err
				}
			}
		}
		if runStart >= 0 {
			if err := flush(n); err != nil {
				return name, blocks, err
			}
		}
		off += int64(n)
	}
	if err := f.Truncate(size); err != nil { // a trailing hole
		return name, blocks, fmt.Errorf("staging area: %w", err)
	}
	return name, blocks, nil
}

// remove drops a blob that no path names any more.
func (s *staging) remove(name string, blocks int64) error {
	s.live -= blocks * BlockSize
	if err := s.root.Remove(name); err != nil {
		return fmt.Errorf("staging area: %w", err)
	}
	return nil
}
