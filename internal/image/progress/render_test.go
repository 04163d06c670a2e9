package progress

import (
	"bytes"
	"encoding/json"
	"os"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/creack/pty"
)

// clock is a fake time source advanced by the test.
type clock struct{ t time.Time }

func (c *clock) now() time.Time { return c.t }

func newTestRenderer(mode Mode) (*Renderer, *bytes.Buffer, *clock) {
	var buf bytes.Buffer
	r := NewRenderer(&buf, mode)
	c := &clock{t: time.Unix(1000, 0)}
	r.now = c.now
	return r, &buf, c
}

// pull feeds a typical pull: resolve, one layer in 100 steps 10 ms apart,
// a conversion, done.
func pull(r *Renderer, c *clock) {
	r.Handle(Event{Phase: PhaseResolve, Message: "alpine:3"})
	const layer = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
	for i := int64(0); i <= 100; i++ {
		r.Handle(Event{Phase: PhaseDownload, Layer: layer, Current: i * 1000, Total: 100_000})
		c.t = c.t.Add(10 * time.Millisecond)
	}
	r.Handle(Event{Phase: PhaseConvert, Current: 0, Total: 5000})
	r.Handle(Event{Phase: PhaseConvert, Current: 5000, Total: 5000})
	r.Handle(Event{Phase: PhaseDone, Message: "sha256:feed"})
}

func TestJSONLines(t *testing.T) {
	r, buf, c := newTestRenderer(ModeJSON)
	pull(r, c)
	lines := strings.Split(strings.TrimSpace(buf.String()), "\n")
	var events []Event
	for _, l := range lines {
		var e Event
		if err := json.Unmarshal([]byte(l), &e); err != nil {
			t.Fatalf("line %q: %v", l, err)
		}
		events = append(events, e)
	}
	if events[0].Phase != PhaseResolve || events[len(events)-1].Phase != PhaseDone || events[len(events)-1].Message != "sha256:feed" {
		t.Errorf("first/last: got %+v / %+v", events[0], events[len(events)-1])
	}
	downloads := 0
	var last Event
	for _, e := range events {
		if e.Phase == PhaseDownload {
			downloads++
			last = e
		}
	}
	// 1 s of updates every 10 ms, rate-limited to one per 200 ms: about 6,
	// and always the final one.
	if downloads < 4 || downloads > 8 {
		t.Errorf("download events: got %d, want about 6 (rate-limited)", downloads)
	}
	if last.Current != last.Total {
		t.Errorf("last download event: got %d/%d, want complete", last.Current, last.Total)
	}
}

func TestPlainLines(t *testing.T) {
	r, buf, c := newTestRenderer(ModePlain)
	pull(r, c)
	out := buf.String()
	if strings.Contains(out, "\x1b") || strings.Contains(out, "\r") {
		t.Errorf("plain output has terminal controls: %q", out)
	}
	for _, want := range []string{
		"resolve alpine:3\n",
		"layer 0123456789ab: 0 B / 100.0 kB (0%)\n",
		"layer 0123456789ab: 100.0 kB / 100.0 kB (100%)\n",
		"convert to ext4: 5.0 kB / 5.0 kB (100%)\n",
		"done sha256:feed\n",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("plain output:\n%s\nwant a line %q", out, want)
		}
	}
	if n := strings.Count(out, "layer 0123456789ab"); n > 3 {
		t.Errorf("plain output has %d layer lines for 1 s of progress, want at most 3", n)
	}
}

func TestBars(t *testing.T) {
	r, buf, c := newTestRenderer(ModeBar)
	pull(r, c)
	out := buf.String()
	if !strings.Contains(out, "\x1b[") {
		t.Errorf("bar output has no cursor movement: %q", out)
	}
	// The last drawing shows every item, the layer complete.
	ups := regexp.MustCompile(`\x1b\[\d+A`).FindAllStringIndex(out, -1)
	if len(ups) == 0 {
		t.Fatalf("bar output never redraws: %q", out)
	}
	last := out[ups[len(ups)-1][1]:]
	for _, want := range []string{"resolve alpine:3", "[" + strings.Repeat("=", barWidth) + "]  100.0 kB / 100.0 kB", "done sha256:feed"} {
		if !strings.Contains(last, want) {
			t.Errorf("last drawing:\n%q\nwant %q", last, want)
		}
	}
}

func TestModeFor(t *testing.T) {
	if got := ModeFor(&bytes.Buffer{}, false); got != ModePlain {
		t.Errorf("buffer: got %v, want plain", got)
	}
	if got := ModeFor(os.Stdout, true); got != ModeJSON {
		t.Errorf("--json: got %v, want JSON", got)
	}
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	defer w.Close()
	if got := ModeFor(w, false); got != ModePlain {
		t.Errorf("pipe: got %v, want plain", got)
	}
	ptmx, tty, err := pty.Open()
	if err != nil {
		t.Skipf("no pty: %v", err)
	}
	defer ptmx.Close()
	defer tty.Close()
	if got := ModeFor(tty, false); got != ModeBar {
		t.Errorf("terminal: got %v, want bars", got)
	}
}

func TestHumanBytes(t *testing.T) {
	for n, want := range map[int64]string{0: "0 B", 999: "999 B", 1000: "1.0 kB", 1_500_000: "1.5 MB", 4_000_000_000: "4.0 GB"} {
		if got := HumanBytes(n); got != want {
			t.Errorf("HumanBytes(%d): got %q, want %q", n, got, want)
		}
	}
}
