package main

import (
	"archive/tar"
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"banger/internal/agent/agenttest"
	"banger/internal/agent/client"
	"banger/internal/agent/proto"
)

func requireRootAndSSH(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("logs in over SSH as root; run as root (CI does)")
	}
	if _, err := exec.LookPath("ssh"); err != nil {
		t.Skip("needs the OpenSSH client: apt-get install openssh-client")
	}
}

// TestServiceOnUnixSocket drives the built agent over a unix socket: health, exec,
// a large copy both ways, authorized keys set over the control API and then used by
// the real ssh client, and reconnects.
func TestServiceOnUnixSocket(t *testing.T) {
	requireRootAndSSH(t)
	f := newSSHFixture(t)
	sock := filepath.Join(f.dir, "agent.sock")
	startAgent(t, append([]string{"service", "-control-unix", sock, "-control-serial", "", "-control-vsock", "0", "-log-level", "debug"}, f.args()...)...)
	c := dialUnix(t, sock)

	h, err := c.Health(ctxT(t))
	if err != nil || h.Version == "" || h.PID1 {
		t.Fatalf("health: got %+v, %v; want a version, not PID 1", h, err)
	}
	var out, errb bytes.Buffer
	st, err := c.Exec(ctxT(t), client.ExecRequest{Argv: []string{"sh", "-c", "echo $HOME; echo e >&2; exit 5"}, User: "root", Stdout: &out, Stderr: &errb})
	if err != nil || st.Code != 5 || out.String() != f.home+"\n" || errb.String() != "e\n" {
		t.Errorf("exec: got %+v %q %q %v; want exit 5, home, e", st, out.String(), errb.String(), err)
	}

	// 24 MB both ways
	data := make([]byte, 24<<20)
	if _, err := rand.Read(data); err != nil {
		t.Fatal(err)
	}
	var archive bytes.Buffer
	tw := tar.NewWriter(&archive)
	if err := tw.WriteHeader(&tar.Header{Name: "blob", Typeflag: tar.TypeReg, Mode: 0o644, Size: int64(len(data))}); err != nil {
		t.Fatal(err)
	}
	_, _ = tw.Write(data)
	_ = tw.Close()
	dest := filepath.Join(f.dir, "dest")
	if err := c.CopyTo(ctxT(t), dest, "", &archive); err != nil {
		t.Fatalf("CopyTo: %v", err)
	}
	var back bytes.Buffer
	if err := c.CopyFrom(ctxT(t), filepath.Join(dest, "blob"), &back); err != nil {
		t.Fatalf("CopyFrom: %v", err)
	}
	tr := tar.NewReader(&back)
	if hdr, err := tr.Next(); err != nil || hdr.Name != "blob" {
		t.Fatalf("returned archive: %v, %v", hdr, err)
	}
	sum := sha256.New()
	_, _ = io.Copy(sum, tr)
	if want := sha256.Sum256(data); !bytes.Equal(sum.Sum(nil), want[:]) {
		t.Error("round-tripped blob: sha256 differs")
	}

	// no keys yet: SSH refuses; after SetAuthorizedKeys it lets the key in
	if out, code := f.ssh(t, "true"); code != 255 || !strings.Contains(out, "Permission denied") {
		t.Errorf("ssh before keys were set: got exit %d %q, want refused", code, out)
	}
	if n, err := c.SetAuthorizedKeys(ctxT(t), []string{f.user.AuthorizedLine}); err != nil || n != 1 {
		t.Fatalf("SetAuthorizedKeys: %d, %v", n, err)
	}
	if out, code := f.ssh(t, "echo via-ssh; exit 3"); code != 3 || out != "via-ssh\n" {
		t.Errorf("ssh after keys were set: got exit %d %q", code, out)
	}
	if _, err := c.SetAuthorizedKeys(ctxT(t), []string{"garbage"}); !errors.Is(err, proto.ErrBadRequest) {
		t.Errorf("SetAuthorizedKeys(garbage): got %v, want bad request", err)
	}
	if _, code := f.ssh(t, "true"); code != 0 {
		t.Errorf("a refused key update locked the user out: exit %d", code)
	}

	// disconnect and reconnect, including with a command running
	if _, err := c.Start(ctxT(t), client.ExecRequest{Argv: []string{"sleep", "60"}}); err != nil {
		t.Fatal(err)
	}
	c.Close()
	for i := range 3 {
		c2 := dialUnix(t, sock)
		if _, err := c2.Health(ctxT(t)); err != nil {
			t.Fatalf("reconnect %d: health: %v", i, err)
		}
		c2.Close()
	}
}

// TestServiceOnSerialPty serves the control API on a pty slave as if it were a
// virtio-serial port, with successive host peers coming and going.
func TestServiceOnSerialPty(t *testing.T) {
	relay, err := agenttest.NewSerialRelay()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { relay.Close() })
	startAgent(t, "service", "-control-serial", relay.SlavePath, "-control-vsock", "0", "-ssh-listen", "", "-log-level", "debug")
	for i := range 3 {
		conn, err := relay.Dial()
		if err != nil {
			t.Fatal(err)
		}
		c, err := client.Dial(ctxT(t), conn, client.Options{})
		if err != nil {
			t.Fatalf("peer %d: Dial: %v", i, err)
		}
		var out bytes.Buffer
		data := bytes.Repeat([]byte("serial-line-data "), 64<<10) // 1 MB through the pty
		st, err := c.Exec(ctxT(t), client.ExecRequest{Argv: []string{"sha256sum"}, Stdin: bytes.NewReader(data), Stdout: &out})
		want := sha256.Sum256(data)
		if err != nil || st.Code != 0 || !strings.HasPrefix(out.String(), hex.EncodeToString(want[:])) {
			t.Fatalf("peer %d: sha256sum over serial: got %+v %q %v", i, st, out.String(), err)
		}
		if i == 1 {
			// leave a command running and vanish without a word
			if _, err := c.Start(ctxT(t), client.ExecRequest{Argv: []string{"sleep", "60"}}); err != nil {
				t.Fatal(err)
			}
		}
		c.Close()
	}
}
