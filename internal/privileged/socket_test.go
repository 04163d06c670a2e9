package privileged

import (
	"context"
	"errors"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestSocketModeAndOwner(t *testing.T) {
	h := newHarness(t)
	fi, err := os.Lstat(h.lay.HelperSocket())
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Type() != fs.ModeSocket {
		t.Fatalf("got file type %v, want a socket", fi.Mode().Type())
	}
	if got := fi.Mode().Perm(); got != 0o600 {
		t.Errorf("got mode %o, want 600", got)
	}
	if u, g := ownerOf(t, h.lay.HelperSocket()); u != h.ownerUID || g != h.ownerGID {
		t.Errorf("got owner %d:%d, want %d:%d", u, g, h.ownerUID, h.ownerGID)
	}
	// Nothing but the socket is left in the socket directory (the temporary name is
	// gone), and nothing at all in the owner's run directory.
	entries, err := os.ReadDir(h.lay.HelperSocketDir())
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) != 1 || entries[0].Name() != filepath.Base(h.lay.HelperSocket()) {
		var names []string
		for _, e := range entries {
			names = append(names, e.Name())
		}
		t.Errorf("socket dir holds %v, want only the socket", names)
	}
	if entries, err := os.ReadDir(h.lay.RunDir); err == nil && len(entries) != 0 {
		t.Errorf("the helper left %d entries in the owner's run directory", len(entries))
	}
}

// TestSocketDirIsRoots: the socket's directory is made root's (ours), 0755, so the
// owner can pass through it but change nothing in it; one that is not ours, or that
// others can write, is refused before anything is bound, chmod-ed or chowned.
func TestSocketDirIsRoots(t *testing.T) {
	h := newHarness(t)
	if u, _ := ownerOf(t, h.lay.HelperSocketDir()); u != os.Geteuid() {
		t.Errorf("socket dir owner %d, want us (%d)", u, os.Geteuid())
	}
	if fi, err := os.Stat(h.lay.HelperSocketDir()); err != nil || fi.Mode().Perm() != 0o755 {
		t.Errorf("socket dir: %v, %v; want mode 0755", fi, err)
	}
	if os.Getuid() != 0 {
		t.Skip("giving the directory to another uid needs root")
	}
	for _, tc := range []struct {
		name  string
		spoil func(dir string) error
	}{
		{"owned by another uid", func(dir string) error { return os.Chown(dir, 4242, 4242) }},
		{"writable by others", func(dir string) error { return os.Chmod(dir, 0o777) }},
		{"a symlink", func(dir string) error {
			if err := os.Rename(dir, dir+".real"); err != nil {
				return err
			}
			return os.Symlink(dir+".real", dir)
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			lay, err := layoutNew(t)
			if err != nil {
				t.Fatal(err)
			}
			if err := os.MkdirAll(lay.HelperSocketDir(), 0o755); err != nil {
				t.Fatal(err)
			}
			if err := tc.spoil(lay.HelperSocketDir()); err != nil {
				t.Fatal(err)
			}
			before, _ := os.Lstat(lay.HelperSocketDir())
			h := &harness{lay: lay, net: &recordingNet{}, audit: &syncBuffer{}, ownerUID: os.Getuid(), ownerGID: testOwnerGID()}
			srv, err := NewServer(h.serverConfig())
			if err != nil {
				t.Fatal(err)
			}
			if err := srv.ListenAndServe(context.Background()); err == nil || !strings.Contains(err.Error(), "helper socket directory") {
				t.Fatalf("got %v, want a refusal naming the socket directory", err)
			}
			after, _ := os.Lstat(lay.HelperSocketDir())
			if before.Mode() != after.Mode() || !os.SameFile(before, after) {
				t.Errorf("the refused directory changed: %v → %v", before.Mode(), after.Mode())
			}
			if _, err := os.Lstat(filepath.Join(lay.HelperSocketDir(), "helper.sock")); !errors.Is(err, fs.ErrNotExist) {
				t.Errorf("a socket was made in the refused directory: %v", err)
			}
		})
	}
}

func TestLiveSocketIsNotReplaced(t *testing.T) {
	h := newHarness(t)
	before, err := os.Lstat(h.lay.HelperSocket())
	if err != nil {
		t.Fatal(err)
	}
	second, err := NewServer(h.serverConfig())
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	err = second.ListenAndServe(ctx)
	if err == nil || !strings.Contains(err.Error(), "already serving") {
		t.Fatalf("got %v, want a refusal saying another helper is serving", err)
	}
	after, err := os.Lstat(h.lay.HelperSocket())
	if err != nil {
		t.Fatalf("socket gone after the refused start: %v", err)
	}
	if !os.SameFile(before, after) {
		t.Errorf("the live socket was replaced")
	}
	if _, err := h.client.Status(context.Background()); err != nil {
		t.Errorf("first helper stopped answering: %v", err)
	}
}

func TestStaleSocketIsReplaced(t *testing.T) {
	h := &harness{net: &recordingNet{}, audit: &syncBuffer{}, ownerUID: os.Getuid(), ownerGID: testOwnerGID()}
	lay, err := layoutNew(t)
	if err != nil {
		t.Fatal(err)
	}
	h.lay = lay
	if err := os.MkdirAll(lay.HelperSocketDir(), 0o755); err != nil {
		t.Fatal(err)
	}
	// A socket nothing listens on any more, as a killed helper leaves it.
	l, err := net.ListenUnix("unix", &net.UnixAddr{Name: lay.HelperSocket(), Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	l.SetUnlinkOnClose(false)
	l.Close()
	if _, err := net.Dial("unix", lay.HelperSocket()); err == nil {
		t.Fatal("stale socket still answers; test setup is wrong")
	}
	startServer(t, h.serverConfig())
	if _, err := NewClient(lay.HelperSocket()).Status(context.Background()); err != nil {
		t.Errorf("got %v, want the new helper to answer on the replaced socket", err)
	}
}

func TestNonSocketAtPathIsRefused(t *testing.T) {
	lay, err := layoutNew(t)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(lay.HelperSocketDir(), 0o755); err != nil {
		t.Fatal(err)
	}
	mustWrite(t, lay.HelperSocket())
	h := &harness{lay: lay, net: &recordingNet{}, audit: &syncBuffer{}, ownerUID: os.Getuid(), ownerGID: testOwnerGID()}
	srv, err := NewServer(h.serverConfig())
	if err != nil {
		t.Fatal(err)
	}
	err = srv.ListenAndServe(context.Background())
	if err == nil || !strings.Contains(err.Error(), "not a socket") {
		t.Fatalf("got %v, want a refusal naming the non-socket", err)
	}
	if data, err := os.ReadFile(lay.HelperSocket()); err != nil || string(data) != "x" {
		t.Errorf("the file at the socket path was touched: %q, %v", data, err)
	}
}

// TestShutdownRemovesSocket runs ListenAndServe until its context ends.
func TestShutdownRemovesSocket(t *testing.T) {
	lay, err := layoutNew(t)
	if err != nil {
		t.Fatal(err)
	}
	h := &harness{lay: lay, net: &recordingNet{}, audit: &syncBuffer{}, ownerUID: os.Getuid(), ownerGID: testOwnerGID()}
	srv, err := NewServer(h.serverConfig())
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.ListenAndServe(ctx) }()
	c := NewClient(lay.HelperSocket())
	deadline := time.Now().Add(10 * time.Second)
	for {
		_, err := c.Status(context.Background())
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("helper never answered: %v", err)
		}
		select {
		case err := <-done:
			t.Fatalf("ListenAndServe returned early: %v", err)
		case <-time.After(10 * time.Millisecond):
		}
	}
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("ListenAndServe: %v", err)
		}
	case <-time.After(15 * time.Second):
		t.Fatal("ListenAndServe did not return after its context ended")
	}
	if _, err := os.Lstat(lay.HelperSocket()); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("socket still there after shutdown: %v", err)
	}
}
