package server_test

import (
	"bytes"
	"context"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	"banger/internal/agent/client"
	"banger/internal/agent/server"
)

// testLogger sends the agent's logs to the test log, so failures show them.
func testLogger(t *testing.T) *slog.Logger {
	t.Helper()
	return slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(string(bytes.TrimRight(p, "\n")))
	return len(p), nil
}

// startServer serves cfg on a unix socket in a temporary directory and returns
// the socket's path. Everything stops when the test ends.
func startServer(t *testing.T, cfg server.Config) string {
	t.Helper()
	if cfg.Logger == nil {
		cfg.Logger = testLogger(t)
	}
	if cfg.Version == "" {
		cfg.Version = "test-1.0"
	}
	sock := filepath.Join(t.TempDir(), "agent.sock")
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatalf("listen: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- server.New(cfg).Serve(ctx, ln) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Serve: %v", err)
		}
	})
	return sock
}

// dial connects a client to the agent at sock.
func dial(t *testing.T, sock string) *client.Client {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	conn, err := net.Dial("unix", sock)
	if err != nil {
		t.Fatalf("dial %s: %v", sock, err)
	}
	c, err := client.Dial(ctx, conn, client.Options{})
	if err != nil {
		t.Fatalf("client.Dial: %v", err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// newAgent is startServer plus dial.
func newAgent(t *testing.T, cfg server.Config) *client.Client {
	t.Helper()
	return dial(t, startServer(t, cfg))
}

func ctxT(t *testing.T) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// mustHealthy fails the test unless the agent still answers: used after every bad
// input to prove the agent keeps serving.
func mustHealthy(t *testing.T, c *client.Client) {
	t.Helper()
	if _, err := c.Health(ctxT(t)); err != nil {
		t.Fatalf("agent stopped serving: health: %v", err)
	}
}

func requireRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root (chown, other users); CI runs as root")
	}
}
