package cli

import (
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

// TestAttackSystemStatusEscapes: bangerd is the owner's, and `banger system status`
// is often run by root. Every string the daemon reports reaches root's terminal
// neutralised: an owner who controls bangerd cannot retitle, clear or write the
// clipboard of root's terminal.
func TestAttackSystemStatusEscapes(t *testing.T) {
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
	evil := "x\x1b]0;pwned\x07\x1b]52;c;ZXZpbA==\x07\u009b2J\x1b[2J"
	st := api.StatusResponse{Version: evil, Root: evil}
	st.Helper = api.HelperStatus{Reachable: false, Error: evil}
	st.Network = api.NetworkStatus{Bridge: evil, Address: evil, NFTName: evil, TapPool: api.TapPool{IdleTaps: []string{evil}}}
	st.DNS = api.DNSStatus{Domain: evil, Listen: evil, ResolverRouting: evil, Hint: evil}
	mux := http.NewServeMux()
	mux.HandleFunc("GET "+api.PathStatus, func(w http.ResponseWriter, r *http.Request) {
		_ = json.NewEncoder(w).Encode(st)
	})
	srv := &http.Server{Handler: mux}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { _ = srv.Shutdown(context.Background()) })

	out := runCLI(t, "--root", root, "system", "status")
	if strings.ContainsAny(out, "\x1b\x07\u009b") {
		t.Errorf("an escape sequence from bangerd reached the terminal: %q", out)
	}
	if got := strings.Count(out, "^[]0;pwned"); got < 8 {
		t.Errorf("the neutralised text shows %d times, want every field (8+): %q", got, out)
	}
}
