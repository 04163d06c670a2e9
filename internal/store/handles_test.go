package store

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
)

func TestHandles(t *testing.T) {
	s := newSeededStore(t)
	ctx := context.Background()
	ids := createVMs(t, s, 3)

	h0 := Handle{
		VMID: ids[0], PID: 4242, PIDStart: 987654321, Tap: "tap-pool-3",
		APISocket: "/run/banger/vms/a.api.sock", AgentSocket: "/run/banger/vms/a.agent.sock",
		VsockPath: "/run/banger/vms/a.vsock", VsockCID: 10002,
		DiskPath: "/state/disks/a.qcow2", DiskStrategy: "qcow2",
	}
	h1 := Handle{VMID: ids[1], Tap: "tap-vm-00000001", VsockCID: 10003}
	for _, h := range []Handle{h0, h1} {
		if err := s.SetHandle(ctx, h); err != nil {
			t.Fatalf("SetHandle(%s): %v", h.VMID, err)
		}
	}
	got, err := s.GetHandle(ctx, ids[0])
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(h0, got, cmpopts.IgnoreFields(Handle{}, "UpdatedAt")); diff != "" {
		t.Errorf("GetHandle mismatch (-want +got):\n%s", diff)
	}
	if got.UpdatedAt.IsZero() {
		t.Error("GetHandle: UpdatedAt not set")
	}

	errCases := []struct {
		name    string
		h       Handle
		wantErr error
		want    string
	}{
		{"tap held by another VM", Handle{VMID: ids[2], Tap: "tap-pool-3"}, ErrExists, "tap tap-pool-3 is held by vm " + ids[0]},
		{"CID held by another VM", Handle{VMID: ids[2], VsockCID: 10003}, ErrExists, "vsock CID 10003 is held by vm " + ids[1]},
		{"missing VM", Handle{VMID: "ffffffff", Tap: "tap-pool-9"}, ErrNotFound, "handle of vm ffffffff"},
	}
	for _, tt := range errCases {
		t.Run(tt.name, func(t *testing.T) {
			err := s.SetHandle(ctx, tt.h)
			if !errors.Is(err, tt.wantErr) || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("SetHandle: got %v, want %v containing %q", err, tt.wantErr, tt.want)
			}
		})
	}
	if err := s.SetHandle(ctx, Handle{VMID: ids[2], PID: -1}); err == nil {
		t.Error("SetHandle with a negative pid: got no error")
	}

	// Replacing a VM's own handle keeps its tap and CID allowed, and replaces every field.
	h0b := Handle{VMID: ids[0], Tap: "tap-pool-3", VsockCID: 10002, DiskPath: "/state/disks/a.img", DiskStrategy: "copy"}
	if err := s.SetHandle(ctx, h0b); err != nil {
		t.Fatalf("SetHandle replacing own handle: %v", err)
	}
	got, _ = s.GetHandle(ctx, ids[0])
	if diff := cmp.Diff(h0b, got, cmpopts.IgnoreFields(Handle{}, "UpdatedAt")); diff != "" {
		t.Errorf("replaced handle mismatch (-want +got):\n%s", diff)
	}

	all, err := s.ListHandles(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var taps []string
	for _, h := range all {
		taps = append(taps, h.Tap)
	}
	if diff := cmp.Diff([]string{"tap-pool-3", "tap-vm-00000001"}, taps); diff != "" {
		t.Errorf("ListHandles taps (-want +got):\n%s", diff)
	}

	for range 2 { // clearing is idempotent
		if err := s.ClearHandle(ctx, ids[0]); err != nil {
			t.Fatalf("ClearHandle: %v", err)
		}
	}
	if _, err := s.GetHandle(ctx, ids[0]); !errors.Is(err, ErrNotFound) {
		t.Errorf("GetHandle after ClearHandle: got %v, want ErrNotFound", err)
	}
	if err := s.SetHandle(ctx, Handle{VMID: ids[2], Tap: "tap-pool-3"}); err != nil {
		t.Errorf("SetHandle with a cleared VM's tap: %v", err)
	}
}
