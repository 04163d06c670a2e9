// Package termsafe makes text from a guest safe to show on the owner's terminal.
//
// A guest is trusted by nothing on the host, and its serial console is text it
// chose. Written raw to a terminal, escape sequences in it can set the window
// title, write the clipboard (OSC 52), move the cursor to redraw what the owner
// already saw, or on some terminals answer back with input. So wherever console
// text reaches a terminal or an error message, it goes through this package
// first: every control character other than newline and tab becomes a visible
// caret form (ESC is "^[", as `cat -v` writes it), C1 controls (U+0080-U+009F,
// which some terminals obey like ESC sequences) become "M-^[" and the like,
// bidirectional overrides become "<U+202E>", and bytes that are not UTF-8 become
// U+FFFD. A carriage return before a newline is dropped (serial consoles end
// lines with CR LF); any other is shown as "^M", since it would let a line
// overwrite itself.
//
// The result is valid UTF-8 and prints as the same characters on any terminal.
package termsafe

import (
	"io"
	"strings"
	"unicode/utf8"
)

// String returns s neutralised.
func String(s string) string {
	var b strings.Builder
	b.Grow(len(s))
	n := neutraliser{out: &b}
	n.feed([]byte(s), true)
	return b.String()
}

// Writer neutralises what is written to it and passes it on. A character split
// across two writes (a multi-byte UTF-8 sequence, or CR before LF) is held until
// the next write or Close. Not safe for concurrent use.
type Writer struct {
	w   io.Writer
	n   neutraliser
	buf strings.Builder
}

// NewWriter returns a Writer that writes the neutralised text to w.
func NewWriter(w io.Writer) *Writer {
	tw := &Writer{w: w}
	tw.n.out = &tw.buf
	return tw
}

// Write neutralises p and writes the result; it reports len(p) on success.
func (w *Writer) Write(p []byte) (int, error) {
	w.n.feed(p, false)
	if err := w.flush(); err != nil {
		return 0, err
	}
	return len(p), nil
}

// Close writes what was held back (an incomplete UTF-8 sequence shows as
// U+FFFD, a final CR as "^M"). It does not close the underlying writer.
func (w *Writer) Close() error {
	w.n.feed(nil, true)
	return w.flush()
}

func (w *Writer) flush() error {
	if w.buf.Len() == 0 {
		return nil
	}
	_, err := io.WriteString(w.w, w.buf.String())
	w.buf.Reset()
	return err
}

// neutraliser is the streaming state: bytes held from the last feed.
type neutraliser struct {
	out     *strings.Builder
	pending []byte // an incomplete UTF-8 sequence or a lone CR, at most 4 bytes
}

// feed neutralises p after what was pending. Unless final, an incomplete rune or
// a CR at the end is kept pending.
func (n *neutraliser) feed(p []byte, final bool) {
	if len(n.pending) > 0 {
		p = append(n.pending, p...)
		n.pending = nil
	}
	for i := 0; i < len(p); {
		c := p[i]
		if c == '\r' {
			switch {
			case i+1 < len(p) && p[i+1] == '\n':
				i++ // CR LF: keep the LF alone
				continue
			case i+1 == len(p) && !final:
				n.pending = append(n.pending[:0], '\r')
				return
			}
			n.out.WriteString("^M")
			i++
			continue
		}
		if c < utf8.RuneSelf {
			n.ascii(c)
			i++
			continue
		}
		if !final && !utf8.FullRune(p[i:]) {
			n.pending = append(n.pending[:0], p[i:]...)
			return
		}
		r, size := utf8.DecodeRune(p[i:])
		n.rune(r, size)
		i += size
	}
}

func (n *neutraliser) ascii(c byte) {
	switch {
	case c == '\n' || c == '\t':
		n.out.WriteByte(c)
	case c < 0x20:
		n.out.WriteByte('^')
		n.out.WriteByte(c + 0x40) // ESC 0x1b → "^["
	case c == 0x7f:
		n.out.WriteString("^?")
	default:
		n.out.WriteByte(c)
	}
}

func (n *neutraliser) rune(r rune, size int) {
	switch {
	case r == utf8.RuneError && size == 1:
		n.out.WriteRune(utf8.RuneError) // a byte that is not UTF-8
	case r >= 0x80 && r <= 0x9f:
		// C1 controls: CSI is U+009B, OSC U+009D, as ESC [ and ESC ] are.
		n.out.WriteString("M-^")
		n.out.WriteByte(byte(r - 0x80 + 0x40))
	case isBidiControl(r):
		n.out.WriteString("<U+")
		const hex = "0123456789ABCDEF"
		n.out.Write([]byte{hex[r>>12&0xf], hex[r>>8&0xf], hex[r>>4&0xf], hex[r&0xf]})
		n.out.WriteByte('>')
	default:
		n.out.WriteRune(r)
	}
}

// isBidiControl reports the explicit directional formatting characters, which
// reorder how the rest of a line is shown ("Trojan Source").
func isBidiControl(r rune) bool {
	return (r >= 0x202a && r <= 0x202e) || (r >= 0x2066 && r <= 0x2069) || r == 0x200e || r == 0x200f || r == 0x061c
}
