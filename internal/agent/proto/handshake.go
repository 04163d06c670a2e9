package proto

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"
)

// The link handshake runs on the raw byte stream before the multiplexer starts. It
// exists because a virtio-serial port is one long-lived stream with no connection
// semantics: a new host peer may find stale bytes from a previous session in either
// direction, or the guest still running the previous session. Each side therefore
// discards everything until it sees the line it expects, tagged with a fresh nonce:
//
//	host → guest: BANGER-AGENT HELLO 1 <nonce>      (repeated until acknowledged)
//	guest → host: BANGER-AGENT ACK 1 <nonce>        (once per HELLO seen)
//	host → guest: BANGER-AGENT GO 1 <nonce>         (once)
//	guest → host: BANGER-AGENT READY 1 <nonce> <agent version>
//
// after which both sides speak yamux. The host repeats HELLO because the guest may
// still be inside an old session, whose multiplexer swallows the first bytes before
// failing on them; the GO/READY pair marks exactly where the duplicates end in each
// direction.

// ProtocolVersion is the version of the link and framing protocol.
const ProtocolVersion = "1"

const (
	magic         = "BANGER-AGENT "
	maxLine       = 512
	helloInterval = 200 * time.Millisecond
)

// ErrProtocolVersion means the peer speaks another version of the protocol.
var ErrProtocolVersion = errors.New("agent protocol version mismatch")

type handshakeLine struct {
	verb, version, nonce, extra string
}

// readLine returns the next handshake line, skipping anything else. Garbage is
// expected (stale bytes, console noise) and is not an error.
func readLine(br *bufio.Reader) (handshakeLine, error) {
	for {
		line, err := br.ReadSlice('\n')
		if err == bufio.ErrBufferFull {
			// a long run of bytes without a newline: not ours; keep scanning
			continue
		}
		if err != nil {
			return handshakeLine{}, err
		}
		i := bytes.LastIndex(line, []byte(magic))
		if i < 0 {
			continue
		}
		fields := strings.Fields(string(line[i+len(magic):]))
		if len(fields) < 3 {
			continue
		}
		hl := handshakeLine{verb: fields[0], version: fields[1], nonce: fields[2]}
		if len(fields) > 3 {
			hl.extra = fields[3]
		}
		return hl, nil
	}
}

func writeLine(w io.Writer, verb, nonce, extra string) error {
	s := magic + verb + " " + ProtocolVersion + " " + nonce
	if extra != "" {
		s += " " + extra
	}
	// the leading newline ends any partial line the peer is scanning
	_, err := io.WriteString(w, "\n"+s+"\n")
	return err
}

// GuestHandshake waits for a host's HELLO on rw, answers it and returns a reader
// that must be used instead of rw for everything that follows (it holds bytes read
// past the handshake). It blocks until a host completes the handshake or reading
// fails; the caller bounds it by closing rw or with a deadline.
func GuestHandshake(rw io.ReadWriter, agentVersion string) (io.Reader, error) {
	br := bufio.NewReaderSize(rw, maxLine)
	acked := ""
	for {
		hl, err := readLine(br)
		if err != nil {
			return nil, err
		}
		switch hl.verb {
		case "HELLO":
			if hl.version != ProtocolVersion {
				// tell the host why, then keep waiting for one we can speak with
				if err := writeLine(rw, "NACK", hl.nonce, "protocol-"+ProtocolVersion); err != nil {
					return nil, fmt.Errorf("handshake: %w", err)
				}
				continue
			}
			if err := writeLine(rw, "ACK", hl.nonce, ""); err != nil {
				return nil, fmt.Errorf("handshake: %w", err)
			}
			acked = hl.nonce
		case "GO":
			if hl.nonce != acked || acked == "" {
				continue // a GO for a handshake we did not acknowledge: stale
			}
			if err := writeLine(rw, "READY", hl.nonce, sanitizeToken(agentVersion)); err != nil {
				return nil, fmt.Errorf("handshake: %w", err)
			}
			return br, nil
		}
	}
}

// HostHandshake performs the host side of the handshake on rw and returns the reader
// to use from then on and the agent's version. It gives up when ctx ends; since a
// blocked Read cannot be interrupted portably, the caller must then close rw.
func HostHandshake(ctx context.Context, rw io.ReadWriter) (io.Reader, string, error) {
	var nb [8]byte
	if _, err := rand.Read(nb[:]); err != nil {
		return nil, "", fmt.Errorf("handshake nonce: %w", err)
	}
	nonce := hex.EncodeToString(nb[:])

	type result struct {
		hl  handshakeLine
		err error
	}
	br := bufio.NewReaderSize(rw, maxLine)
	lines := make(chan result, 1)
	next := make(chan struct{}, 1)
	// the reader goroutine hands over one line per request, so that it never reads
	// past READY: what follows belongs to the multiplexer.
	go func() {
		for range next {
			hl, err := readLine(br)
			lines <- result{hl, err}
			if err != nil {
				return
			}
		}
	}()
	defer close(next)
	await := func(verb string, resend func() error) (handshakeLine, error) {
		var tick <-chan time.Time
		if resend != nil {
			t := time.NewTicker(helloInterval)
			defer t.Stop()
			tick = t.C
		}
		next <- struct{}{}
		for {
			select {
			case <-ctx.Done():
				return handshakeLine{}, fmt.Errorf("agent handshake: waiting for %s: %w", verb, ctx.Err())
			case <-tick:
				if err := resend(); err != nil {
					return handshakeLine{}, fmt.Errorf("agent handshake: %w", err)
				}
			case r := <-lines:
				if r.err != nil {
					if r.err == io.EOF {
						return handshakeLine{}, fmt.Errorf("agent handshake: connection closed while waiting for %s: %w", verb, io.ErrUnexpectedEOF)
					}
					return handshakeLine{}, fmt.Errorf("agent handshake: %w", r.err)
				}
				if r.hl.nonce == nonce && r.hl.verb == "NACK" {
					return handshakeLine{}, fmt.Errorf("agent handshake: agent speaks %s, host speaks %s: %w", r.hl.extra, ProtocolVersion, ErrProtocolVersion)
				}
				if r.hl.nonce == nonce && r.hl.verb == verb {
					return r.hl, nil
				}
				next <- struct{}{}
			}
		}
	}
	hello := func() error { return writeLine(rw, "HELLO", nonce, "") }
	if err := hello(); err != nil {
		return nil, "", fmt.Errorf("agent handshake: %w", err)
	}
	if _, err := await("ACK", hello); err != nil {
		return nil, "", err
	}
	if err := writeLine(rw, "GO", nonce, ""); err != nil {
		return nil, "", fmt.Errorf("agent handshake: %w", err)
	}
	hl, err := await("READY", nil)
	if err != nil {
		return nil, "", err
	}
	return br, hl.extra, nil
}

// sanitizeToken keeps a version string to one whitespace-free token.
func sanitizeToken(s string) string {
	s = strings.Join(strings.Fields(s), "_")
	if s == "" {
		return "unknown"
	}
	return s
}
