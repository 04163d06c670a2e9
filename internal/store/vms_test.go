package store

import (
	"context"
	"encoding/json"
	"errors"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestCreateVMInvalid(t *testing.T) {
	s := newSeededStore(t)
	tests := []struct {
		name   string
		mutate func(*VM)
		want   string
	}{
		{"empty id", func(v *VM) { v.ID = "" }, "empty id"},
		{"empty name", func(v *VM) { v.Name = "" }, "empty name"},
		{"no image", func(v *VM) { v.ImageID = "" }, "no image"},
		{"no kernel", func(v *VM) { v.KernelID = "" }, "no kernel"},
		{"unknown state", func(v *VM) { v.State = "dancing" }, `unknown state "dancing"`},
		{"zero cpus", func(v *VM) { v.CPUs = 0 }, "cpus must be positive"},
		{"zero memory", func(v *VM) { v.MemoryMiB = 0 }, "memory must be positive"},
		{"negative disk", func(v *VM) { v.DiskBytes = -1 }, "disk size must not be negative"},
		{"no driver", func(v *VM) { v.Driver = "" }, "no driver"},
		{"bad spec", func(v *VM) { v.Spec = json.RawMessage(`{"env":`) }, "not valid JSON"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			vm := testVM("0000beef", "dev")
			tt.mutate(&vm)
			err := s.CreateVM(context.Background(), vm)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("CreateVM: got %v, want an error containing %q", err, tt.want)
			}
			if vms, _ := s.ListVMs(context.Background()); len(vms) != 0 {
				t.Errorf("an invalid VM was stored: %+v", vms)
			}
		})
	}
}

func TestCreateVMConflicts(t *testing.T) {
	s := newSeededStore(t)
	ctx := context.Background()
	if err := s.CreateVM(ctx, testVM("0000aaaa", "dev")); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name    string
		vm      VM
		wantErr error
		want    string
	}{
		{"same name", testVM("0000bbbb", "dev"), ErrExists, `vm "dev": the name is taken by vm 0000aaaa`},
		{"same name other case", testVM("0000bbbb", "DEV"), ErrExists, "the name is taken"},
		{"same id", testVM("0000aaaa", "other"), ErrExists, "vm id 0000aaaa"},
		{"missing image", func() VM { v := testVM("0000bbbb", "x"); v.ImageID = "sha256:nope"; return v }(), ErrNotFound, "image sha256:nope"},
		{"missing kernel", func() VM { v := testVM("0000bbbb", "x"); v.KernelID = "nope"; return v }(), ErrNotFound, "kernel nope"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := s.CreateVM(ctx, tt.vm)
			if !errors.Is(err, tt.wantErr) {
				t.Fatalf("CreateVM: got %v, want %v", err, tt.wantErr)
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Errorf("CreateVM: got %q, want it to contain %q", err, tt.want)
			}
		})
	}
	if vms, _ := s.ListVMs(ctx); len(vms) != 1 {
		t.Errorf("VMs after refused creates: got %d, want 1", len(vms))
	}
}

func TestVMLifecycle(t *testing.T) {
	s := newSeededStore(t)
	ctx := context.Background()

	dev := testVM("0000aaaa", "dev")
	dev.Spec = json.RawMessage(`{"env":{"A":"1"},"ports":[{"host":8080,"guest":80}]}`)
	web := testVM("0000bbbb", "web")
	web.Driver = "firecracker"
	for _, vm := range []VM{dev, web} {
		if err := s.CreateVM(ctx, vm); err != nil {
			t.Fatalf("CreateVM(%s): %v", vm.Name, err)
		}
	}

	gotDev, err := s.GetVM(ctx, "dev")
	if err != nil {
		t.Fatal(err)
	}
	if gotDev.CreatedAt.IsZero() || !gotDev.UpdatedAt.Equal(gotDev.CreatedAt) {
		t.Errorf("timestamps of a new VM: created %v, updated %v; want equal and set", gotDev.CreatedAt, gotDev.UpdatedAt)
	}
	want := dev
	want.CreatedAt, want.UpdatedAt = gotDev.CreatedAt, gotDev.UpdatedAt
	want.Disk = json.RawMessage(`{}`) // no disk recorded yet
	if diff := cmp.Diff(want, gotDev); diff != "" {
		t.Errorf("GetVM(dev) mismatch (-want +got):\n%s", diff)
	}

	// The disk record round-trips and survives (it is the VM's, not the handle's).
	diskRec := json.RawMessage(`{"strategy":"reflink","path":"/d/dev/root.ext4"}`)
	if err := s.SetVMDisk(ctx, dev.ID, diskRec); err != nil {
		t.Fatal(err)
	}
	if err := s.SetVMDisk(ctx, dev.ID, json.RawMessage(`{not json`)); err == nil {
		t.Error("SetVMDisk accepted invalid JSON")
	}
	if err := s.SetVMDisk(ctx, "nope", diskRec); !errors.Is(err, ErrNotFound) {
		t.Errorf("SetVMDisk(missing) = %v, want ErrNotFound", err)
	}
	if got, _ := s.GetVM(ctx, "dev"); string(got.Disk) != string(diskRec) {
		t.Errorf("disk record = %s, want %s", got.Disk, diskRec)
	}
	newSpec := json.RawMessage(`{"timings":{"total_ms":812}}`)
	if err := s.SetVMSpec(ctx, dev.ID, newSpec); err != nil {
		t.Fatal(err)
	}
	if got, _ := s.GetVM(ctx, "dev"); string(got.Spec) != string(newSpec) || string(got.Disk) != string(diskRec) {
		t.Errorf("after SetVMSpec: spec %s disk %s; want %s and the disk kept", got.Spec, got.Disk, newSpec)
	}

	// Lookup by id, by name in another case, and misses.
	lookups := []struct {
		ref, wantID string
	}{
		{"0000aaaa", "0000aaaa"},
		{"WEB", "0000bbbb"},
		{"nope", ""},
	}
	for _, l := range lookups {
		got, err := s.GetVM(ctx, l.ref)
		if l.wantID == "" {
			if !errors.Is(err, ErrNotFound) || !strings.Contains(err.Error(), `no VM named "nope" (banger vm ls lists them)`) {
				t.Errorf("GetVM(%q): got %v, want ErrNotFound naming the VM", l.ref, err)
			}
			continue
		}
		if err != nil || got.ID != l.wantID {
			t.Errorf("GetVM(%q): got id %q, err %v; want id %q", l.ref, got.ID, err, l.wantID)
		}
	}

	// A VM named like another VM's id: the id wins, the name still finds by name.
	shadow := testVM("0000dddd", "0000bbbb")
	if err := s.CreateVM(ctx, shadow); err != nil {
		t.Fatal(err)
	}
	if got, err := s.GetVM(ctx, "0000bbbb"); err != nil || got.ID != "0000bbbb" {
		t.Errorf("GetVM(0000bbbb) with a VM of that name: got id %q, %v; want the id match 0000bbbb", got.ID, err)
	}
	if err := s.DeleteVM(ctx, shadow.ID); err != nil {
		t.Fatal(err)
	}

	all, err := s.ListVMs(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(all) != 2 || all[0].Name != "dev" || all[1].Name != "web" {
		t.Errorf("ListVMs: got %+v, want dev then web", all)
	}
	if all[1].Spec == nil || string(all[1].Spec) != "{}" {
		t.Errorf("empty spec stored as %q, want {}", all[1].Spec)
	}

	if err := s.UpdateVMState(ctx, dev.ID, VMRunning); err != nil {
		t.Fatal(err)
	}
	got, _ := s.GetVM(ctx, dev.ID)
	if got.State != VMRunning || !got.UpdatedAt.After(got.CreatedAt) {
		t.Errorf("after UpdateVMState: state %q updated %v created %v; want running and updated later", got.State, got.UpdatedAt, got.CreatedAt)
	}
	if err := s.UpdateVMState(ctx, dev.ID, "bogus"); err == nil {
		t.Error("UpdateVMState to an unknown state: got no error")
	}
	if err := s.UpdateVMState(ctx, "ffffffff", VMStopped); !errors.Is(err, ErrNotFound) {
		t.Errorf("UpdateVMState of a missing VM: got %v, want ErrNotFound", err)
	}

	if err := s.DeleteVM(ctx, dev.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := s.GetVM(ctx, "dev"); !errors.Is(err, ErrNotFound) {
		t.Errorf("GetVM after delete: got %v, want ErrNotFound", err)
	}
	if err := s.DeleteVM(ctx, dev.ID); !errors.Is(err, ErrNotFound) {
		t.Errorf("second DeleteVM: got %v, want ErrNotFound", err)
	}
	// The name is free again.
	if err := s.CreateVM(ctx, testVM("0000cccc", "dev")); err != nil {
		t.Errorf("CreateVM reusing a deleted VM's name: %v", err)
	}
}

// TestDeleteVMReleasesEverything: the lease and the handle go with the VM, so
// the address and the tap are free for the next VM.
func TestDeleteVMReleasesEverything(t *testing.T) {
	s := newSeededStore(t)
	ctx := context.Background()
	bridge := mustPrefix(t, "10.9.0.1/24")

	addr, err := s.CreateVMWithLease(ctx, testVM("0000aaaa", "dev"), bridge)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.SetHandle(ctx, Handle{VMID: "0000aaaa", Tap: "tap-pool-0", VsockCID: 10002}); err != nil {
		t.Fatal(err)
	}
	if err := s.DeleteVM(ctx, "0000aaaa"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.LeaseOf(ctx, "0000aaaa"); !errors.Is(err, ErrNotFound) {
		t.Errorf("LeaseOf deleted VM: got %v, want ErrNotFound", err)
	}
	if _, err := s.GetHandle(ctx, "0000aaaa"); !errors.Is(err, ErrNotFound) {
		t.Errorf("GetHandle of deleted VM: got %v, want ErrNotFound", err)
	}

	again, err := s.CreateVMWithLease(ctx, testVM("0000bbbb", "next"), bridge)
	if err != nil {
		t.Fatal(err)
	}
	if again != addr {
		t.Errorf("address after delete: got %s, want the freed %s", again, addr)
	}
	if err := s.SetHandle(ctx, Handle{VMID: "0000bbbb", Tap: "tap-pool-0", VsockCID: 10002}); err != nil {
		t.Errorf("SetHandle reusing the freed tap and CID: %v", err)
	}
}

// TestCreateVMWithLeaseAtomic: when the lease cannot be had, the VM is not created.
func TestCreateVMWithLeaseAtomic(t *testing.T) {
	s := newSeededStore(t)
	ctx := context.Background()
	bridge := mustPrefix(t, "10.9.0.1/30") // one guest address: 10.9.0.2

	if _, err := s.CreateVMWithLease(ctx, testVM("0000aaaa", "one"), bridge); err != nil {
		t.Fatal(err)
	}
	_, err := s.CreateVMWithLease(ctx, testVM("0000bbbb", "two"), bridge)
	if !errors.Is(err, ErrCIDRFull) {
		t.Fatalf("second VM on a /30: got %v, want ErrCIDRFull", err)
	}
	if _, err := s.GetVM(ctx, "two"); !errors.Is(err, ErrNotFound) {
		t.Errorf("VM whose lease failed: GetVM got %v, want ErrNotFound (no half-created VM)", err)
	}
	if _, err := s.CreateVMWithLease(ctx, testVM("0000cccc", "one"), bridge); !errors.Is(err, ErrExists) {
		t.Errorf("duplicate name through CreateVMWithLease: got %v, want ErrExists", err)
	}
}

// TestEmptyLists: listings of an empty store are empty slices, not nil, so the
// API's --json output is [] rather than null.
func TestEmptyLists(t *testing.T) {
	s := newStore(t)
	ctx := context.Background()
	lists := []struct {
		name string
		list func() (any, error)
	}{
		{"vms", func() (any, error) { return s.ListVMs(ctx) }},
		{"handles", func() (any, error) { return s.ListHandles(ctx) }},
		{"leases", func() (any, error) { return s.ListLeases(ctx) }},
		{"images", func() (any, error) { return s.ListImages(ctx) }},
		{"kernels", func() (any, error) { return s.ListKernels(ctx) }},
	}
	for _, l := range lists {
		v, err := l.list()
		if err != nil {
			t.Fatalf("list %s: %v", l.name, err)
		}
		b, err := json.Marshal(v)
		if err != nil {
			t.Fatal(err)
		}
		if string(b) != "[]" {
			t.Errorf("empty %s list marshals as %s, want []", l.name, b)
		}
	}
}
