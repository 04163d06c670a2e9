package privileged

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"banger/internal/layout"
)

// childEnv selects the child mode of the test binary: when set to a socket path, the
// binary calls Status on it and prints a childResult instead of running tests. The
// peer-credential test re-executes itself this way as another user.
const childEnv = "BANGER_PRIVILEGED_TEST_CHILD_SOCKET"

// otherUserName is the throwaway system user the peer test creates and deletes.
const otherUserName = "banger-t-other"

func TestMain(m *testing.M) {
	if sock := os.Getenv(childEnv); sock != "" {
		os.Exit(childMain(sock, os.Stdout))
	}
	os.Exit(m.Run())
}

// childResult is what the child process reports.
type childResult struct {
	UID     int    `json:"uid"`
	OK      bool   `json:"ok"`
	Code    string `json:"code,omitempty"`
	Message string `json:"message,omitempty"`
	Err     string `json:"err,omitempty"`
	Owner   int    `json:"owner"`
}

func childMain(sock string, out io.Writer) int {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	res := childResult{UID: os.Getuid(), Owner: -1}
	st, err := NewClient(sock).Status(ctx)
	var we *Error
	switch {
	case err == nil:
		res.OK, res.Owner = true, st.OwnerUID
	case errors.As(err, &we):
		res.Code, res.Message = we.Code, we.Message
	default:
		res.Err = err.Error()
	}
	if err := json.NewEncoder(out).Encode(res); err != nil {
		return 2
	}
	return 0
}

// otherUser creates a system user for the test and deletes it at cleanup.
func otherUser(t *testing.T) (uid, gid int) {
	t.Helper()
	if os.Getuid() != 0 {
		t.Skip("creating a second user for the peer-credential test needs root")
	}
	if _, err := exec.LookPath("useradd"); err != nil {
		t.Skip("useradd not installed (package passwd)")
	}
	if _, err := user.Lookup(otherUserName); err == nil {
		// Left by a crashed earlier run.
		if out, err := exec.Command("userdel", otherUserName).CombinedOutput(); err != nil {
			t.Fatalf("userdel leftover %s: %v: %s", otherUserName, err, out)
		}
	}
	if out, err := exec.Command("useradd", "-r", "-M", "-U", "-s", "/usr/sbin/nologin", otherUserName).CombinedOutput(); err != nil {
		t.Fatalf("useradd %s: %v: %s", otherUserName, err, out)
	}
	t.Cleanup(func() {
		if out, err := exec.Command("userdel", otherUserName).CombinedOutput(); err != nil {
			t.Errorf("userdel %s: %v: %s", otherUserName, err, out)
		}
	})
	u, err := user.Lookup(otherUserName)
	if err != nil {
		t.Fatal(err)
	}
	uid, _ = strconv.Atoi(u.Uid)
	gid, _ = strconv.Atoi(u.Gid)
	return uid, gid
}

// traversableDir returns a fresh directory every user can traverse (the test binary's
// own temporary directories are 0700).
func traversableDir(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	for _, d := range []string{filepath.Dir(dir), dir} {
		if err := os.Chmod(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

// copyTestBinary copies this test binary where another user can execute it.
func copyTestBinary(t *testing.T, dir string) string {
	t.Helper()
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(self)
	if err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(dir, "privileged.test")
	if err := os.WriteFile(bin, data, 0o755); err != nil {
		t.Fatal(err)
	}
	return bin
}

// runChildAs runs the child mode of bin as uid:gid against sock.
func runChildAs(t *testing.T, bin, sock string, uid, gid int) childResult {
	t.Helper()
	cmd := exec.Command(bin)
	cmd.Env = []string{childEnv + "=" + sock, "PATH=/usr/bin:/bin"}
	cmd.Dir = "/"
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid), NoSetGroups: true}}
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("child as uid %d: %v: %s", uid, err, stderr.String())
	}
	var res childResult
	if err := json.Unmarshal(out, &res); err != nil {
		t.Fatalf("child output %q: %v", out, err)
	}
	if res.UID != uid {
		t.Fatalf("child ran as uid %d, want %d", res.UID, uid)
	}
	return res
}

// peerHarness is a server in a root every user can traverse, so that only the socket's
// own mode and the peer check decide who gets in.
func peerHarness(t *testing.T, ownerUID, ownerGID int) *harness {
	t.Helper()
	lay, err := layout.New(traversableDir(t))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(lay.RunDir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(lay.RunDir, 0o755); err != nil {
		t.Fatal(err)
	}
	h := &harness{lay: lay, net: &recordingNet{}, audit: &syncBuffer{}, ownerUID: ownerUID, ownerGID: ownerGID}
	h.srv = startServer(t, h.serverConfig())
	h.client = NewClient(lay.HelperSocket())
	return h
}

// TestPeerCredentials proves, with a real second user, that the socket mode keeps
// other users out, and that SO_PEERCRED refuses them even when the mode would not.
func TestPeerCredentials(t *testing.T) {
	otherUID, otherGID := otherUser(t)
	bin := copyTestBinary(t, traversableDir(t))

	// The socket's own mode (0600, owned by the owner) keeps another user out before
	// the helper even sees a connection.
	t.Run("mode 0600", func(t *testing.T) {
		h := peerHarness(t, os.Getuid(), os.Getgid())
		res := runChildAs(t, bin, h.lay.HelperSocket(), otherUID, otherGID)
		if res.OK || res.Code != "" || !strings.Contains(res.Err, "permission denied") {
			t.Fatalf("got %+v, want a connect error with permission denied", res)
		}
		if lines := h.audit.Lines(t); len(lines) != 0 {
			t.Errorf("a connection refused by the kernel left %d audit lines, want 0", len(lines))
		}
	})

	// With the mode opened up, the kernel's record of the caller (SO_PEERCRED) is what
	// refuses another user.
	t.Run("peercred refuses", func(t *testing.T) {
		h := peerHarness(t, os.Getuid(), os.Getgid())
		if err := os.Chmod(h.lay.HelperSocket(), 0o666); err != nil {
			t.Fatal(err)
		}
		res := runChildAs(t, bin, h.lay.HelperSocket(), otherUID, otherGID)
		if res.OK || res.Code != CodeForbidden {
			t.Fatalf("got %+v, want code %q", res, CodeForbidden)
		}
		mustContain(t, res.Message, fmt.Sprintf("uid %d may not", otherUID), fmt.Sprintf("uid %d, may", os.Getuid()), "--owner")
		if calls := h.net.Calls(); len(calls) != 0 {
			t.Errorf("a forbidden call reached NetOps: %s", fmtCalls(calls))
		}
		lines := h.audit.Lines(t)
		if len(lines) != 1 {
			t.Fatalf("got %d audit lines, want 1", len(lines))
		}
		if l := lines[0]; l["peer_uid"] != float64(otherUID) || l["result"] != CodeForbidden || l["op"] != OpStatus {
			t.Errorf("audit line %v, want peer_uid %d, op Status, result forbidden", l, otherUID)
		}
	})

	// A helper owned by that user answers it, and refuses root, which is not its owner.
	t.Run("owner only", func(t *testing.T) {
		h := peerHarness(t, otherUID, otherGID)
		if u, _ := ownerOf(t, h.lay.HelperSocket()); u != otherUID {
			t.Fatalf("socket owned by uid %d, want the owner %d", u, otherUID)
		}
		res := runChildAs(t, bin, h.lay.HelperSocket(), otherUID, otherGID)
		if !res.OK || res.Owner != otherUID {
			t.Fatalf("got %+v, want the owner's Status to succeed", res)
		}
		_, err := h.client.Status(context.Background())
		we := wantCode(t, err, CodeForbidden)
		mustContain(t, we.Message, "uid 0 may not")
		lines := h.audit.Lines(t)
		if len(lines) != 2 || lines[0]["peer_uid"] != float64(otherUID) || lines[0]["result"] != "ok" ||
			lines[1]["peer_uid"] != float64(0) || lines[1]["result"] != CodeForbidden {
			t.Errorf("audit lines %v, want the owner's ok then root's forbidden", lines)
		}
	})
}
