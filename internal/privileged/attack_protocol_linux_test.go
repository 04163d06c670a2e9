package privileged_test

// Attacks on the helper's protocol, as the owner and as a second user, against the
// real banger-helper: wrong methods and op names, bodies that are not one JSON
// object, oversized and malformed messages, slow and many connections, HTTP
// versions and framings the client never sends. Each asserts the refusal, that the
// host is unchanged and that the helper still serves its owner afterwards.

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"banger/internal/privileged"
)

// rawConn is a connection to the helper as d's user, with a deadline.
func (e *attackEnv) rawConn(t testing.TB, d *peerDialer, deadline time.Duration) net.Conn {
	t.Helper()
	c, err := d.dial(e.sock)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	if err := c.SetDeadline(time.Now().Add(deadline)); err != nil {
		t.Fatal(err)
	}
	return c
}

// exchange writes data on a fresh owner connection and reads every response the
// helper sends until it closes the connection or n responses came. It returns
// their status codes; a connection closed before any response gives none.
func (e *attackEnv) exchange(t testing.TB, data []byte, n int) []int {
	t.Helper()
	return e.exchangeFor(t, data, n, 20*time.Second)
}

// exchangeFor is exchange giving up after d.
func (e *attackEnv) exchangeFor(t testing.TB, data []byte, n int, d time.Duration) []int {
	t.Helper()
	c := e.rawConn(t, e.ownerDial, d)
	if _, err := c.Write(data); err != nil && !errors.Is(err, syscall.EPIPE) && !errors.Is(err, syscall.ECONNRESET) {
		t.Fatalf("write: %v", err)
	}
	br := bufio.NewReader(c)
	var codes []int
	for len(codes) < n {
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			break // closed (or garbage): no more answers
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		codes = append(codes, resp.StatusCode)
	}
	return codes
}

// noneOK fails t if any of codes is 200, or if there is no answer and want says one
// is expected.
func noneOK(t testing.TB, what string, codes []int, wantAnswer bool) {
	t.Helper()
	if wantAnswer && len(codes) == 0 {
		t.Errorf("%s: no answer, want a refusal", what)
	}
	for _, c := range codes {
		if c == http.StatusOK {
			t.Errorf("%s: ACCEPTED (200), want a refusal; all answers %v", what, codes)
		}
	}
}

// post is a raw HTTP/1.1 POST of body to path.
func post(path, body string) string {
	return fmt.Sprintf("POST %s HTTP/1.1\r\nHost: banger-helper\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s", path, len(body), body)
}

// helperFDs counts the helper's open descriptors.
func (e *attackEnv) helperFDs(t testing.TB) int {
	t.Helper()
	ents, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", e.helper))
	if err != nil {
		t.Fatal(err)
	}
	return len(ents)
}

// knownOps asks the helper, with an unknown op, which ops it knows: "every op"
// then stays every op as ops are added.
func (e *attackEnv) knownOps(t testing.TB) []string {
	t.Helper()
	r := e.callAs(e.ownerDial, "NoSuchOp", []byte("{}"))
	if r.Status != http.StatusNotFound || r.Err.Code != privileged.CodeUnknownOp {
		t.Fatalf("unknown op: %s, want 404 %s", r, privileged.CodeUnknownOp)
	}
	m := regexp.MustCompile(`knows ([A-Za-z, ]+);`).FindStringSubmatch(r.Err.Message)
	if m == nil {
		t.Fatalf("cannot read the op list from %q", r.Err.Message)
	}
	ops := strings.Split(m[1], ", ")
	if len(ops) < 19 {
		t.Fatalf("the helper knows %d ops (%v): fewer than the 19 this suite was written against", len(ops), ops)
	}
	return ops
}

// validBodies holds, per op, a request the owner could legitimately send: sent by
// someone else, each would change the host if it were obeyed (RemoveNetwork deletes
// the bridge, DeleteTap the tap, EnsureNAT off the guest's rules).
func (e *attackEnv) validBodies(t testing.TB) map[string]any {
	t.Helper()
	disk := filepath.Join(e.lay.DisksDir(), "protovm", "rootfs.ext4")
	return map[string]any{
		privileged.OpEnsureBridge:    privileged.EnsureBridgeRequest{Name: atkBridge, Address: atkPrefix, MTU: atkMTU, DNSPort: 5353},
		privileged.OpCreateTap:       privileged.CreateTapRequest{Name: "tap-pool-1", Bridge: atkBridge},
		privileged.OpDeleteTap:       privileged.DeleteTapRequest{Name: "tap-pool-0"},
		privileged.OpEnsureNAT:       privileged.EnsureNATRequest{GuestIP: atkGuest, Tap: "tap-pool-0", Enable: false},
		privileged.OpResolverRouting: privileged.ResolverRoutingRequest{Bridge: atkBridge},
		privileged.OpChownToOwner:    privileged.ChownToOwnerRequest{Path: filepath.Join(e.jailRunPath("protovm"), "api.sock")},
		privileged.OpRemoveNetwork:   privileged.RemoveNetworkRequest{Bridge: atkBridge},
		privileged.OpLoopAttach:      privileged.LoopAttachRequest{Path: disk},
		privileged.OpLoopDetach:      privileged.LoopDetachRequest{Device: "/dev/loop0"},
		privileged.OpDMCreate:        privileged.DMCreateRequest{Name: privileged.DMPrefix(e.lay.DisksDir()) + "protovm", Table: "0 8 snapshot /dev/loop0 /dev/loop1 P 8\n"},
		privileged.OpDMRemove:        privileged.DMRemoveRequest{Name: privileged.DMPrefix(e.lay.DisksDir()) + "protovm"},
		privileged.OpJailLaunch: privileged.JailLaunchRequest{ID: "protovm",
			Files: []privileged.JailFileSpec{
				{Src: filepath.Join(e.lay.ImagesDir(), "vmlinux"), Dst: privileged.JailDstKernel},
				{Src: disk, Dst: privileged.JailDstRootfs, Writable: true},
			},
			FirecrackerArgs: []string{"--api-sock", "/run/firecracker.socket"},
			ConsoleLog:      filepath.Join(e.lay.LogDir, "vms", "protovm.console.log")},
		privileged.OpJailSignal: privileged.JailSignalRequest{ID: "protovm", Signal: "SIGKILL"},
		privileged.OpJailRemove: privileged.JailRemoveRequest{ID: "protovm"},
	}
}

// TestAttackProtocol abuses the wire protocol as the owner.
func TestAttackProtocol(t *testing.T) {
	e := newAttackEnv(t)
	victimSock := filepath.Join(e.victim, "root.sock")
	mksock(t, victimSock, 0, 0)
	jr := e.jailRun(t, "protovm")
	mksock(t, filepath.Join(jr, "api.sock"), e.ownerUID, e.ownerGID)
	e.ownerFile(t, filepath.Join(e.lay.DisksDir(), "protovm", "rootfs.ext4"), 4096)
	e.ownerFile(t, filepath.Join(e.lay.ImagesDir(), "vmlinux"), 4096)
	ops := e.knownOps(t)

	e.attack(t, "wrong methods", nil, func(t *testing.T) {
		for _, m := range []string{http.MethodGet, http.MethodPut, http.MethodDelete, http.MethodPatch, http.MethodOptions, http.MethodHead, "TRACE", "PROPFIND"} {
			for _, op := range []string{privileged.OpStatus, privileged.OpDeleteTap, privileged.OpRemoveNetwork} {
				body := []byte(`{"name":"tap-pool-0","bridge":"` + victimBridge + `"}`)
				if op == privileged.OpStatus {
					body = []byte("{}")
				}
				r := e.requestAs(e.ownerDial, m, "/v1/op/"+op, body)
				if r.Trans != nil || r.Status != http.StatusMethodNotAllowed {
					t.Errorf("%s %s: %s, want 405", m, op, r)
				}
			}
		}
	})

	e.attack(t, "unknown and malformed op names", nil, func(t *testing.T) {
		body := `{"bridge":"` + victimBridge + `"}`
		for _, path := range []string{
			"/v1/op/", "/v1/op", "/", "/v1/op/removenetwork", "/v1/op/RemoveNetwork/", "/v1/op//RemoveNetwork",
			"/v1/op/RemoveNetwork%00", "/v1/op/RemoveNetwork%2F..", "/v1/op/../op/RemoveNetwork", "/v1/op/./RemoveNetwork",
			"/v2/op/RemoveNetwork", "/V1/OP/RemoveNetwork", "/v1/op/R%C3%A9moveNetwork", "/v1/op/%E2%80%AERemoveNetwork",
			"/v1/op/RemoveNetwork?x=1%00", "/v1/op/" + strings.Repeat("A", 8000), "/v1/op/%ff%fe",
			"/v1/op/RemoveNetwork#frag", "*",
		} {
			codes := e.exchange(t, []byte(post(path, body)), 1)
			noneOK(t, "op path "+strconv.Quote(path), codes, true)
		}
		// An op name with raw bytes the URL never carries: a NUL, a space, a newline.
		for _, raw := range []string{"/v1/op/Remove\x00Network", "/v1/op/Remove Network", "/v1/op/Remove\nNetwork", "/v1/op/Remove\rNetwork"} {
			codes := e.exchange(t, []byte(post(raw, body)), 1)
			noneOK(t, "raw op name "+strconv.Quote(raw), codes, false)
		}
	})

	e.attack(t, "bodies that are not one JSON object", nil, func(t *testing.T) {
		for _, b := range []string{
			"", " ", "null", "[]", `[{"bridge":"` + atkBridge + `"}]`, `"` + atkBridge + `"`, "1", "true", "{",
			`{"bridge":"` + atkBridge + `"}{}`, `{"bridge":"` + atkBridge + `"} x`, `{"bridge":"` + atkBridge + `"}]`,
			"\xef\xbb\xbf{\"bridge\":\"" + atkBridge + "\"}", // UTF-8 BOM
			`{'bridge':'` + atkBridge + `'}`, `{bridge:"` + atkBridge + `"}`, "{\"bridge\":\"" + atkBridge + "\",}",
			"\x00{}", `{"bridge":"` + atkBridge + `"` + "\x00}",
		} {
			for _, op := range []string{privileged.OpRemoveNetwork, privileged.OpDeleteTap, privileged.OpChownToOwner} {
				refused(t, fmt.Sprintf("%s body %q", op, b), e.callAs(e.ownerDial, op, []byte(b)), privileged.CodeInvalid)
			}
		}
	})

	e.attack(t, "duplicate and case-folded keys", nil, func(t *testing.T) {
		// encoding/json keeps the last of duplicate keys and matches keys without
		// regard to case: whatever it keeps is what is validated and what runs.
		sock := filepath.Join(jr, "api.sock")
		for op, b := range map[string][]string{
			privileged.OpChownToOwner: {
				`{"path":"` + sock + `","path":"` + victimSock + `"}`,
				`{"path":"` + sock + `","PATH":"` + victimSock + `"}`,
				`{"path":"` + sock + `","Path":"` + victimSock + `"}`,
				`{"path":"` + sock + `","pa\u0074h":"` + victimSock + `"}`,
			},
			privileged.OpDeleteTap: {
				`{"name":"tap-pool-1","name":"` + victimVeth + `"}`,
				`{"name":"tap-pool-1","NAME":"` + victimBridge + `"}`,
			},
			privileged.OpEnsureBridge: {
				`{"name":"` + atkBridge + `","address":"` + atkPrefix.String() + `","mtu":1400,"name":"` + victimBridge + `"}`,
				`{"name":"` + atkBridge + `","address":"` + atkPrefix.String() + `","mtu":1400,"Address":"` + victimBridgeAddr + `"}`,
			},
			privileged.OpRemoveNetwork: {
				`{"bridge":"` + atkBridge + `","Bridge":"` + victimBridge + `"}`,
			},
		} {
			for _, body := range b {
				refused(t, op+" "+body, e.callAs(e.ownerDial, op, []byte(body)), privileged.CodeInvalid)
			}
		}
	})

	e.attack(t, "unknown fields", nil, func(t *testing.T) {
		for op, bodies := range map[string][]string{
			privileged.OpCreateTap:    {`{"name":"tap-pool-1","bridge":"` + atkBridge + `","owner_uid":0}`, `{"name":"tap-pool-1","bridge":"` + atkBridge + `","mtu":65535}`, `{"name":"tap-pool-1","bridge":"` + atkBridge + `","uid":0,"gid":0}`},
			privileged.OpChownToOwner: {`{"path":"` + filepath.Join(jr, "api.sock") + `","uid":0}`, `{"path":"` + filepath.Join(jr, "api.sock") + `","owner_uid":0}`},
			privileged.OpJailLaunch:   {`{"id":"protovm","jailer":"/bin/sh"}`, `{"id":"protovm","uid":0,"gid":0}`, `{"id":"protovm","chroot_base":"/"}`},
			privileged.OpEnsureBridge: {`{"name":"` + atkBridge + `","address":"` + atkPrefix.String() + `","mtu":1400,"forward":false}`},
			privileged.OpStatus:       {`{"verbose":true}`},
			privileged.OpLoopAttach:   {`{"path":"` + filepath.Join(e.lay.DisksDir(), "protovm", "rootfs.ext4") + `","read_only":true,"offset":1}`},
		} {
			for _, b := range bodies {
				refused(t, op+" "+b, e.callAs(e.ownerDial, op, []byte(b)), privileged.CodeInvalid)
			}
		}
	})

	e.attack(t, "huge numbers, negative numbers and wrong types", nil, func(t *testing.T) {
		eb := func(extra string) string {
			return `{"name":"` + atkBridge + `","address":"` + atkPrefix.String() + `",` + extra + `}`
		}
		for _, c := range []struct{ op, body string }{
			{privileged.OpEnsureBridge, eb(`"mtu":1e400`)},
			{privileged.OpEnsureBridge, eb(`"mtu":99999999999999999999999`)},
			{privileged.OpEnsureBridge, eb(`"mtu":-1400`)},
			{privileged.OpEnsureBridge, eb(`"mtu":1400.5`)},
			{privileged.OpEnsureBridge, eb(`"mtu":"1400"`)},
			{privileged.OpEnsureBridge, eb(`"mtu":1400,"dns_port":70000`)},
			{privileged.OpEnsureBridge, eb(`"mtu":1400,"dns_port":-53`)},
			{privileged.OpEnsureBridge, `{"name":"` + atkBridge + `","address":"10.213.9.1/99","mtu":1400}`},
			{privileged.OpEnsureBridge, `{"name":"` + atkBridge + `","address":["10.213.9.1/24"],"mtu":1400}`},
			{privileged.OpEnsureNAT, `{"guest_ip":"10.213.9.5","tap":"tap-pool-0","enable":1}`},
			{privileged.OpEnsureNAT, `{"guest_ip":168036613,"tap":"tap-pool-0","enable":true}`},
			{privileged.OpEnsureNAT, `{"guest_ip":"10.213.9.05","tap":"tap-pool-0","enable":false}`},
			{privileged.OpEnsureNAT, `{"guest_ip":"10.213.9.5%eth0","tap":"tap-pool-0","enable":false}`},
			{privileged.OpJailSignal, `{"id":"protovm","signal":"SIGKILL","pid_start":-1}`},
			{privileged.OpJailSignal, `{"id":"protovm","signal":"SIGKILL","pid_start":1e30}`},
			{privileged.OpJailSignal, `{"id":"protovm","signal":9}`},
			{privileged.OpLoopAttach, `{"path":"` + filepath.Join(e.lay.DisksDir(), "protovm", "rootfs.ext4") + `","read_only":"false"}`},
			{privileged.OpDeleteTap, `{"name":["tap-pool-0"]}`},
			{privileged.OpDeleteTap, `{"name":null}`},
			{privileged.OpDeleteTap, `{"name":{"$ne":""}}`},
		} {
			refused(t, c.op+" "+c.body, e.callAs(e.ownerDial, c.op, []byte(c.body)), privileged.CodeInvalid)
		}
	})

	e.attack(t, "oversized bodies", nil, func(t *testing.T) {
		// One byte past the cap, as a JSON string the decoder would otherwise accept.
		pad := privileged.MaxRequestBody - len(`{"bridge":""}`) + 1
		big := `{"bridge":"` + strings.Repeat("b", pad) + `"}`
		if len(big) != privileged.MaxRequestBody+1 {
			t.Fatalf("body is %d bytes, want %d", len(big), privileged.MaxRequestBody+1)
		}
		r := e.callAs(e.ownerDial, privileged.OpRemoveNetwork, []byte(big))
		if r.Status != http.StatusRequestEntityTooLarge {
			t.Errorf("a %d-byte body: %s, want 413", len(big), r)
		}
		// 8 MiB of spaces before an object: refused without reading it all.
		start := time.Now()
		r = e.callAs(e.ownerDial, privileged.OpRemoveNetwork, append(bytes.Repeat([]byte(" "), 8<<20), []byte(`{"bridge":"`+atkBridge+`"}`)...))
		if r.Trans == nil && r.Status != http.StatusRequestEntityTooLarge {
			t.Errorf("an 8 MiB body: %s, want 413 (or the connection closed)", r)
		}
		quick(t, "8 MiB body", start)
		// A Content-Length far beyond what is sent, then silence: refused, not awaited.
		// (The helper may wait for the rest, up to its read timeout: bounded.)
		codes := e.exchangeFor(t, []byte("POST /v1/op/RemoveNetwork HTTP/1.1\r\nHost: h\r\nContent-Length: 99999999999999\r\n\r\n{\"bridge\":\""+victimBridge+"\"}"), 1, 3*time.Second)
		noneOK(t, "Content-Length 99999999999999", codes, false)
		codes = e.exchange(t, []byte("POST /v1/op/RemoveNetwork HTTP/1.1\r\nHost: h\r\nContent-Length: -1\r\n\r\n{}"), 1)
		noneOK(t, "Content-Length -1", codes, true)
	})

	e.attack(t, "deeply nested and odd JSON", nil, func(t *testing.T) {
		for _, b := range []string{
			`{"bridge":` + strings.Repeat("[", 30000) + strings.Repeat("]", 30000) + `}`,
			`{"bridge":"x","y":` + strings.Repeat(`{"a":`, 10000) + "1" + strings.Repeat("}", 10000) + `}`,
			`{"bridge":"` + atkBridge + "\xff\xfe" + `"}`,
			`{"bridge":"` + atkBridge + `\u0000"}`,
			`{"bridge":"\ud800` + atkBridge + `"}`,
			`{"bridge":"` + strings.ToUpper(atkBridge) + `"}`,
			`{"bridge":"` + atkBridge + ` "}`,
			`{"bridge":"` + atkBridge + `\n"}`,
		} {
			refused(t, fmt.Sprintf("RemoveNetwork body %.60q", b), e.callAs(e.ownerDial, privileged.OpRemoveNetwork, []byte(b)), privileged.CodeInvalid)
		}
	})

	e.attack(t, "slowloris headers and bodies", nil, func(t *testing.T) {
		const n = 24
		dribble := []byte(post("/v1/op/RemoveNetwork", `{"bridge":"`+victimBridge+`"}`))
		var wg sync.WaitGroup
		closed := make(chan time.Duration, n)
		start := time.Now()
		for i := 0; i < n; i++ {
			c := e.rawConn(t, e.ownerDial, 30*time.Second)
			wg.Add(1)
			go func(c net.Conn, body bool) {
				defer wg.Done()
				// Headers one byte at a time (or, for half of them, all the headers
				// and then the body one byte at a time), for at most 16s.
				split := bytes.Index(dribble, []byte("\r\n\r\n")) + 4
				data := dribble
				if body {
					if _, err := c.Write(dribble[:split]); err != nil {
						closed <- time.Since(start)
						return
					}
					data = dribble[split:]
				}
				for _, b := range data {
					if time.Since(start) > 16*time.Second {
						return
					}
					if _, err := c.Write([]byte{b}); err != nil {
						closed <- time.Since(start)
						return
					}
					time.Sleep(700 * time.Millisecond)
				}
			}(c, i%2 == 1)
		}
		// Meanwhile the owner is served.
		for i := 0; i < 3; i++ {
			time.Sleep(time.Second)
			e.stillServes(t)
		}
		wg.Wait()
		close(closed)
		cut := 0
		for d := range closed {
			cut++
			if d > 15*time.Second {
				t.Errorf("a dribbling connection was cut only after %v", d)
			}
		}
		// Header dribblers are cut by the header timeout (10s); body dribblers run
		// into the read timeout (30s), past this bound: they only must not block
		// anyone, and never complete a call.
		if cut < n/2 {
			t.Errorf("%d of %d header-dribbling connections were cut within 16s, want all", cut, n/2)
		}
	})

	e.attack(t, "many concurrent connections", nil, func(t *testing.T) {
		base := e.helperFDs(t)
		var conns []net.Conn
		for i := 0; i < 300; i++ {
			c, err := e.ownerDial.dial(e.sock)
			if err != nil {
				t.Fatalf("connection %d: %v", i, err)
			}
			conns = append(conns, c)
		}
		var wg sync.WaitGroup
		errs := make(chan string, 40)
		for i := 0; i < 40; i++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				if r := e.callAs(e.ownerDial, privileged.OpStatus, []byte("{}")); r.Status != http.StatusOK {
					errs <- r.String()
				}
			}()
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Errorf("Status with 300 idle connections open: %s", err)
		}
		peak := e.helperFDs(t)
		for _, c := range conns {
			c.Close()
		}
		deadline := time.Now().Add(10 * time.Second)
		for e.helperFDs(t) > base+5 && time.Now().Before(deadline) {
			time.Sleep(100 * time.Millisecond)
		}
		if now := e.helperFDs(t); now > base+5 {
			t.Errorf("helper holds %d descriptors after the connections closed, %d before (peak %d)", now, base, peak)
		}
	})

	e.attack(t, "HTTP versions the client never speaks", nil, func(t *testing.T) {
		rn := `{"bridge":"` + victimBridge + `"}`
		for _, raw := range []string{
			"POST /v1/op/RemoveNetwork HTTP/1.0\r\nContent-Length: " + strconv.Itoa(len(`{"bridge":"`+victimBridge+`"}`)) + "\r\n\r\n" + `{"bridge":"` + victimBridge + `"}`,
			"GET /v1/op/RemoveNetwork\r\n",
			"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
			"POST /v1/op/RemoveNetwork HTTP/2.0\r\nHost: h\r\nContent-Length: " + strconv.Itoa(len(rn)) + "\r\n\r\n" + rn,
			"POST /v1/op/RemoveNetwork HTTP/1.1\r\nContent-Length: " + strconv.Itoa(len(rn)) + "\r\n\r\n" + rn, // no Host
			"POST /v1/op/RemoveNetwork HTTP/9.9\r\nHost: h\r\nContent-Length: " + strconv.Itoa(len(rn)) + "\r\n\r\n" + rn,
			"POST /v1/op/RemoveNetwork HTTP/1.1\r\nHost: h\r\nUpgrade: h2c\r\nConnection: Upgrade, HTTP2-Settings\r\nHTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\nContent-Length: 2\r\n\r\n{}",
		} {
			codes := e.exchange(t, []byte(raw), 1)
			noneOK(t, fmt.Sprintf("%.50q", raw), codes, false)
		}
		// HTTP/1.0 is answered like 1.1: a valid call works, a hostile one is refused.
		codes := e.exchange(t, []byte("POST /v1/op/Status HTTP/1.0\r\nContent-Length: 2\r\n\r\n{}"), 1)
		if len(codes) != 1 || codes[0] != http.StatusOK {
			t.Errorf("HTTP/1.0 Status: %v, want 200", codes)
		}
	})

	e.attack(t, "chunked bodies and smuggling", nil, func(t *testing.T) {
		chunk := func(parts ...string) string {
			var b strings.Builder
			for _, p := range parts {
				fmt.Fprintf(&b, "%x\r\n%s\r\n", len(p), p)
			}
			b.WriteString("0\r\n\r\n")
			return b.String()
		}
		head := "POST /v1/op/RemoveNetwork HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n"
		victim := `{"bridge":"` + victimBridge + `"}`
		for what, raw := range map[string]string{
			"chunked hostile body":  head + chunk(victim[:5], victim[5:]),
			"chunked past the cap":  head + chunk(`{"bridge":"`, strings.Repeat("b", 40000), strings.Repeat("b", 40000), `"}`),
			"bad chunk size":        head + "zz\r\n{}\r\n0\r\n\r\n",
			"chunk size overflow":   head + "ffffffffffffffffff\r\n{}\r\n0\r\n\r\n",
			"chunk extension flood": head + "2;" + strings.Repeat("a=b;", 2000) + "\r\n{}\r\n0\r\n\r\n",
			"CL and TE together": "POST /v1/op/RemoveNetwork HTTP/1.1\r\nHost: h\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n" +
				chunk(`{"bridge":"`+victimBridge+`"}`),
			"two Content-Lengths": "POST /v1/op/RemoveNetwork HTTP/1.1\r\nHost: h\r\nContent-Length: 2\r\nContent-Length: 20\r\n\r\n{}",
			"TE gzip, chunked":    "POST /v1/op/RemoveNetwork HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: gzip, chunked\r\n\r\n" + chunk(`{"bridge":"`+victimBridge+`"}`),
			"TE with a space":     "POST /v1/op/RemoveNetwork HTTP/1.1\r\nHost: h\r\nTransfer-Encoding : chunked\r\n\r\n" + chunk(`{"bridge":"`+victimBridge+`"}`),
		} {
			codes := e.exchange(t, []byte(raw), 1)
			noneOK(t, what, codes, false)
		}
		// A valid chunked call works: the refusals above are not a refusal of chunking.
		codes := e.exchange(t, []byte("POST /v1/op/Status HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n"+chunk("{", "}")), 1)
		if len(codes) != 1 || codes[0] != http.StatusOK {
			t.Errorf("chunked Status: %v, want 200", codes)
		}
	})

	e.attack(t, "pipelined requests", nil, func(t *testing.T) {
		status := post("/v1/op/Status", "{}")
		hostile := post("/v1/op/RemoveNetwork", `{"bridge":"`+victimBridge+`"}`)
		chown := post("/v1/op/ChownToOwner", `{"path":"`+victimSock+`"}`)
		codes := e.exchange(t, []byte(status+hostile+chown+status), 4)
		if len(codes) != 4 || codes[0] != http.StatusOK || codes[1] == http.StatusOK || codes[2] == http.StatusOK || codes[3] != http.StatusOK {
			t.Errorf("pipelined Status, RemoveNetwork(victim), ChownToOwner(victim), Status: answers %v, want 200, refusal, refusal, 200", codes)
		}
		// A second request hidden after a short Content-Length is just another
		// request, validated like any other.
		smuggled := "POST /v1/op/Status HTTP/1.1\r\nHost: h\r\nContent-Length: 2\r\n\r\n{}" + hostile
		codes = e.exchange(t, []byte(smuggled), 2)
		if len(codes) != 2 || codes[0] != http.StatusOK || codes[1] == http.StatusOK {
			t.Errorf("Status with RemoveNetwork(victim) after its body: answers %v, want 200 then a refusal", codes)
		}
	})

	e.attack(t, "header abuse", nil, func(t *testing.T) {
		body := `{"bridge":"` + victimBridge + `"}`
		withHeaders := func(h string) string {
			return "POST /v1/op/RemoveNetwork HTTP/1.1\r\nHost: h\r\n" + h + "Content-Length: " + strconv.Itoa(len(body)) + "\r\n\r\n" + body
		}
		for what, raw := range map[string]string{
			"a 40 KiB header":        withHeaders("X-Big: " + strings.Repeat("a", 40<<10) + "\r\n"),
			"5000 headers":           withHeaders(strings.Repeat("X-A: b\r\n", 5000)),
			"NUL in a header":        withHeaders("X-A: b\x00c\r\n"),
			"header without a colon": withHeaders("X-A b\r\n"),
			"obsolete line folding":  withHeaders("X-A: b\r\n c\r\n"),
			"space before colon":     withHeaders("Content-Length : 9999\r\n"),
		} {
			codes := e.exchange(t, []byte(raw), 1)
			noneOK(t, what, codes, false)
		}
		// The bridge must still be there, which the watched links prove; and a
		// hostile Host or absolute URL changes nothing about who may call.
		for _, raw := range []string{
			"POST http://evil.example/v1/op/RemoveNetwork HTTP/1.1\r\nHost: evil.example\r\nContent-Length: " + strconv.Itoa(len(`{"bridge":"`+victimBridge+`"}`)) + "\r\n\r\n" + `{"bridge":"` + victimBridge + `"}`,
		} {
			noneOK(t, "absolute-form URL", e.exchange(t, []byte(raw), 1), true)
		}
	})

	e.attack(t, "every op with garbage", nil, func(t *testing.T) {
		for _, op := range ops {
			if op == privileged.OpStatus || strings.HasSuffix(op, "List") || op == privileged.OpListTaps || op == privileged.OpDMAvailable {
				continue // take no arguments: nothing to garble
			}
			for _, b := range []string{`{"x":1}`, `[]`, `{"name":1,"path":1,"id":1,"bridge":1,"device":1}`, strings.Repeat("{", 1000)} {
				refused(t, op+" "+b, e.callAs(e.ownerDial, op, []byte(b)), privileged.CodeInvalid)
			}
		}
	})
}

// TestAttackOtherUser calls every op the helper knows as a second unprivileged user,
// who must be turned away: by the socket's permissions, and by SO_PEERCRED when the
// owner has opened the socket to everyone.
func TestAttackOtherUser(t *testing.T) {
	e := newAttackEnv(t)
	jr := e.jailRun(t, "protovm")
	mksock(t, filepath.Join(jr, "api.sock"), e.ownerUID, e.ownerGID)
	e.ownerFile(t, filepath.Join(e.lay.DisksDir(), "protovm", "rootfs.ext4"), 4096)
	e.ownerFile(t, filepath.Join(e.lay.ImagesDir(), "vmlinux"), 4096)
	ops := e.knownOps(t)
	bodies := e.validBodies(t)
	body := func(t *testing.T, op string) []byte {
		b, ok := bodies[op]
		if !ok {
			return []byte("{}")
		}
		data, err := json.Marshal(b)
		if err != nil {
			t.Fatal(err)
		}
		return data
	}

	e.attack(t, "cannot connect", nil, func(t *testing.T) {
		c, err := e.otherDial.dial(e.sock)
		if err == nil {
			c.Close()
			t.Fatalf("uid %d connected to the helper's socket %s", e.otherUID, e.sock)
		}
		if !strings.Contains(err.Error(), "permission denied") {
			t.Errorf("connect as uid %d: %v, want permission denied", e.otherUID, err)
		}
		for _, op := range ops {
			if r := e.callAs(e.otherDial, op, body(t, op)); r.Trans == nil {
				t.Errorf("%s as uid %d: answered %s, want no connection", op, e.otherUID, r)
			}
		}
	})

	e.attack(t, "every op forbidden with the socket open to all", func(t *testing.T) {
		// The owner owns its run directory and the socket and may open them to
		// everyone; where they are root's, this stands for a misconfiguration. The
		// peer check must hold either way.
		var restore []func()
		for _, p := range []string{e.root, filepath.Dir(e.sock), e.sock} {
			fi, err := os.Stat(p)
			if err != nil {
				t.Fatal(err)
			}
			mode := fi.Mode().Perm()
			if err := os.Chmod(p, 0o777); err != nil {
				t.Fatal(err)
			}
			restore = append(restore, func() { _ = os.Chmod(p, mode) })
		}
		t.Cleanup(func() {
			for _, r := range restore {
				r()
			}
		})
	}, func(t *testing.T) {
		for _, op := range append(ops, "NoSuchOp") {
			r := e.callAs(e.otherDial, op, body(t, op))
			refused(t, fmt.Sprintf("%s as uid %d", op, e.otherUID), r, privileged.CodeForbidden)
			if r.Status != http.StatusForbidden {
				t.Errorf("%s as uid %d: status %d, want 403", op, e.otherUID, r.Status)
			}
		}
	})
}
