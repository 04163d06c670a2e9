// Package progress carries the progress of an image pull or import (resolving
// the reference, reading each layer, building the ext4 file) as events, and
// renders them three ways: redrawn byte bars on a terminal, plain lines when
// output is piped, and one JSON object per line for --json.
//
// The image library only emits events; it never decides how they look. The
// renderer lives here, next to the event type, because its lines (one per
// layer, a convert bar) are specific to images.
package progress

// Phase is the stage of a pull or import an event reports on.
type Phase string

// The phases, in the order a pull goes through them. Download covers reading
// layer bytes from any source (a registry, an OCI layout, an archive or a
// local tarball); Convert covers building the ext4 file; Done carries the
// image id in Message.
const (
	PhaseResolve  Phase = "resolve"
	PhaseDownload Phase = "download"
	PhaseConvert  Phase = "convert"
	PhaseDone     Phase = "done"
)

// Event is one progress report. Events for one item (a layer download, the
// conversion) start with Current 0 and end with Current == Total when Total
// is known; Total 0 means the size is not known in advance.
type Event struct {
	Phase   Phase  `json:"phase"`
	Layer   string `json:"layer,omitempty"` // layer digest, for download events
	Current int64  `json:"current"`
	Total   int64  `json:"total"`
	Message string `json:"message,omitempty"` // the reference (resolve) or the image id (done)
}

// Func receives events. The image library calls it from one goroutine at a
// time, so an implementation needs no lock of its own; it must not block for
// long, since the pull waits for it.
type Func func(Event)

// key identifies the item an event is about, so successive events for the
// same layer update the same line.
func (e Event) key() string { return string(e.Phase) + "\x00" + e.Layer }

// finished reports whether e is the last event of its item.
func (e Event) finished() bool {
	return e.Phase == PhaseDone || (e.Total > 0 && e.Current >= e.Total)
}
