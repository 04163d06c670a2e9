package firecracker_test

import (
	"reflect"
	"strings"
	"testing"

	"banger/internal/vmm/firecracker"
	"banger/internal/vmm/firecracker/fctest"
)

// TestRequestTypesMatchSpec holds the wire types' json tags to the spec: every
// field the client can send or read is named by the spec's definition, every
// field the spec requires is there and never omitempty.
func TestRequestTypesMatchSpec(t *testing.T) {
	spec := fctest.MustSpec(t, fctest.SpecV1161)
	for _, tt := range []struct {
		v   any
		def string
	}{
		{firecracker.MachineConfig{}, "MachineConfiguration"},
		{firecracker.BootSource{}, "BootSource"},
		{firecracker.Drive{}, "Drive"},
		{firecracker.NetworkInterface{}, "NetworkInterface"},
		{firecracker.Vsock{}, "Vsock"},
		{firecracker.Logger{}, "Logger"},
		{firecracker.Metrics{}, "Metrics"},
		{firecracker.InstanceActionInfo{}, "InstanceActionInfo"},
		{firecracker.VM{}, "Vm"},
		{firecracker.SnapshotCreateParams{}, "SnapshotCreateParams"},
		{firecracker.SnapshotLoadParams{}, "SnapshotLoadParams"},
		{firecracker.MemoryBackend{}, "MemoryBackend"},
		{firecracker.NetworkOverride{}, "NetworkOverride"},
		{firecracker.VsockOverride{}, "VsockOverride"},
		{firecracker.InstanceInfo{}, "InstanceInfo"},
		{firecracker.FirecrackerVersion{}, "FirecrackerVersion"},
	} {
		typ := reflect.TypeOf(tt.v)
		t.Run(typ.Name(), func(t *testing.T) {
			fields, ok := spec.Definition(tt.def)
			if !ok {
				t.Fatalf("the spec has no definition %s", tt.def)
			}
			have := map[string]bool{}
			for i := 0; i < typ.NumField(); i++ {
				tag := typ.Field(i).Tag.Get("json")
				name, opts, _ := strings.Cut(tag, ",")
				if name == "" || name == "-" {
					t.Errorf("field %s has no json name", typ.Field(i).Name)
					continue
				}
				have[name] = true
				required, named := fields[name]
				switch {
				case !named:
					t.Errorf("field %q is not in the spec's %s: Firecracker would refuse it", name, tt.def)
				case required && strings.Contains(opts, "omitempty"):
					t.Errorf("field %q is required by %s but omitempty", name, tt.def)
				}
			}
			for name, required := range fields {
				if required && !have[name] {
					t.Errorf("the spec's %s requires %q; the type lacks it", tt.def, name)
				}
			}
		})
	}
}

// TestSequencesAgainstNextSpec replays every sequence against the spec of
// Firecracker's main branch (1.17.0-dev) and reports, without failing, which
// calls it would refuse and how the operations banger uses changed.
func TestSequencesAgainstNextSpec(t *testing.T) {
	base := fctest.MustSpec(t, fctest.SpecV1161)
	next := fctest.MustSpec(t, fctest.SpecMain1170)
	used := map[string]*fctest.Operation{}
	refused := 0
	for _, seq := range sequences {
		t.Run(seq.name, func(t *testing.T) {
			h := newHarness(t, fctest.SpecMain1170)
			if err := seq.run(testCtx(t), h); err != nil {
				t.Logf("1.17.0-dev: sequence %s fails: %v", seq.name, err)
			}
			for _, r := range h.records() {
				if r.Rejected() {
					t.Logf("1.17.0-dev would refuse %s: %s", r.Call(), r.Fault)
					refused++
				}
				for _, op := range next.Operations() {
					if op.ID == r.Operation {
						used[op.Method+" "+op.Path] = op
					}
				}
			}
		})
	}
	changed := 0
	for _, op := range next.Operations() {
		if used[op.Method+" "+op.Path] == nil {
			continue
		}
		for _, d := range fctest.DiffOperation(base, next, op.Method, op.Path) {
			t.Logf("1.16.1 → 1.17.0-dev: %s", d)
			changed++
		}
	}
	t.Logf("1.17.0-dev: %d calls refused; %d operations used, %d schema differences in them", refused, len(used), changed)
	if len(used) == 0 {
		t.Error("no operation recorded: the replay did not run")
	}
}
