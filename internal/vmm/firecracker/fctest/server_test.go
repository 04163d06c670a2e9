package fctest

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// rawClient sends hand-written requests, not the package's client, to prove
// that the server bites.
type rawClient struct {
	t    *testing.T
	http *http.Client
}

func newRawClient(t *testing.T, sock string) *rawClient {
	tr := &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, "unix", sock)
	}}
	t.Cleanup(tr.CloseIdleConnections)
	return &rawClient{t: t, http: &http.Client{Transport: tr}}
}

// req is a hand-written request; a nil body sends none.
type req struct {
	method, path string
	body         *string
}

func body(s string) *string { return &s }

func (c *rawClient) do(r req) (int, []byte) {
	c.t.Helper()
	var rd io.Reader
	if r.body != nil {
		rd = strings.NewReader(*r.body)
	}
	hr, err := http.NewRequest(r.method, "http://localhost"+r.path, rd)
	if err != nil {
		c.t.Fatal(err)
	}
	resp, err := c.http.Do(hr)
	if err != nil {
		c.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		c.t.Fatal(err)
	}
	return resp.StatusCode, b
}

// files makes a kernel and a disk the server can open.
func files(t *testing.T) (kernel, disk string) {
	t.Helper()
	dir := t.TempDir()
	kernel, disk = filepath.Join(dir, "vmlinux"), filepath.Join(dir, "disk.ext4")
	for _, f := range []string{kernel, disk} {
		if err := os.WriteFile(f, []byte("x"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return kernel, disk
}

func TestServerRejectsBadRequests(t *testing.T) {
	spec := MustSpec(t, SpecV1161)
	kernel, disk := files(t)
	bootSource := req{"PUT", "/boot-source", body(`{"kernel_image_path":"` + kernel + `"}`)}
	start := req{"PUT", "/actions", body(`{"action_type":"InstanceStart"}`)}
	pause := req{"PATCH", "/vm", body(`{"state":"Paused"}`)}
	stale := filepath.Join(ShortTempDir(t), "stale.sock")
	if err := os.WriteFile(stale, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	metricsFile := filepath.Join(t.TempDir(), "metrics")
	if err := os.WriteFile(metricsFile, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	putMetrics := req{"PUT", "/metrics", body(`{"metrics_path":"` + metricsFile + `"}`)}

	for _, tt := range []struct {
		name      string
		setup     []req // must all be accepted
		bad       req
		wantFault string
	}{
		{"unknown field", nil, req{"PUT", "/machine-config", body(`{"vcpu_count":1,"mem_size_mib":128,"vcpus":1}`)}, `unknown field "vcpus"`},
		{"wrong type", nil, req{"PUT", "/machine-config", body(`{"vcpu_count":"1","mem_size_mib":128}`)}, "want an integer"},
		{"missing required", nil, req{"PUT", "/boot-source", body(`{"boot_args":"console=ttyS0"}`)}, `missing required field "kernel_image_path"`},
		{"enum", nil, req{"PUT", "/actions", body(`{"action_type":"Reboot"}`)}, `"Reboot" is not one of`},
		{"bad path id", nil, req{"PUT", "/drives/root-fs", body(`{"drive_id":"root-fs","is_root_device":true,"is_read_only":false,"path_on_host":"` + disk + `"}`)}, "Invalid drive_id"},
		{"id mismatch", nil, req{"PUT", "/drives/rootfs", body(`{"drive_id":"other","is_root_device":true,"is_read_only":false,"path_on_host":"` + disk + `"}`)}, "does not match"},
		{"iface id mismatch", nil, req{"PUT", "/network-interfaces/eth0", body(`{"iface_id":"eth1","host_dev_name":"tap0"}`)}, "does not match"},
		{"GET with body", nil, req{"GET", "/machine-config", body(`{}`)}, "must not carry a body"},
		{"PUT without body", nil, req{"PUT", "/machine-config", nil}, "needs a JSON body"},
		{"PATCH without body", nil, req{"PATCH", "/vm", nil}, "needs a JSON body"},
		{"body too large", nil, req{"PUT", "/mmds", body(`{"k":"` + strings.Repeat("a", MaxBodySize) + `"}`)}, "over 51200 bytes"},
		{"unknown path", nil, req{"GET", "/nope", nil}, "Invalid request method and/or path"},
		{"method not allowed", nil, req{"DELETE", "/drives/rootfs", nil}, "method not allowed"},
		{"query string", nil, req{"GET", "/?x=1", nil}, "no query string"},
		{"not JSON", nil, req{"PATCH", "/vm", body(`state=Paused`)}, "not JSON"},
		{"missing kernel file", nil, req{"PUT", "/boot-source", body(`{"kernel_image_path":"/nonexistent/vmlinux"}`)}, "no such file"},
		{"start without kernel", nil, start, "without kernel configuration"},
		{"call after start", []req{bootSource, start}, req{"PUT", "/machine-config", body(`{"vcpu_count":1,"mem_size_mib":128}`)}, "after starting the microVM"},
		{"vsock after start", []req{bootSource, start}, req{"PUT", "/vsock", body(`{"guest_cid":3,"uds_path":"/tmp/x.sock"}`)}, "after starting the microVM"},
		{"drive after start", []req{bootSource, start}, req{"PUT", "/drives/rootfs", body(`{"drive_id":"rootfs","is_root_device":true,"is_read_only":false,"path_on_host":"` + disk + `"}`)}, "after starting the microVM"},
		{"start twice", []req{bootSource, start}, start, "after starting the microVM"},
		{"pause before start", nil, pause, "before starting the microVM"},
		{"ctrl-alt-del before start", nil, req{"PUT", "/actions", body(`{"action_type":"SendCtrlAltDel"}`)}, "before starting the microVM"},
		{"snapshot before start", nil, req{"PUT", "/snapshot/create", body(`{"snapshot_path":"/tmp/s","mem_file_path":"/tmp/m"}`)}, "before starting the microVM"},
		{"snapshot while running", []req{bootSource, start}, req{"PUT", "/snapshot/create", body(`{"snapshot_path":"/tmp/s","mem_file_path":"/tmp/m"}`)}, "pause it first"},
		{"load after configuring", []req{bootSource}, req{"PUT", "/snapshot/load", body(`{"snapshot_path":"/tmp/s","mem_backend":{"backend_type":"File","backend_path":"/tmp/m"}}`)}, "after configuring boot-specific resources"},
		{"load with both mem fields", nil, req{"PUT", "/snapshot/load", body(`{"snapshot_path":"/tmp/s","mem_file_path":"/tmp/m","mem_backend":{"backend_type":"File","backend_path":"/tmp/m"}}`)}, "Exactly one of"},
		{"stale vsock file", nil, req{"PUT", "/vsock", body(`{"guest_cid":3,"uds_path":"` + stale + `"}`)}, "address already in use"},
		{"metrics twice", []req{putMetrics}, putMetrics, "Reinitialization of metrics"},
		{"second root drive", []req{{"PUT", "/drives/a", body(`{"drive_id":"a","is_root_device":true,"is_read_only":false,"path_on_host":"` + disk + `"}`)}},
			req{"PUT", "/drives/b", body(`{"drive_id":"b","is_root_device":true,"is_read_only":false,"path_on_host":"` + disk + `"}`)}, "root block device already exists"},
		{"bad MAC", nil, req{"PUT", "/network-interfaces/eth0", body(`{"iface_id":"eth0","host_dev_name":"tap0","guest_mac":"06:00:0a"}`)}, "Invalid guest MAC"},
		{"odd vCPUs with SMT", nil, req{"PUT", "/machine-config", body(`{"vcpu_count":3,"mem_size_mib":128,"smt":true}`)}, "SMT"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			srv := Start(t, spec, Options{})
			c := newRawClient(t, srv.SocketPath())
			for _, r := range tt.setup {
				if code, b := c.do(r); code != http.StatusNoContent {
					t.Fatalf("setup %s %s: got %d %s, want 204", r.method, r.path, code, b)
				}
			}
			code, b := c.do(tt.bad)
			if code != http.StatusBadRequest {
				t.Fatalf("got %d %s, want 400", code, b)
			}
			var fault struct {
				FaultMessage string `json:"fault_message"`
			}
			dec := json.NewDecoder(bytes.NewReader(b))
			dec.DisallowUnknownFields()
			if err := dec.Decode(&fault); err != nil {
				t.Fatalf("400 body %q: %v; want {\"fault_message\": ...}", b, err)
			}
			if !strings.Contains(fault.FaultMessage, tt.wantFault) {
				t.Errorf("fault: got %q, want it to contain %q", fault.FaultMessage, tt.wantFault)
			}
			recs := srv.Records()
			if last := recs[len(recs)-1]; !last.Rejected() || last.Fault != fault.FaultMessage {
				t.Errorf("record: got %+v, want the refusal recorded", last)
			}
			for _, r := range recs {
				if len(r.ResponseViolations) > 0 {
					t.Errorf("%s: the server's own answer breaks the spec: %v", r.Call(), r.ResponseViolations)
				}
			}
		})
	}
}

func TestServerAnswersAsTheSpecSays(t *testing.T) {
	spec := MustSpec(t, SpecV1161)
	srv := Start(t, spec, Options{InstanceID: "vm-1"})
	c := newRawClient(t, srv.SocketPath())
	kernel, _ := files(t)

	code, b := c.do(req{"GET", "/", nil})
	if code != http.StatusOK {
		t.Fatalf("GET /: got %d %s", code, b)
	}
	var info map[string]any
	if err := json.Unmarshal(b, &info); err != nil {
		t.Fatal(err)
	}
	if info["id"] != "vm-1" || info["state"] != StateNotStarted || info["vmm_version"] != "1.16.1" {
		t.Errorf("GET /: got %v", info)
	}
	if code, b := c.do(req{"PUT", "/machine-config", body(`{"vcpu_count":2,"mem_size_mib":256}`)}); code != http.StatusNoContent || len(b) != 0 {
		t.Errorf("PUT: got %d %q, want 204 and no body", code, b)
	}
	if _, b := c.do(req{"GET", "/machine-config", nil}); !strings.Contains(string(b), `"vcpu_count":2`) || !strings.Contains(string(b), `"mem_size_mib":256`) {
		t.Errorf("GET /machine-config: got %s", b)
	}
	if _, b := c.do(req{"GET", "/version", nil}); string(b) != `{"firecracker_version":"1.16.1"}` {
		t.Errorf("GET /version: got %s", b)
	}
	c.do(req{"PUT", "/boot-source", body(`{"kernel_image_path":"` + kernel + `"}`)})
	c.do(req{"PUT", "/actions", body(`{"action_type":"InstanceStart"}`)})
	if got := srv.State(); got != StateRunning {
		t.Errorf("state: got %q, want %q", got, StateRunning)
	}
	CheckClean(t, srv.Records())
	want := []string{"GET /", "PUT /machine-config", "GET /machine-config", "GET /version", "PUT /boot-source", "PUT /actions"}
	if got := srv.Calls(); strings.Join(got, ",") != strings.Join(want, ",") {
		t.Errorf("calls: got %v, want %v", got, want)
	}
}

func TestJournal(t *testing.T) {
	spec := MustSpec(t, SpecV1161)
	p := filepath.Join(t.TempDir(), "journal")
	f, err := os.Create(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	srv := Start(t, spec, Options{Journal: f})
	c := newRawClient(t, srv.SocketPath())
	c.do(req{"GET", "/version", nil})
	c.do(req{"PUT", "/machine-config", body(`{"vcpu_count":1}`)})
	recs, err := ReadJournal(p)
	if err != nil {
		t.Fatal(err)
	}
	if len(recs) != 2 || recs[0].Call() != "GET /version" || recs[0].Status != 200 || !recs[1].Rejected() {
		t.Errorf("journal: got %+v", recs)
	}
}
