package privileged

import (
	"bytes"
	"context"
	"errors"
	"net/http"
	"net/netip"
	"os"
	"strings"
	"testing"
	"time"

	"banger/internal/buildinfo"
	"banger/internal/layout"
)

// TestProtocolRefusals sends malformed calls over the socket; each gets its status and
// code, reaches nothing, and leaves exactly one audit line naming the caller.
func TestProtocolRefusals(t *testing.T) {
	h := newHarness(t)
	sock := h.lay.HelperSocket()
	tests := []struct {
		name       string
		method     string
		path       string
		body       string
		wantStatus int
		wantCode   string
		wantOp     string
	}{
		{"unknown op", "POST", "/v1/op/FormatDisk", `{}`, http.StatusNotFound, CodeUnknownOp, "FormatDisk"},
		{"op name case", "POST", "/v1/op/createtap", `{}`, http.StatusNotFound, CodeUnknownOp, "createtap"},
		{"no op", "POST", "/v1/op/", `{}`, http.StatusNotFound, CodeUnknownOp, ""},
		{"other path", "POST", "/debug/pprof", `{}`, http.StatusNotFound, CodeUnknownOp, "/debug/pprof"},
		{"bad JSON", "POST", "/v1/op/CreateTap", `{"name":`, http.StatusBadRequest, CodeInvalid, OpCreateTap},
		{"not an object", "POST", "/v1/op/CreateTap", `["tap-pool-1"]`, http.StatusBadRequest, CodeInvalid, OpCreateTap},
		{"null", "POST", "/v1/op/Status", `null`, http.StatusBadRequest, CodeInvalid, OpStatus},
		{"empty body", "POST", "/v1/op/Status", ``, http.StatusBadRequest, CodeInvalid, OpStatus},
		{"unknown field uid", "POST", "/v1/op/CreateTap", `{"name":"tap-pool-1","bridge":"` + testBridge + `","uid":0}`, http.StatusBadRequest, CodeInvalid, OpCreateTap},
		{"wrong type", "POST", "/v1/op/EnsureBridge", `{"name":"` + testBridge + `","mtu":"1500"}`, http.StatusBadRequest, CodeInvalid, OpEnsureBridge},
		{"dns port out of range", "POST", "/v1/op/EnsureBridge", `{"name":"` + testBridge + `","address":"172.30.99.1/24","mtu":1500,"dns_port":70000}`, http.StatusBadRequest, CodeInvalid, OpEnsureBridge},
		{"trailing data", "POST", "/v1/op/Status", `{}{}`, http.StatusBadRequest, CodeInvalid, OpStatus},
		{"oversized body", "POST", "/v1/op/CreateTap", `{"name":"` + strings.Repeat("a", MaxRequestBody) + `"}`, http.StatusRequestEntityTooLarge, CodeInvalid, OpCreateTap},
		{"GET", "GET", "/v1/op/Status", ``, http.StatusMethodNotAllowed, CodeInvalid, OpStatus},
		{"PUT", "PUT", "/v1/op/CreateTap", `{}`, http.StatusMethodNotAllowed, CodeInvalid, OpCreateTap},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			before := len(h.audit.Lines(t))
			status, e := rawRequest(t, sock, tc.method, tc.path, []byte(tc.body))
			if status != tc.wantStatus || e.Code != tc.wantCode {
				t.Fatalf("got %d %q (%s), want %d %q", status, e.Code, e.Message, tc.wantStatus, tc.wantCode)
			}
			if e.Message == "" {
				t.Errorf("refusal has no message")
			}
			lines := h.audit.Lines(t)
			if got := len(lines) - before; got != 1 {
				t.Fatalf("got %d audit lines for one call, want 1", got)
			}
			l := lines[len(lines)-1]
			if l["op"] != tc.wantOp || l["result"] != tc.wantCode || l["error"] != e.Message {
				t.Errorf("audit line %v: want op %q, result %q and the caller's message", l, tc.wantOp, tc.wantCode)
			}
			if l["peer_uid"] != float64(os.Getuid()) || l["peer_pid"] != float64(os.Getpid()) {
				t.Errorf("audit line peer %v/%v, want uid %d pid %d", l["peer_uid"], l["peer_pid"], os.Getuid(), os.Getpid())
			}
		})
	}
	if calls := h.net.Calls(); len(calls) != 0 {
		t.Errorf("malformed calls reached NetOps: %s", fmtCalls(calls))
	}
}

func TestUnknownOpNamesTheKnownOnes(t *testing.T) {
	h := newHarness(t)
	err := h.client.call(context.Background(), "Reboot", struct{}{}, &struct{}{})
	we := wantCode(t, err, CodeUnknownOp)
	mustContain(t, we.Message, `"Reboot"`, OpCreateTap, OpChownToOwner, "banger system restart")
}

// TestAuditLine checks the whole line of a successful call.
func TestAuditLine(t *testing.T) {
	h := newHarness(t)
	if err := h.client.CreateTap(context.Background(), CreateTapRequest{Name: "tap-pool-3", Bridge: testBridge}); err != nil {
		t.Fatal(err)
	}
	lines := h.audit.Lines(t)
	if len(lines) != 1 {
		t.Fatalf("got %d audit lines, want 1", len(lines))
	}
	l := lines[0]
	ts, ok := l["time"].(string)
	if !ok {
		t.Fatalf("audit line has no time: %v", l)
	}
	if tm, err := time.Parse(time.RFC3339Nano, ts); err != nil || time.Since(tm) > time.Minute {
		t.Errorf("audit time %q is not a recent RFC 3339 time (%v)", ts, err)
	}
	args, _ := l["args"].(map[string]any)
	want := map[string]any{"name": "tap-pool-3", "bridge": testBridge}
	if len(args) != len(want) || args["name"] != want["name"] || args["bridge"] != want["bridge"] {
		t.Errorf("got args %v, want %v", l["args"], want)
	}
	if l["op"] != OpCreateTap || l["result"] != "ok" {
		t.Errorf("got op %v result %v, want %s ok", l["op"], l["result"], OpCreateTap)
	}
	if _, has := l["error"]; has {
		t.Errorf("successful call has an error field: %v", l)
	}
	if d, ok := l["duration_us"].(float64); !ok || d < 0 {
		t.Errorf("got duration_us %v, want a non-negative number", l["duration_us"])
	}
	if l["peer_uid"] != float64(os.Getuid()) || l["peer_pid"] != float64(os.Getpid()) {
		t.Errorf("got peer %v/%v, want uid %d pid %d", l["peer_uid"], l["peer_pid"], os.Getuid(), os.Getpid())
	}
}

func TestStatus(t *testing.T) {
	h := newHarness(t)
	h.net.status = NetStatus{BridgeUp: true, NFTTable: true, IPForward: false}
	ctx := context.Background()
	got, err := h.client.Status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	want := StatusResponse{
		Version: buildinfo.Get(), PID: os.Getpid(), OwnerUID: h.ownerUID, Bridge: testBridge,
		BridgeUp: true, NFTTable: true, IPForward: false,
		ResolverRouting: "unknown: not requested since the helper started",
	}
	if got != want {
		t.Errorf("got %+v\nwant %+v", got, want)
	}
	if _, err := h.client.ResolverRouting(ctx, ResolverRoutingRequest{Enable: true, Bridge: testBridge, Domain: "vm", DNS: netip.MustParseAddrPort("172.30.99.1:5353")}); err != nil {
		t.Fatal(err)
	}
	got, err = h.client.Status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if want := "applied: vm to 172.30.99.1:5353 on " + testBridge; got.ResolverRouting != want {
		t.Errorf("got resolver routing %q, want %q", got.ResolverRouting, want)
	}
}

// TestFailedOpIsCodeFailed: a kernel error comes back as CodeFailed with context, and
// EnsureBridge stops at the first failing step.
func TestFailedOpIsCodeFailed(t *testing.T) {
	h := newHarness(t)
	h.net.fail = map[string]error{"EnsureBaseRules": errors.New("permission denied")}
	_, err := h.client.EnsureBridge(context.Background(), EnsureBridgeRequest{Name: testBridge, Address: testPrefix, MTU: 1500})
	we := wantCode(t, err, CodeFailed)
	mustContain(t, we.Message, "nftables base rules", "permission denied")
	if got := fmtCalls(h.net.Calls()); strings.Contains(got, "SetIPForward") {
		t.Errorf("SetIPForward ran after EnsureBaseRules (the guest policy) failed: %s", got)
	}
	lines := h.audit.Lines(t)
	if l := lines[len(lines)-1]; l["result"] != CodeFailed || l["error"] != we.Message {
		t.Errorf("audit line %v, want result failed with the message", l)
	}
}

func TestClientHelperNotRunning(t *testing.T) {
	c := NewClient(t.TempDir() + "/helper.sock")
	_, err := c.Status(context.Background())
	if err == nil {
		t.Fatal("got success without a helper, want an error")
	}
	var we *Error
	if errors.As(err, &we) {
		t.Errorf("got a helper error %v, want a transport error", we)
	}
	mustContain(t, err.Error(), "not running", "banger system run")
}

func TestNewServerRefusesBadConfig(t *testing.T) {
	h := &harness{net: &recordingNet{}, block: newRecordingBlock(), audit: &syncBuffer{}}
	base := func() ServerConfig {
		c := h.serverConfig()
		lay, err := layout.New(t.TempDir())
		if err != nil {
			t.Fatal(err)
		}
		c.Layout = lay
		c.OwnerUID = 1000
		return c
	}
	tests := []struct {
		name string
		mod  func(*ServerConfig)
	}{
		{"no layout", func(c *ServerConfig) { c.Layout.Root, c.Layout.RunDir = "", "" }},
		{"no owner", func(c *ServerConfig) { c.OwnerUID = -1 }},
		{"bad bridge", func(c *ServerConfig) { c.Bridge = "br;0" }},
		{"tap bridge", func(c *ServerConfig) { c.Bridge = "tap-pool-1" }},
		{"no prefix", func(c *ServerConfig) { c.BridgePrefix = netip.Prefix{} }},
		{"network address", func(c *ServerConfig) { c.BridgePrefix = netip.MustParsePrefix("172.30.99.0/24") }},
		{"IPv6", func(c *ServerConfig) { c.BridgePrefix = netip.MustParsePrefix("fd00::1/64") }},
		{"MTU", func(c *ServerConfig) { c.MTU = 100 }},
		{"no net", func(c *ServerConfig) { c.Net = nil }},
		{"no block", func(c *ServerConfig) { c.Block = nil }},
		{"no audit", func(c *ServerConfig) { c.Audit = nil }},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c := base()
			tc.mod(&c)
			if _, err := NewServer(c); err == nil {
				t.Errorf("got a server, want a refusal")
			}
		})
	}
	if _, err := NewServer(base()); err != nil {
		t.Errorf("base config refused: %v", err)
	}
}

func TestQuoteBody(t *testing.T) {
	got := quoteBody(bytes.Repeat([]byte{0xff}, maxAuditBody+10))
	if !strings.HasSuffix(got, "(truncated)") || !strings.HasPrefix(got, "\uFFFD") {
		t.Errorf("got %q, want replacement characters and a truncation mark", got[:20])
	}
}
