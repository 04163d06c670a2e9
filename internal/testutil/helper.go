package testutil

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"banger/internal/layout"
	"banger/internal/privileged"
)

// StartHelper runs the real banger-helper as root inside a fresh network namespace,
// serving the banger root at root (whose config.toml it reads) for the caller's uid,
// and returns a client for it. The helper and the namespace go when the test ends.
func StartHelper(t testing.TB, root string) *privileged.Client {
	t.Helper()
	ns := NetNS(t)
	bin := Binary(t, "banger-helper")
	cmd := exec.Command("ip", "netns", "exec", ns, bin, "--root", root,
		"--owner-uid", strconv.Itoa(os.Getuid()), "--owner-gid", strconv.Itoa(os.Getgid()))
	logPath := filepath.Join(root, "helper-test.log")
	logf, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Signal(os.Interrupt)
		_ = cmd.Wait()
		logf.Close()
	})
	lay, err := layout.New(root)
	if err != nil {
		t.Fatal(err)
	}
	cl := privileged.NewClient(lay.HelperSocket())
	deadline := time.Now().Add(20 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		_, err := cl.Status(ctx)
		cancel()
		if err == nil {
			return cl
		}
		if time.Now().After(deadline) {
			out, _ := os.ReadFile(logPath)
			t.Fatalf("banger-helper not ready: %v\n%s", err, out)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
