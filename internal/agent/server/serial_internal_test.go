package server

import (
	"context"
	"io"
	"sync/atomic"
	"testing"
	"time"
)

// eofPort behaves like a virtio-serial port with no host peer: every read returns
// EOF at once.
type eofPort struct{ reads atomic.Int64 }

func (p *eofPort) Read([]byte) (int, error)    { p.reads.Add(1); return 0, io.EOF }
func (p *eofPort) Write(b []byte) (int, error) { return len(b), nil }

// TestSerialNoPeerBacksOff: with no host peer, the agent must retry with growing
// pauses (10ms doubling to 1s) instead of spinning. Over 1.5s that is at most 8
// reads; a busy loop would make millions.
func TestSerialNoPeerBacksOff(t *testing.T) {
	s := New(Config{})
	port := &eofPort{}
	ctx, cancel := context.WithTimeout(context.Background(), 1500*time.Millisecond)
	defer cancel()
	var b backoff
	s.serveSerialLink(ctx, port, "eof-port", &b)
	if got := port.reads.Load(); got < 3 || got > 10 {
		t.Errorf("reads of a peerless port in 1.5s: got %d, want 3-10 (backing off, still retrying)", got)
	}
	// 10+20+...+640ms = 1.27s: the delay has grown well past its start by now,
	// even on a loaded machine where timers fire late
	if b.d < 160*time.Millisecond || b.d > serialBackoffMax {
		t.Errorf("backoff after 1.5s without a peer: got %v, want it grown (>=160ms) and capped at %v", b.d, serialBackoffMax)
	}
}
