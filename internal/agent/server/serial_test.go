package server_test

import (
	"context"
	"testing"
	"time"

	"banger/internal/agent/agenttest"
	"banger/internal/agent/client"
	"banger/internal/agent/server"
)

// TestSerialPortReconnect serves the agent on a pty slave standing in for a
// virtio-serial port, and connects host peers one after another the way QEMU's
// chardev socket would: each new peer finds the agent still in (or just out of) the
// previous session and must get a working session anyway.
func TestSerialPortReconnect(t *testing.T) {
	relay, err := agenttest.NewSerialRelay()
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- server.New(server.Config{Logger: testLogger(t), Version: "serial-1"}).ServeSerial(ctx, relay.SlavePath)
	}()
	t.Cleanup(func() {
		cancel()
		<-done
		relay.Close()
	})
	for i := range 4 {
		conn, err := relay.Dial()
		if err != nil {
			t.Fatal(err)
		}
		dctx, dcancel := context.WithTimeout(context.Background(), 20*time.Second)
		c, err := client.Dial(dctx, conn, client.Options{})
		dcancel()
		if err != nil {
			t.Fatalf("peer %d: Dial: %v", i, err)
		}
		var out syncBuffer
		st, err := c.Exec(ctxT(t), client.ExecRequest{Argv: []string{"echo", "peer", itoa(i)}, Stdout: &out})
		if err != nil || st.Code != 0 || out.String() != "peer "+itoa(i)+"\n" {
			t.Fatalf("peer %d: exec: got %+v %q %v", i, st, out.String(), err)
		}
		if i%2 == 0 {
			// an abrupt disconnect in the middle of a running command
			if _, err := c.Start(ctxT(t), client.ExecRequest{Argv: []string{"sleep", "30"}}); err != nil {
				t.Fatalf("peer %d: start: %v", i, err)
			}
		}
		c.Close()
	}
}
