package main

import (
	"bufio"
	"context"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"banger/internal/agent/agenttest"
	"banger/internal/agent/client"
)

// BenchmarkAgent reports what the issue asks to watch: the shipped binary's size
// (stripped, static), the idle resident memory of the agent service with the
// control API and SSH up, and the round trip of a trivial exec and of a health
// call over the control channel (a unix socket here; vsock or virtio-serial in a
// guest add their own latency).
//
//	go test -run '^$' -bench Agent -benchtime 200x ./cmd/banger-agent
func BenchmarkAgent(b *testing.B) {
	dir := b.TempDir()
	stripped := filepath.Join(dir, "banger-agent")
	build := exec.Command("go", "build", "-trimpath", "-ldflags=-s -w", "-o", stripped, ".")
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		b.Fatalf("build: %v: %s", err, out)
	}
	st, err := os.Stat(stripped)
	if err != nil {
		b.Fatal(err)
	}

	hostKey := filepath.Join(dir, "host_key")
	key, err := agenttest.NewKey("host")
	if err != nil {
		b.Fatal(err)
	}
	if err := key.WritePrivate(hostKey); err != nil {
		b.Fatal(err)
	}
	sock := filepath.Join(dir, "agent.sock")
	cmd := exec.Command(stripped, "service", "-control-unix", sock, "-control-serial", "", "-control-vsock", "0",
		"-ssh-listen", "127.0.0.1:0", "-ssh-host-key", hostKey, "-authorized-keys", filepath.Join(dir, "ak"), "-log-level", "error")
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	defer func() { _ = cmd.Process.Kill(); _ = cmd.Wait() }()

	c := dialUnixB(b, sock)
	defer c.Close()
	ctx := context.Background()
	if _, err := c.Health(ctx); err != nil {
		b.Fatal(err)
	}
	time.Sleep(time.Second) // let start-up garbage be collected and the agent go idle
	rss, err := vmRSS(cmd.Process.Pid)
	if err != nil {
		b.Fatal(err)
	}

	b.Run("exec-true", func(b *testing.B) {
		for b.Loop() {
			if st, err := c.Exec(ctx, client.ExecRequest{Argv: []string{"true"}}); err != nil || st.Code != 0 {
				b.Fatalf("exec: %+v %v", st, err)
			}
		}
		b.ReportMetric(float64(st.Size()), "binary-bytes")
		b.ReportMetric(float64(rss), "idle-rss-kB")
	})
	b.Run("health", func(b *testing.B) {
		for b.Loop() {
			if _, err := c.Health(ctx); err != nil {
				b.Fatal(err)
			}
		}
	})

	// the same over a pty standing in for a virtio-serial port
	relay, err := agenttest.NewSerialRelay()
	if err != nil {
		b.Fatal(err)
	}
	defer relay.Close()
	serial := exec.Command(stripped, "service", "-control-serial", relay.SlavePath, "-control-vsock", "0", "-ssh-listen", "", "-log-level", "error")
	if err := serial.Start(); err != nil {
		b.Fatal(err)
	}
	defer func() { _ = serial.Process.Kill(); _ = serial.Wait() }()
	conn, err := relay.Dial()
	if err != nil {
		b.Fatal(err)
	}
	dctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	sc, err := client.Dial(dctx, conn, client.Options{})
	if err != nil {
		b.Fatal(err)
	}
	defer sc.Close()
	b.Run("exec-true-serial", func(b *testing.B) {
		for b.Loop() {
			if st, err := sc.Exec(ctx, client.ExecRequest{Argv: []string{"true"}}); err != nil || st.Code != 0 {
				b.Fatalf("exec: %+v %v", st, err)
			}
		}
	})
	b.Run("health-serial", func(b *testing.B) {
		for b.Loop() {
			if _, err := sc.Health(ctx); err != nil {
				b.Fatal(err)
			}
		}
	})
}

func dialUnixB(b *testing.B, sock string) *client.Client {
	b.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for {
		c, err := dialOnce(sock)
		if err == nil {
			return c
		}
		if time.Now().After(deadline) {
			b.Fatalf("agent at %s: %v", sock, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func dialOnce(sock string) (*client.Client, error) {
	conn, err := net.Dial("unix", sock)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	return client.Dial(ctx, conn, client.Options{})
}

// vmRSS reads a process's resident set size in kB from /proc.
func vmRSS(pid int) (int, error) {
	f, err := os.Open("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		return 0, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "VmRSS:"); ok {
			return strconv.Atoi(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")))
		}
	}
	return 0, sc.Err()
}
