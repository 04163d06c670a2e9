package consolelog_test

import (
	"bytes"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"
	"time"

	"banger/internal/consolelog"
	"banger/internal/testutil"
)

// TestStartOnFileRunsAsOwner is the jailed VM's console path: root (the helper)
// opened the owner's log by descriptor and starts the logger on it as the owner.
// A flood stays at the cap, and the halves the logger makes by path in the owner's
// directory are the owner's: it did that work with the owner's rights, not root's.
func TestStartOnFileRunsAsOwner(t *testing.T) {
	testutil.RequireRoot(t, "useradd")
	owner := testutil.User(t)
	uid, _ := strconv.Atoi(owner.Uid)
	gid, _ := strconv.Atoi(owner.Gid)

	dir := testutil.Root(t) // 0755 under /tmp: the owner can reach the binary copy
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	copyExe := filepath.Join(dir, "logger")
	data, err := os.ReadFile(exe)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(copyExe, data, 0o755); err != nil {
		t.Fatal(err)
	}
	old := *consolelog.SelfExe
	*consolelog.SelfExe = copyExe
	t.Cleanup(func() { *consolelog.SelfExe = old })

	logs := filepath.Join(dir, "logs")
	if err := os.Mkdir(logs, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.Chown(logs, uid, gid); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(logs, "vm.console.log")
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_APPEND|os.O_EXCL, 0o640)
	if err != nil {
		t.Fatal(err)
	}
	if err := f.Chown(uid, gid); err != nil {
		t.Fatal(err)
	}
	const max = 64 << 10
	w, err := consolelog.StartOnFile(f, path, max, &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid), Groups: []uint32{}})
	f.Close()
	if err != nil {
		t.Fatal(err)
	}
	chunk := bytes.Repeat([]byte("guest says hello\n"), 4096) // 68 KiB
	for range 16 {
		if _, err := w.Write(chunk); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := io.WriteString(w, "the newest line\n"); err != nil {
		t.Fatal(err)
	}
	w.Close()
	consolelog.Settle(path, 20*time.Second)

	if n := consolelog.Size(path); n == 0 || n > max {
		t.Errorf("log holds %d bytes after a 1 MiB flood, want 1..%d", n, max)
	}
	tail, err := consolelog.Tail(path, 64)
	if err != nil || !bytes.HasSuffix(tail, []byte("the newest line\n")) {
		t.Errorf("tail = %q, %v; want the newest bytes kept", tail, err)
	}
	for _, p := range []string{path, path + consolelog.PrevSuffix} {
		fi, err := os.Stat(p)
		if err != nil {
			t.Fatalf("%s: %v", p, err)
		}
		if st := fi.Sys().(*syscall.Stat_t); int(st.Uid) != uid {
			t.Errorf("%s is uid %d's, want the owner's (%d): the logger must work with the owner's rights", p, st.Uid, uid)
		}
	}
}
