package privileged

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"banger/internal/layout"
)

// testPrefix is the configured bridge address in unit tests; nothing is created on it.
var testPrefix = netip.MustParsePrefix("172.30.99.1/24")

const (
	testBridge = "bgtest0"
	testMTU    = 1400
	// testGuestMAC is a valid guest MAC for EnsureNAT requests.
	testGuestMAC = "02:00:00:00:00:02"
)

// netCall is one call that reached the NetOps or ResolverOps fake.
type netCall struct {
	Op   string
	Args []any
}

// recordingNet is a NetOps and ResolverOps that records every call. Its one purpose is
// to prove what did and did not reach the kernel layer: hostile input must leave it
// empty, valid input must arrive exactly as the server was configured (owner uid, gid,
// MTU). The real kernel behaviour is proven by the integration test with linuxnet.
type recordingNet struct {
	mu     sync.Mutex // guards all following fields
	calls  []netCall
	fail   map[string]error // op name -> error to return
	taps   []TapInfo
	status NetStatus
}

func (r *recordingNet) record(op string, args ...any) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.calls = append(r.calls, netCall{Op: op, Args: args})
	return r.fail[op]
}

func (r *recordingNet) Calls() []netCall {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]netCall(nil), r.calls...)
}

func (r *recordingNet) Reset() {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.calls = nil
}

func (r *recordingNet) EnsureBridge(_ context.Context, name string, addr netip.Prefix, mtu int) (bool, error) {
	return true, r.record("EnsureBridge", name, addr, mtu)
}

func (r *recordingNet) EnsureBaseRules(_ context.Context, bridge string, addr netip.Prefix, dnsPort uint16) error {
	return r.record("EnsureBaseRules", bridge, addr, dnsPort)
}

func (r *recordingNet) SetIPForward(enable bool) error { return r.record("SetIPForward", enable) }

func (r *recordingNet) CreateTap(_ context.Context, name, bridge string, mtu, uid, gid int) error {
	return r.record("CreateTap", name, bridge, mtu, uid, gid)
}

func (r *recordingNet) DeleteTap(_ context.Context, scope TapScope, name string) error {
	return r.record("DeleteTap", scope, name)
}

func (r *recordingNet) ListTaps(_ context.Context, scope TapScope) ([]TapInfo, error) {
	err := r.record("ListTaps", scope)
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]TapInfo(nil), r.taps...), err
}

// EnsureNAT records the MAC as a string, so expectations can compare it with ==.
func (r *recordingNet) EnsureNAT(_ context.Context, scope TapScope, g GuestNAT, enable bool) error {
	return r.record("EnsureNAT", scope, g.Guest, g.MAC.String(), g.Tap, enable)
}

func (r *recordingNet) RemoveNetwork(_ context.Context, scope TapScope) error {
	return r.record("RemoveNetwork", scope)
}

func (r *recordingNet) Status(_ context.Context, bridge string, addr netip.Prefix) (NetStatus, error) {
	err := r.record("Status", bridge, addr)
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.status, err
}

func (r *recordingNet) Route(_ context.Context, bridge, domain string, dns netip.AddrPort, enable bool) (bool, string, error) {
	return true, "", r.record("Route", bridge, domain, dns, enable)
}

// syncBuffer is a goroutine-safe audit sink.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

// Lines parses every audit line, failing the test on a line that is not one JSON object.
func (b *syncBuffer) Lines(t *testing.T) []map[string]any {
	t.Helper()
	b.mu.Lock()
	data := append([]byte(nil), b.buf.Bytes()...)
	b.mu.Unlock()
	var out []map[string]any
	sc := bufio.NewScanner(bytes.NewReader(data))
	for sc.Scan() {
		var m map[string]any
		if err := json.Unmarshal(sc.Bytes(), &m); err != nil {
			t.Fatalf("audit line %q is not a JSON object: %v", sc.Text(), err)
		}
		out = append(out, m)
	}
	return out
}

// harness is a real Server on a real unix socket in a temporary root, with the
// recording fake behind it and this process as its owner.
type harness struct {
	lay      layout.Layout
	net      *recordingNet
	block    *recordingBlock
	audit    *syncBuffer
	srv      *Server
	client   *Client
	ownerUID int
	ownerGID int
	devices  devPaths // where DMCreate's chown looks; zero: the real /dev
}

// testOwnerGID is a gid different from ours when we may chown, so tests can tell the
// configured owner gid from an accident.
func testOwnerGID() int {
	if os.Getuid() == 0 {
		return 4242
	}
	return os.Getgid()
}

func newHarness(t *testing.T) *harness {
	t.Helper()
	return newHarnessDevices(t, devPaths{})
}

// newHarnessDevices is newHarness with DMCreate's chown pointed at a test tree.
func newHarnessDevices(t *testing.T, devices devPaths) *harness {
	t.Helper()
	lay, err := layout.New(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	h := &harness{lay: lay, net: &recordingNet{}, block: newRecordingBlock(), audit: &syncBuffer{}, ownerUID: os.Getuid(), ownerGID: testOwnerGID(), devices: devices}
	h.srv = startServer(t, h.serverConfig())
	h.client = NewClient(lay.HelperSocket())
	return h
}

// scope is the TapScope the server must hand the net ops: its own bridge and owner.
func (h *harness) scope() TapScope { return TapScope{Bridge: testBridge, OwnerUID: h.ownerUID} }

func (h *harness) serverConfig() ServerConfig {
	return ServerConfig{
		Layout:       h.lay,
		OwnerUID:     h.ownerUID,
		OwnerGID:     h.ownerGID,
		Bridge:       testBridge,
		BridgePrefix: testPrefix,
		MTU:          testMTU,
		Net:          h.net,
		Resolver:     h.net,
		Block:        h.block,
		Audit:        NewAuditLogger(h.audit),
		devices:      h.devices,
	}
}

// startServer listens synchronously (so the socket exists when it returns), serves in
// the background and stops the server at cleanup, checking Serve's result.
func startServer(t *testing.T, cfg ServerConfig) *Server {
	t.Helper()
	srv, err := NewServer(cfg)
	if err != nil {
		t.Fatalf("NewServer: %v", err)
	}
	l, err := srv.listen()
	if err != nil {
		t.Fatalf("listen: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ctx, l) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("Serve: %v", err)
			}
		case <-time.After(15 * time.Second):
			t.Errorf("Serve did not return after its context ended")
		}
	})
	return srv
}

// rawPost sends an arbitrary request to the socket and returns the status and the
// decoded Error body (zero when the body is not an Error).
func rawRequest(t *testing.T, socket, method, path string, body []byte) (int, Error) {
	t.Helper()
	hc := &http.Client{Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", socket)
		},
	}}
	defer hc.CloseIdleConnections()
	req, err := http.NewRequest(method, "http://banger-helper"+path, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	resp, err := hc.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	var e Error
	_ = json.NewDecoder(resp.Body).Decode(&e)
	return resp.StatusCode, e
}

// wantCode fails unless err is a *Error with the given code.
func wantCode(t *testing.T, err error, code string) *Error {
	t.Helper()
	var we *Error
	if !errors.As(err, &we) {
		t.Fatalf("got error %v (%T), want a *privileged.Error with code %q", err, err, code)
	}
	if we.Code != code {
		t.Fatalf("got code %q (%s), want %q", we.Code, we.Message, code)
	}
	return we
}

func mustContain(t *testing.T, s string, subs ...string) {
	t.Helper()
	for _, sub := range subs {
		if !strings.Contains(s, sub) {
			t.Errorf("%q does not contain %q", s, sub)
		}
	}
}

func fmtCalls(calls []netCall) string {
	var b strings.Builder
	for _, c := range calls {
		fmt.Fprintf(&b, "%s%v; ", c.Op, c.Args)
	}
	return b.String()
}

// layoutNew returns a layout under a fresh temporary root.
func layoutNew(t *testing.T) (layout.Layout, error) {
	t.Helper()
	return layout.New(t.TempDir())
}
