package proto

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"io"
	"sync"
)

// FrameType says what a frame's payload is. Each call uses a fixed subset; see doc.go in
// package agent for which frames each call exchanges.
type FrameType byte

// Frame types. Letters, not small integers, so that a hex dump of a stream is readable.
const (
	FrameRequest  FrameType = 'Q' // host→guest, first frame of every stream: JSON Request
	FrameResponse FrameType = 'R' // guest→host, answer to the request: JSON Response
	FrameStdin    FrameType = 'I' // host→guest, exec stdin bytes
	FrameStdinEOF FrameType = 'i' // host→guest, exec stdin closed (empty payload)
	FrameResize   FrameType = 'Z' // host→guest, exec pty window size: JSON Resize
	FrameSignal   FrameType = 'K' // host→guest, exec signal to the process group: JSON Signal
	FrameStdout   FrameType = 'O' // guest→host, exec stdout (or the pty's output)
	FrameStderr   FrameType = 'E' // guest→host, exec stderr
	FrameExit     FrameType = 'X' // guest→host, last exec frame: JSON ExitStatus
	FrameData     FrameType = 'D' // either way, a chunk of a tar stream
	FrameDataEnd  FrameType = 'F' // either way, end of the tar stream (empty payload)
	FrameStatus   FrameType = 'S' // guest→host, outcome of a file transfer: JSON Response
)

func (t FrameType) String() string {
	if t >= 0x21 && t < 0x7f {
		return fmt.Sprintf("%q", rune(t))
	}
	return fmt.Sprintf("0x%02x", byte(t))
}

const (
	// MaxFrameSize bounds any frame's payload. Data frames are written in chunks of
	// DataChunkSize, far below it; a peer announcing more is broken or hostile.
	MaxFrameSize = 1 << 20
	// MaxJSONFrameSize bounds the JSON frames (requests, responses, control messages),
	// which are small: an argv and an environment, or a list of keys.
	MaxJSONFrameSize = 256 << 10
	// DataChunkSize is how much stream data one frame carries.
	DataChunkSize = 32 << 10

	frameHeaderSize = 5
)

// Frame is one message on a stream: a type and a payload.
type Frame struct {
	Type    FrameType
	Payload []byte
}

// isJSON reports whether frames of type t carry JSON and so obey MaxJSONFrameSize.
func (t FrameType) isJSON() bool {
	switch t {
	case FrameRequest, FrameResponse, FrameResize, FrameSignal, FrameExit, FrameStatus:
		return true
	}
	return false
}

// Conn reads and writes frames on one stream. Reads must come from one goroutine;
// writes may come from several (they are serialised so frames never interleave).
type Conn struct {
	r *bufio.Reader

	wmu sync.Mutex // guards w and hdr: one frame is written whole
	w   io.Writer
	hdr [frameHeaderSize]byte
}

// NewConn wraps a stream. The caller keeps ownership of rw (closing it is its job).
func NewConn(rw io.ReadWriter) *Conn {
	return &Conn{r: bufio.NewReaderSize(rw, 64<<10), w: rw}
}

// ReadFrame reads the next frame. A frame over the size limit for its type is an
// *Error with code CodeFrameTooLarge and is not consumed: the stream cannot be
// resynchronised and must be closed after answering.
func (c *Conn) ReadFrame() (Frame, error) {
	var hdr [frameHeaderSize]byte
	if _, err := io.ReadFull(c.r, hdr[:]); err != nil {
		if err == io.ErrUnexpectedEOF {
			return Frame{}, fmt.Errorf("read frame header: %w", err)
		}
		return Frame{}, err
	}
	t := FrameType(hdr[0])
	n := binary.BigEndian.Uint32(hdr[1:])
	limit := uint32(MaxFrameSize)
	if t.isJSON() {
		limit = MaxJSONFrameSize
	}
	if n > limit {
		return Frame{}, Errorf(CodeFrameTooLarge, "frame %s of %d bytes exceeds the limit of %d bytes", t, n, limit)
	}
	p := make([]byte, n)
	if _, err := io.ReadFull(c.r, p); err != nil {
		return Frame{}, fmt.Errorf("read %s frame payload (%d bytes): %w", t, n, err)
	}
	return Frame{Type: t, Payload: p}, nil
}

// WriteFrame writes one frame. Payloads over MaxFrameSize are refused, so a bug here
// shows up as an error on the sender rather than as a refusal from the peer.
func (c *Conn) WriteFrame(t FrameType, payload []byte) error {
	if len(payload) > MaxFrameSize {
		return fmt.Errorf("write %s frame: payload of %d bytes exceeds the limit of %d", t, len(payload), MaxFrameSize)
	}
	c.wmu.Lock()
	defer c.wmu.Unlock()
	c.hdr[0] = byte(t)
	binary.BigEndian.PutUint32(c.hdr[1:], uint32(len(payload)))
	if _, err := c.w.Write(c.hdr[:]); err != nil {
		return fmt.Errorf("write %s frame: %w", t, err)
	}
	if len(payload) == 0 {
		return nil
	}
	if _, err := c.w.Write(payload); err != nil {
		return fmt.Errorf("write %s frame: %w", t, err)
	}
	return nil
}

// WriteJSON marshals v and writes it as one frame of type t.
func (c *Conn) WriteJSON(t FrameType, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return fmt.Errorf("encode %s frame: %w", t, err)
	}
	if len(b) > MaxJSONFrameSize {
		return fmt.Errorf("encode %s frame: %d bytes exceeds the limit of %d", t, len(b), MaxJSONFrameSize)
	}
	return c.WriteFrame(t, b)
}

// DecodeJSON decodes a JSON frame payload into v, refusing unknown fields so that a
// mismatch between host and guest versions is loud rather than silently ignored.
func DecodeJSON(f Frame, v any) error {
	dec := json.NewDecoder(bytes.NewReader(f.Payload))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return Errorf(CodeBadRequest, "malformed %s frame: %v", f.Type, err)
	}
	return nil
}

// DataWriter returns an io.Writer that sends everything written to it as frames of
// type t, in chunks of at most DataChunkSize.
func (c *Conn) DataWriter(t FrameType) io.Writer { return dataWriter{c: c, t: t} }

type dataWriter struct {
	c *Conn
	t FrameType
}

func (w dataWriter) Write(p []byte) (int, error) {
	n := 0
	for len(p) > 0 {
		chunk := p
		if len(chunk) > DataChunkSize {
			chunk = chunk[:DataChunkSize]
		}
		if err := w.c.WriteFrame(w.t, chunk); err != nil {
			return n, err
		}
		n += len(chunk)
		p = p[len(chunk):]
	}
	return n, nil
}

// DataReader returns an io.Reader over a sequence of FrameData frames ended by a
// FrameDataEnd frame (io.EOF). Any other frame type is a protocol error.
func (c *Conn) DataReader() io.Reader { return &dataReader{c: c} }

type dataReader struct {
	c    *Conn
	buf  []byte
	done bool
}

func (r *dataReader) Read(p []byte) (int, error) {
	for len(r.buf) == 0 {
		if r.done {
			return 0, io.EOF
		}
		f, err := r.c.ReadFrame()
		if err != nil {
			if err == io.EOF {
				return 0, fmt.Errorf("data stream ended without an end frame: %w", io.ErrUnexpectedEOF)
			}
			return 0, err
		}
		switch f.Type {
		case FrameData:
			r.buf = f.Payload
		case FrameDataEnd:
			r.done = true
		default:
			return 0, Errorf(CodeBadRequest, "unexpected %s frame inside a data stream", f.Type)
		}
	}
	n := copy(p, r.buf)
	r.buf = r.buf[n:]
	return n, nil
}
