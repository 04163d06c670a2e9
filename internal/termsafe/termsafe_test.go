package termsafe

import (
	"bytes"
	"strings"
	"testing"
	"unicode/utf8"
)

var cases = []struct {
	name, in, want string
}{
	{"plain text", "Linux version 6.1.0\n", "Linux version 6.1.0\n"},
	{"tab and newline kept", "a\tb\nc", "a\tb\nc"},
	{"CR LF is a newline", "boot ok\r\nnext\r\n", "boot ok\nnext\n"},
	{"lone CR cannot overwrite the line", "rm -rf / \rharmless", "rm -rf / ^Mharmless"},
	{"CSI colour", "\x1b[31mred\x1b[0m", "^[[31mred^[[0m"},
	{"CSI clear screen and home", "\x1b[2J\x1b[H", "^[[2J^[[H"},
	{"OSC 52 clipboard write", "\x1b]52;c;Y3VybCBldmlsLnNoIHwgc2g=\x07", "^[]52;c;Y3VybCBldmlsLnNoIHwgc2g=^G"},
	{"OSC 0 window title", "\x1b]0;pwned\x1b\\", "^[]0;pwned^[\\"},
	{"DCS", "\x1bP+q544e\x1b\\", "^[P+q544e^[\\"},
	{"C1 CSI as a raw byte is not UTF-8", "\x9b31m", "\uFFFD31m"},
	{"C1 CSI as UTF-8 U+009B", "\u009b31m", "M-^[31m"},
	{"C1 OSC as UTF-8 U+009D", "\u009d0;t\u009c", "M-^]0;tM-^\\"},
	{"NUL, BEL, backspace, DEL", "a\x00b\x07c\x08d\x7f", "a^@b^Gc^Hd^?"},
	{"invalid UTF-8", "ok\xff\xfe\xc3", "ok\uFFFD\uFFFD\uFFFD"},
	{"truncated sequence mid-string", "\xe2\x82x", "\uFFFD\uFFFDx"},
	{"valid UTF-8 kept", "héllo wörld ✓ 日本", "héllo wörld ✓ 日本"},
	{"bidi override shown", "abc\u202edcba", "abc<U+202E>dcba"},
	{"overlong encoding of ESC", "\xc0\x9b", "\uFFFD\uFFFD"},
}

func TestString(t *testing.T) {
	for _, tt := range cases {
		t.Run(tt.name, func(t *testing.T) {
			got := String(tt.in)
			if got != tt.want {
				t.Errorf("String(%q) = %q, want %q", tt.in, got, tt.want)
			}
			checkSafe(t, got)
		})
	}
}

// TestWriterSplits feeds every case split at every byte: a sequence cut in two by
// the reads of a stream must come out as if it had arrived whole.
func TestWriterSplits(t *testing.T) {
	for _, tt := range cases {
		for cut := 0; cut <= len(tt.in); cut++ {
			var out bytes.Buffer
			w := NewWriter(&out)
			for _, part := range []string{tt.in[:cut], tt.in[cut:]} {
				if n, err := w.Write([]byte(part)); err != nil || n != len(part) {
					t.Fatalf("Write: %d, %v", n, err)
				}
			}
			if err := w.Close(); err != nil {
				t.Fatal(err)
			}
			if out.String() != tt.want {
				t.Errorf("%s cut at %d: got %q, want %q", tt.name, cut, out.String(), tt.want)
			}
		}
	}
}

func TestWriterByteAtATime(t *testing.T) {
	in := "\x1b]52;c;ZXZpbA==\x07line\r\nnext\rover ✓\xff\u009b"
	var out bytes.Buffer
	w := NewWriter(&out)
	for i := range len(in) {
		if _, err := w.Write([]byte{in[i]}); err != nil {
			t.Fatal(err)
		}
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	if want := String(in); out.String() != want {
		t.Errorf("byte at a time: got %q, want %q", out.String(), want)
	}
}

// checkSafe asserts the invariant: valid UTF-8 with no control character but
// newline and tab.
func checkSafe(t *testing.T, s string) {
	t.Helper()
	if !utf8.ValidString(s) {
		t.Errorf("%q is not valid UTF-8", s)
	}
	for _, r := range s {
		if (r < 0x20 && r != '\n' && r != '\t') || r == 0x7f || (r >= 0x80 && r <= 0x9f) || isBidiControl(r) {
			t.Errorf("%q still holds control %U", s, r)
		}
	}
}

func FuzzString(f *testing.F) {
	for _, tt := range cases {
		f.Add(tt.in)
	}
	f.Fuzz(func(t *testing.T, in string) {
		got := String(in)
		checkSafe(t, got)
		if utf8.ValidString(in) && !strings.ContainsFunc(in, func(r rune) bool {
			return r < 0x20 || r == 0x7f || (r >= 0x80 && r <= 0x9f) || isBidiControl(r)
		}) && got != in {
			t.Errorf("harmless %q changed to %q", in, got)
		}
	})
}
