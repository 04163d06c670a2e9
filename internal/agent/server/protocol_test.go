package server_test

import (
	"encoding/binary"
	"errors"
	"io"
	"testing"
	"time"

	"banger/internal/agent/proto"
	"banger/internal/agent/server"
)

// TestBadFramesRefused sends broken streams by hand. Each must be answered with a
// clear error on that stream while the session and the agent keep serving.
func TestBadFramesRefused(t *testing.T) {
	c := newAgent(t, server.Config{})
	frame := func(typ byte, n uint32, payload []byte) []byte {
		b := make([]byte, 5, 5+len(payload))
		b[0] = typ
		binary.BigEndian.PutUint32(b[1:], n)
		return append(b, payload...)
	}
	raw := func(s string) []byte { return frame('Q', uint32(len(s)), []byte(s)) }
	tests := []struct {
		name  string
		bytes []byte
		want  error
	}{
		{"oversized request", frame('Q', 64<<20, nil), proto.ErrFrameTooLarge},
		{"oversized data frame", frame('D', proto.MaxFrameSize+1, nil), proto.ErrFrameTooLarge},
		{"not a request first", frame('I', 3, []byte("abc")), proto.ErrBadRequest},
		{"malformed json", raw(`{"call": "health"`), proto.ErrBadRequest},
		{"unknown field", raw(`{"call": "health", "extra": 1}`), proto.ErrBadRequest},
		{"unknown call", raw(`{"call": "format-disk"}`), proto.ErrUnknownCall},
		{"exec without args", raw(`{"call": "exec"}`), proto.ErrBadRequest},
		{"exec args wrong type", raw(`{"call": "exec", "args": {"argv": "ls"}}`), proto.ErrBadRequest},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			st, err := c.OpenRawStream()
			if err != nil {
				t.Fatal(err)
			}
			defer st.Close()
			if _, err := st.Write(tt.bytes); err != nil {
				t.Fatalf("write: %v", err)
			}
			conn := proto.NewConn(st)
			f, err := conn.ReadFrame()
			if err != nil {
				t.Fatalf("read answer: %v", err)
			}
			var resp proto.Response
			if err := proto.DecodeJSON(f, &resp); err != nil || f.Type != proto.FrameResponse {
				t.Fatalf("answer: got %s frame %q (%v), want a response", f.Type, f.Payload, err)
			}
			if resp.Error == nil || !errors.Is(resp.Error, tt.want) {
				t.Fatalf("answer: got %+v, want %v", resp.Error, tt.want)
			}
			if resp.Error.Message == "" {
				t.Errorf("error without a message: %+v", resp.Error)
			}
			// the agent closes a refused stream
			if _, err := conn.ReadFrame(); !errors.Is(err, io.EOF) {
				t.Errorf("after refusal: got %v, want the stream closed (EOF)", err)
			}
			mustHealthy(t, c)
		})
	}
	if err := c.RawCall(ctxT(t), "nope", nil); !errors.Is(err, proto.ErrUnknownCall) {
		t.Errorf("RawCall unknown: got %v, want unknown call", err)
	}
}

func TestShutdownCall(t *testing.T) {
	actions := make(chan string, 1)
	c := newAgent(t, server.Config{Shutdown: func(a string) error { actions <- a; return nil }})
	if err := c.Shutdown(ctxT(t), "halt-and-catch-fire"); !errors.Is(err, proto.ErrBadRequest) {
		t.Errorf("Shutdown(bad action): got %v, want bad request", err)
	}
	if err := c.Shutdown(ctxT(t), proto.ActionReboot); err != nil {
		t.Fatalf("Shutdown(reboot): %v", err)
	}
	select {
	case a := <-actions:
		if a != proto.ActionReboot {
			t.Errorf("shutdown callback: got %q, want %q", a, proto.ActionReboot)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("shutdown callback not called")
	}

	plain := newAgent(t, server.Config{})
	if err := plain.Shutdown(ctxT(t), proto.ActionPoweroff); !errors.Is(err, proto.ErrUnsupported) {
		t.Errorf("Shutdown without callback: got %v, want unsupported", err)
	}
	if _, err := plain.SetAuthorizedKeys(ctxT(t), []string{"x"}); !errors.Is(err, proto.ErrUnsupported) {
		t.Errorf("SetAuthorizedKeys without SSH: got %v, want unsupported", err)
	}
}

func TestManyConcurrentCalls(t *testing.T) {
	c := newAgent(t, server.Config{})
	errs := make(chan error, 32)
	for i := 0; i < cap(errs); i++ {
		go func() {
			var out syncBuffer
			st, err := c.Exec(ctxT(t), execEcho(i, &out))
			if err == nil && (st.Code != 0 || out.String() != itoa(i)+"\n") {
				err = errors.New("exec " + itoa(i) + ": got output " + out.String())
			}
			errs <- err
		}()
	}
	for i := 0; i < cap(errs); i++ {
		if err := <-errs; err != nil {
			t.Error(err)
		}
	}
}
