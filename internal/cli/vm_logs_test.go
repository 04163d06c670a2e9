package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"net"
	"net/http"
	"os"
	"strings"
	"testing"

	"banger/internal/api"
	"banger/internal/layout"
)

// evilConsole is what a hostile guest writes to its console: a colour, a window
// title, a clipboard write (OSC 52), a C1 CSI, a line that overwrites itself, and
// bytes that are not UTF-8.
const evilConsole = "boot ok\r\n\x1b[31mred\x1b[0m \x1b]0;pwned\x07\x1b]52;c;ZXZpbA==\x07 \u009b2J rm -rf ~\rok\xff\n"

// serveLogs answers GET <vm>/logs on the daemon socket of a fresh root with body.
func serveLogs(t *testing.T, body string) string {
	t.Helper()
	root := t.TempDir()
	l, err := layout.New(root)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(l.RunDir, 0o700); err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("unix", l.DaemonSocket())
	if err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET "+api.PathVM+"{ref}/logs", func(w http.ResponseWriter, r *http.Request) {
		_, _ = w.Write([]byte(body))
	})
	srv := &http.Server{Handler: mux}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { _ = srv.Shutdown(context.Background()) })
	return root
}

func runCLI(t *testing.T, args ...string) string {
	t.Helper()
	var out, errOut bytes.Buffer
	root := NewRoot(&Env{Out: &out, Err: &errOut})
	root.SetArgs(args)
	if err := root.ExecuteContext(context.Background()); err != nil {
		t.Fatalf("banger %s: %v\n%s", strings.Join(args, " "), err, errOut.String())
	}
	return out.String()
}

// TestAttackVMLogsEscapes is finding 8's terminal half: `vm logs` shows a guest's
// escape sequences as text, and --raw passes them through.
func TestAttackVMLogsEscapes(t *testing.T) {
	root := serveLogs(t, evilConsole)
	safe := runCLI(t, "--root", root, "vm", "logs", "dev")
	for _, bad := range []string{"\x1b", "\x07", "\r", "\u009b", "\xff"} {
		if strings.Contains(safe, bad) {
			t.Errorf("vm logs passed %q to the terminal:\n%q", bad, safe)
		}
	}
	want := "boot ok\n^[[31mred^[[0m ^[]0;pwned^G^[]52;c;ZXZpbA==^G M-^[2J rm -rf ~^Mok\uFFFD\n"
	if safe != want {
		t.Errorf("vm logs:\n got %q\nwant %q", safe, want)
	}
	if raw := runCLI(t, "--root", root, "vm", "logs", "--raw", "dev"); raw != evilConsole {
		t.Errorf("vm logs --raw:\n got %q\nwant the bytes as written %q", raw, evilConsole)
	}
}

// TestAttackErrorEscapes: an error from bangerd can carry a guest's text (a start
// error ends with its console); the CLI prints it neutralised.
func TestAttackErrorEscapes(t *testing.T) {
	root := t.TempDir()
	l, err := layout.New(root)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(l.RunDir, 0o700); err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("unix", l.DaemonSocket())
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusInternalServerError)
		_ = json.NewEncoder(w).Encode(api.Error{Code: "internal", Message: "vm \"dev\": start failed\nlast console lines:\n  \x1b]52;c;ZXZpbA==\x07\x1b[2J\u009b0m"})
	})}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { _ = srv.Shutdown(context.Background()) })

	var out, errOut bytes.Buffer
	if code := Execute(context.Background(), []string{"--root", root, "vm", "logs", "dev"}, &out, &errOut); code == 0 {
		t.Fatal("vm logs succeeded against a failing daemon")
	}
	got := errOut.String()
	for _, bad := range []string{"\x1b", "\x07", "\u009b"} {
		if strings.Contains(got, bad) {
			t.Errorf("the error printed %q raw: %q", bad, got)
		}
	}
	if !strings.Contains(got, "^[]52;c;ZXZpbA==^G^[[2JM-^[0m") {
		t.Errorf("the error lost the guest's text: %q", got)
	}
}
