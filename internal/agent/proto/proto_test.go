package proto

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"strings"
	"testing"
	"time"
)

func TestFrameRoundTripAndLimits(t *testing.T) {
	var buf bytes.Buffer
	c := NewConn(&buf)
	if err := c.WriteJSON(FrameRequest, Request{Call: CallHealth}); err != nil {
		t.Fatal(err)
	}
	big := bytes.Repeat([]byte{7}, 3*DataChunkSize+5)
	if _, err := c.DataWriter(FrameData).Write(big); err != nil {
		t.Fatal(err)
	}
	if err := c.WriteFrame(FrameDataEnd, nil); err != nil {
		t.Fatal(err)
	}
	if err := c.WriteFrame(FrameData, make([]byte, MaxFrameSize+1)); err == nil {
		t.Error("WriteFrame over the limit: got nil, want an error")
	}
	f, err := c.ReadFrame()
	if err != nil || f.Type != FrameRequest {
		t.Fatalf("first frame: %v %v", f.Type, err)
	}
	var req Request
	if err := DecodeJSON(f, &req); err != nil || req.Call != CallHealth {
		t.Fatalf("decode request: %+v %v", req, err)
	}
	got, err := io.ReadAll(c.DataReader())
	if err != nil || !bytes.Equal(got, big) {
		t.Fatalf("data stream: got %d bytes (%v), want %d", len(got), err, len(big))
	}
	if _, err := c.ReadFrame(); err != io.EOF {
		t.Errorf("after the last frame: got %v, want io.EOF", err)
	}
}

func TestReadFrameRefusals(t *testing.T) {
	tests := []struct {
		name  string
		bytes []byte
		want  error
	}{
		{"json frame over its limit", []byte{'Q', 0, 0x04, 0, 1}, ErrFrameTooLarge},
		{"data frame over its limit", []byte{'D', 0, 0x10, 0, 1}, ErrFrameTooLarge},
		{"truncated header", []byte{'D', 0}, io.ErrUnexpectedEOF},
		{"truncated payload", []byte{'D', 0, 0, 0, 9, 1, 2}, io.ErrUnexpectedEOF},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := NewConn(bytes.NewBuffer(tt.bytes)).ReadFrame()
			if !errors.Is(err, tt.want) {
				t.Errorf("got %v, want %v", err, tt.want)
			}
		})
	}
	var buf bytes.Buffer
	c := NewConn(&buf)
	_ = c.WriteFrame(FrameData, []byte("x"))
	_ = c.WriteFrame(FrameStdout, []byte("y"))
	if _, err := io.ReadAll(c.DataReader()); !errors.Is(err, ErrBadRequest) {
		t.Errorf("foreign frame inside a data stream: got %v, want bad request", err)
	}
	if _, err := io.ReadAll(NewConn(bytes.NewBufferString("")).DataReader()); !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Errorf("data stream without an end frame: got %v, want unexpected EOF", err)
	}
}

func TestDecodeJSONRefusesUnknownFields(t *testing.T) {
	var r Request
	err := DecodeJSON(Frame{Type: FrameRequest, Payload: []byte(`{"call":"x","bogus":1}`)}, &r)
	if !errors.Is(err, ErrBadRequest) || !strings.Contains(err.Error(), "bogus") {
		t.Errorf("got %v, want a bad request naming the field", err)
	}
}

// pipePair is a bidirectional in-memory link with buffering, like a serial line.
func pipePair(t *testing.T) (net.Conn, net.Conn) {
	t.Helper()
	ln, err := net.Listen("unix", t.TempDir()+"/s")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	ch := make(chan net.Conn, 1)
	go func() { c, _ := ln.Accept(); ch <- c }()
	a, err := net.Dial("unix", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	b := <-ch
	t.Cleanup(func() { a.Close(); b.Close() })
	return a, b
}

// TestHandshakeSkipsStaleBytes: a host that arrives on a serial line finds noise
// and leftovers of an old session in both directions; the handshake must find its
// way through and leave exactly the bytes sent after it.
func TestHandshakeSkipsStaleBytes(t *testing.T) {
	host, guest := pipePair(t)
	// stale bytes toward the host, including an old READY for another nonce
	go func() {
		_, _ = guest.Write([]byte("\x00\x01garbage\nBANGER-AGENT READY 1 0123456789abcdef old\n" + strings.Repeat("x", 2000)))
	}()
	type res struct {
		r   io.Reader
		err error
	}
	gdone := make(chan res, 1)
	go func() {
		// stale bytes toward the guest come first in its stream
		r, err := GuestHandshake(guest, "v1.2.3")
		if err == nil {
			_, err = guest.Write([]byte("after-guest"))
		}
		gdone <- res{r, err}
	}()
	if _, err := host.Write([]byte("old yamux bytes\x00\x02\nBANGER-AGENT GO 1 feedfacefeedface\n")); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	hr, version, err := HostHandshake(ctx, host)
	if err != nil {
		t.Fatalf("HostHandshake: %v", err)
	}
	if version != "v1.2.3" {
		t.Errorf("agent version: got %q, want v1.2.3", version)
	}
	if _, err := host.Write([]byte("after-host")); err != nil {
		t.Fatal(err)
	}
	g := <-gdone
	if g.err != nil {
		t.Fatalf("GuestHandshake: %v", g.err)
	}
	buf := make([]byte, len("after-host"))
	if _, err := io.ReadFull(g.r, buf); err != nil || string(buf) != "after-host" {
		t.Errorf("guest after handshake: got %q, %v; want after-host", buf, err)
	}
	buf = make([]byte, len("after-guest"))
	if _, err := io.ReadFull(hr, buf); err != nil || string(buf) != "after-guest" {
		t.Errorf("host after handshake: got %q, %v; want after-guest", buf, err)
	}
}

func TestHandshakeVersionMismatchAndTimeout(t *testing.T) {
	host, guest := pipePair(t)
	go func() {
		// an agent from the future answers every HELLO with a NACK
		buf := make([]byte, 512)
		n, _ := guest.Read(buf)
		fields := strings.Fields(string(buf[:n]))
		_, _ = guest.Write([]byte("BANGER-AGENT NACK 1 " + fields[3] + " protocol-2\n"))
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, _, err := HostHandshake(ctx, host); !errors.Is(err, ErrProtocolVersion) {
		t.Errorf("against a NACK: got %v, want ErrProtocolVersion", err)
	}

	silent, _ := pipePair(t)
	ctx, cancel = context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	if _, _, err := HostHandshake(ctx, silent); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("against silence: got %v, want deadline exceeded", err)
	}
	silent.Close()
}
