package fctest

import (
	"strings"
	"testing"
)

func TestLoadSpecs(t *testing.T) {
	for _, tt := range []struct{ file, version string }{
		{SpecV1161, "1.16.1"},
		{SpecMain1170, "1.17.0-dev"},
	} {
		t.Run(tt.file, func(t *testing.T) {
			s := MustSpec(t, tt.file)
			if s.Version != tt.version {
				t.Errorf("version: got %q, want %q", s.Version, tt.version)
			}
			for _, want := range []struct{ method, path, id string }{
				{"GET", "/", "describeInstance"},
				{"PUT", "/machine-config", "putMachineConfiguration"},
				{"PUT", "/drives/{drive_id}", "putGuestDriveByID"},
				{"PUT", "/snapshot/load", "loadSnapshot"},
				{"PATCH", "/vm", "patchVm"},
			} {
				op, ok := s.Operation(want.method, want.path)
				if !ok || op.ID != want.id {
					t.Errorf("%s %s: got %v, want operation %s", want.method, want.path, op, want.id)
				}
			}
			if n := len(s.Operations()); n < 30 {
				t.Errorf("got %d operations, want the whole API (30+)", n)
			}
		})
	}
}

func TestParseSpecRefusesUnknownKeywords(t *testing.T) {
	for name, doc := range map[string]string{
		"pattern in a schema": `swagger: "2.0"
info: {version: x}
paths: {}
definitions:
  A: {type: string, pattern: "^a$"}`,
		"oneOf": `swagger: "2.0"
info: {version: x}
paths: {}
definitions:
  A: {oneOf: [{type: string}]}`,
		"query parameter": `swagger: "2.0"
info: {version: x}
paths:
  /a:
    get:
      parameters: [{name: q, in: query, type: string}]
      responses: {200: {description: ok}}
definitions: {}`,
		"dangling ref": `swagger: "2.0"
info: {version: x}
paths: {}
definitions:
  A: {type: object, properties: {b: {$ref: "#/definitions/B"}}}`,
		"swagger 3": `openapi: "3.0.0"`,
	} {
		t.Run(name, func(t *testing.T) {
			if _, err := ParseSpec([]byte(doc)); err == nil {
				t.Fatal("got nil error, want the spec refused")
			}
		})
	}
}

func TestMatch(t *testing.T) {
	s := MustSpec(t, SpecV1161)
	for _, tt := range []struct {
		method, path string
		wantOp       string
		wantParams   map[string]string
		wantErr      error
	}{
		{"GET", "/", "describeInstance", nil, nil},
		{"PUT", "/drives/rootfs", "putGuestDriveByID", map[string]string{"drive_id": "rootfs"}, nil},
		{"PATCH", "/network-interfaces/eth0", "patchGuestNetworkInterfaceByID", map[string]string{"iface_id": "eth0"}, nil},
		{"PUT", "/snapshot/create", "createSnapshot", nil, nil},
		{"GET", "/balloon/statistics", "describeBalloonStats", nil, nil},
		{"PUT", "/drives/", "", nil, errNoPath},
		{"PUT", "/drives/a/b", "", nil, errNoPath},
		{"GET", "/nope", "", nil, errNoPath},
		{"PATCH", "/vsock", "", nil, errNoMethod},
		{"DELETE", "/drives/x", "", nil, errNoMethod},
	} {
		t.Run(tt.method+" "+tt.path, func(t *testing.T) {
			op, params, err := s.match(tt.method, tt.path)
			if tt.wantErr != nil {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr.Error()) {
					t.Fatalf("got err %v, want %v", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if op.ID != tt.wantOp {
				t.Errorf("got %s, want %s", op.ID, tt.wantOp)
			}
			for k, v := range tt.wantParams {
				if params[k] != v {
					t.Errorf("param %s: got %q, want %q", k, params[k], v)
				}
			}
		})
	}
}

func TestValidateJSON(t *testing.T) {
	s := MustSpec(t, SpecV1161)
	def := func(name string) *Schema { return &Schema{Ref: "#/definitions/" + name} }
	for _, tt := range []struct {
		name    string
		schema  string
		body    string
		wantErr string // "" means valid
	}{
		{"machine ok", "MachineConfiguration", `{"vcpu_count":2,"mem_size_mib":512}`, ""},
		{"machine all fields", "MachineConfiguration", `{"vcpu_count":2,"mem_size_mib":512,"smt":false,"track_dirty_pages":true,"huge_pages":"None","cpu_template":"None"}`, ""},
		{"unknown field", "MachineConfiguration", `{"vcpu_count":2,"mem_size_mib":512,"vcpus":2}`, `unknown field "vcpus"`},
		{"missing required", "MachineConfiguration", `{"vcpu_count":2}`, `missing required field "mem_size_mib"`},
		{"string for integer", "MachineConfiguration", `{"vcpu_count":"2","mem_size_mib":512}`, "want an integer, got a string"},
		{"fraction for integer", "MachineConfiguration", `{"vcpu_count":1.5,"mem_size_mib":512}`, "want an integer"},
		{"below minimum", "MachineConfiguration", `{"vcpu_count":0,"mem_size_mib":512}`, "below the minimum 1"},
		{"above maximum", "MachineConfiguration", `{"vcpu_count":33,"mem_size_mib":512}`, "above the maximum 32"},
		{"enum via ref", "MachineConfiguration", `{"vcpu_count":1,"mem_size_mib":512,"cpu_template":"T9"}`, `"T9" is not one of`},
		{"boolean", "Drive", `{"drive_id":"a","is_root_device":"yes"}`, "want a boolean"},
		{"null is not a string", "Drive", `{"drive_id":null,"is_root_device":true}`, "want a string, got null"},
		{"nested ref", "Drive", `{"drive_id":"a","is_root_device":true,"rate_limiter":{"bandwidth":{"size":1,"refill_time":-1}}}`, "body.rate_limiter.bandwidth.refill_time: -1 is below the minimum 0"},
		{"nested unknown", "Drive", `{"drive_id":"a","is_root_device":true,"rate_limiter":{"iops":{}}}`, `unknown field "iops"`},
		{"int64 overflow", "TokenBucket", `{"size":9223372036854775808,"refill_time":1}`, "does not fit int64"},
		{"array items", "SnapshotLoadParams", `{"snapshot_path":"s","network_overrides":[{"iface_id":"eth0"}]}`, `body.network_overrides[0]: missing required field "host_dev_name"`},
		{"array type", "SnapshotLoadParams", `{"snapshot_path":"s","network_overrides":{}}`, "want an array"},
		{"mtu bounds", "NetworkInterface", `{"iface_id":"e","host_dev_name":"t","mtu":67}`, "below the minimum 68"},
		{"logger Off is a string", "Logger", `{"level":"Off"}`, ""},
		{"free-form object", "MmdsContentsObject", `{"anything":{"goes":[1,2]}}`, ""},
		{"not an object", "Vm", `["Paused"]`, "want an object"},
		{"trailing data", "Vm", `{"state":"Paused"}{}`, "trailing data"},
		{"not JSON", "Vm", `state=Paused`, "not JSON"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			errs := s.ValidateJSON(def(tt.schema), []byte(tt.body))
			got := strings.Join(errs, "; ")
			switch {
			case tt.wantErr == "" && len(errs) > 0:
				t.Errorf("got %s, want valid", got)
			case tt.wantErr != "" && !strings.Contains(got, tt.wantErr):
				t.Errorf("got %q, want an error containing %q", got, tt.wantErr)
			}
		})
	}
}

func TestDiffOperation(t *testing.T) {
	old, cur := MustSpec(t, SpecV1161), MustSpec(t, SpecMain1170)
	for _, tt := range []struct {
		method, path string
		want         []string // lines that must be present
		none         bool     // no difference at all
	}{
		{"PUT", "/machine-config", []string{"PUT /machine-config body.huge_pages: type=string enum=[None 2M] → type=string enum=[None Transparent 2M]"}, false},
		{"PUT", "/metrics", []string{"PUT /metrics body.emit_id: added (type=boolean)", "PUT /metrics body.properties{}: added (type=string)"}, false},
		{"PUT", "/snapshot/load", []string{"PUT /snapshot/load body.huge_pages: added"}, false},
		{"PUT", "/boot-source", nil, true},
		{"PUT", "/vsock", nil, true},
	} {
		t.Run(tt.method+" "+tt.path, func(t *testing.T) {
			got := DiffOperation(old, cur, tt.method, tt.path)
			if tt.none && len(got) > 0 {
				t.Errorf("got %q, want no difference", got)
			}
			joined := strings.Join(got, "\n")
			for _, w := range tt.want {
				if !strings.Contains(joined, w) {
					t.Errorf("got\n%s\nwant a line containing %q", joined, w)
				}
			}
		})
	}
	if got := DiffOperation(old, old, "PUT", "/nope"); len(got) != 1 || !strings.Contains(got[0], "in neither") {
		t.Errorf("unknown operation: got %q", got)
	}
}
