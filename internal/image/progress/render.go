package progress

import (
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// Mode is how a Renderer shows events.
type Mode int

const (
	// ModePlain prints a line when an item starts, every few seconds while it
	// runs, and when it ends: readable in logs and pipes.
	ModePlain Mode = iota
	// ModeBar redraws one byte bar per item in place; for terminals.
	ModeBar
	// ModeJSON prints each event as one JSON object per line (intermediate
	// events rate-limited), for --json.
	ModeJSON
)

// ModeFor picks ModeJSON when jsonOut is set, ModeBar when w is a terminal,
// and ModePlain otherwise.
func ModeFor(w io.Writer, jsonOut bool) Mode {
	if jsonOut {
		return ModeJSON
	}
	if f, ok := w.(interface{ Fd() uintptr }); ok {
		if _, err := unix.IoctlGetTermios(int(f.Fd()), unix.TCGETS); err == nil {
			return ModeBar
		}
	}
	return ModePlain
}

const (
	barRedrawEvery   = 100 * time.Millisecond
	plainLineEvery   = 5 * time.Second
	jsonEventEvery   = 200 * time.Millisecond
	barWidth         = 30
	shortDigestChars = 12
)

// Renderer turns events into output on one writer. It is safe for use from
// several goroutines; Handle is a Func.
type Renderer struct {
	w    io.Writer
	mode Mode
	now  func() time.Time // a clock, replaced in tests

	mu       sync.Mutex // guards all following fields
	items    []*item    // in order of first appearance
	byKey    map[string]*item
	drawn    int       // lines drawn by the last bar redraw
	lastDraw time.Time // time of the last bar redraw
	err      error     // first write error; output stops after it
}

type item struct {
	ev      Event
	lastOut time.Time // when this item last produced output (plain, json)
}

// NewRenderer returns a Renderer writing to w in the given mode.
func NewRenderer(w io.Writer, mode Mode) *Renderer {
	return &Renderer{w: w, mode: mode, now: time.Now, byKey: map[string]*item{}}
}

// Handle renders e. Write errors are remembered (see Err) and stop further
// output; they never fail the pull.
func (r *Renderer) Handle(e Event) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.err != nil {
		return
	}
	now := r.now()
	it, seen := r.byKey[e.key()]
	if !seen {
		it = &item{}
		r.byKey[e.key()] = it
		r.items = append(r.items, it)
	}
	it.ev = e
	switch r.mode {
	case ModeBar:
		if seen && !e.finished() && now.Sub(r.lastDraw) < barRedrawEvery {
			return
		}
		r.redrawLocked(now)
	case ModeJSON:
		if seen && !e.finished() && now.Sub(it.lastOut) < jsonEventEvery {
			return
		}
		it.lastOut = now
		b, err := json.Marshal(e)
		if err != nil { // cannot happen for this struct; keep the rule of no dropped errors
			r.err = err
			return
		}
		r.writeLocked(string(b) + "\n")
	default:
		if seen && !e.finished() && now.Sub(it.lastOut) < plainLineEvery {
			return
		}
		it.lastOut = now
		r.writeLocked(plainLine(e) + "\n")
	}
}

// Err returns the first error writing output, if any.
func (r *Renderer) Err() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.err
}

// redrawLocked moves the cursor back over the previous drawing and writes
// every item's bar again.
func (r *Renderer) redrawLocked(now time.Time) {
	var b strings.Builder
	if r.drawn > 0 {
		fmt.Fprintf(&b, "\x1b[%dA", r.drawn)
	}
	for _, it := range r.items {
		b.WriteString("\r\x1b[K")
		b.WriteString(barLine(it.ev))
		b.WriteByte('\n')
	}
	r.drawn = len(r.items)
	r.lastDraw = now
	r.writeLocked(b.String())
}

func (r *Renderer) writeLocked(s string) {
	if _, err := io.WriteString(r.w, s); err != nil {
		r.err = err
	}
}

// label names the item an event is about.
func label(e Event) string {
	switch e.Phase {
	case PhaseResolve:
		return "resolve " + e.Message
	case PhaseDownload:
		if e.Layer == "" {
			return "read " + e.Message
		}
		return "layer " + shortDigest(e.Layer)
	case PhaseConvert:
		return "convert to ext4"
	case PhaseDone:
		return "done " + e.Message
	}
	return string(e.Phase)
}

func barLine(e Event) string {
	if e.Phase == PhaseResolve || e.Phase == PhaseDone {
		return label(e)
	}
	l := fmt.Sprintf("%-20s", label(e))
	if e.Total <= 0 {
		return l + "  " + HumanBytes(e.Current)
	}
	filled := int(float64(barWidth) * float64(min(e.Current, e.Total)) / float64(e.Total))
	bar := strings.Repeat("=", filled)
	if filled < barWidth {
		bar += ">" + strings.Repeat(" ", barWidth-filled-1)
	}
	return fmt.Sprintf("%s  [%s]  %s / %s", l, bar, HumanBytes(e.Current), HumanBytes(e.Total))
}

func plainLine(e Event) string {
	if e.Phase == PhaseResolve || e.Phase == PhaseDone {
		return label(e)
	}
	if e.Total <= 0 {
		return fmt.Sprintf("%s: %s", label(e), HumanBytes(e.Current))
	}
	pct := 100 * min(e.Current, e.Total) / e.Total
	return fmt.Sprintf("%s: %s / %s (%d%%)", label(e), HumanBytes(e.Current), HumanBytes(e.Total), pct)
}

// shortDigest shortens "sha256:<64 hex>" to its first hex digits.
func shortDigest(d string) string {
	_, hex, ok := strings.Cut(d, ":")
	if !ok {
		hex = d
	}
	if len(hex) > shortDigestChars {
		hex = hex[:shortDigestChars]
	}
	return hex
}

// HumanBytes formats n with decimal units, as registries and docker show
// sizes: 999 B, 1.5 kB, 12.3 MB, 4.0 GB.
func HumanBytes(n int64) string {
	const unit = 1000
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit && exp < 4; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %cB", float64(n)/float64(div), "kMGTP"[exp])
}
