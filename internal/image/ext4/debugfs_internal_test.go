package ext4

import (
	"strings"
	"testing"
)

// TestScriptRefusesLineBreaks checks the one property the whole debugfs
// approach rests on: no argument can end a script line early, so no name
// from an image becomes a command (debugfs runs "!cmd" lines in a shell).
func TestScriptRefusesLineBreaks(t *testing.T) {
	for _, arg := range []string{"a\nb", "a\rb", "a\x00b", "x\n!touch /tmp/pwned"} {
		var s script
		s.add("set_inode_field", "/"+arg, "uid", "0")
		if s.err == nil {
			t.Errorf("argument %q: accepted, want refused", arg)
		}
		if s.b.Len() != 0 {
			t.Errorf("argument %q: wrote %q, want nothing", arg, s.b.String())
		}
	}
	var s script
	s.add("symlink", "name", strings.Repeat("x", maxScriptLine))
	if s.err == nil {
		t.Error("an over-long line: accepted, want refused")
	}
}

func TestQuote(t *testing.T) {
	for in, want := range map[string]string{
		"plain":     `"plain"`,
		`a"b`:       `"a""b"`,
		"sp ace":    `"sp ace"`,
		`""`:        `""""""`,
		"tab\there": "\"tab\there\"",
	} {
		if got := quote(in); got != want {
			t.Errorf("quote(%q): got %s, want %s", in, got, want)
		}
	}
	var s script
	s.add("set_inode_field", "/a b", "uid", "5")
	if got, want := s.b.String(), "set_inode_field \"/a b\" \"uid\" \"5\"\n"; got != want {
		t.Errorf("line: got %q, want %q", got, want)
	}
}
