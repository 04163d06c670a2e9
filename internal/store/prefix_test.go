package store

import (
	"context"
	"errors"
	"strings"
	"testing"
)

// TestIDPrefixes: a unique prefix of at least four hex digits finds a VM, an image
// (with or without "sha256:") or a kernel; a shorter one, a non-hex one or one that
// matches nothing is not found; an ambiguous one names every ID it matches; a name
// or tag wins over a prefix.
func TestIDPrefixes(t *testing.T) {
	s := newSeededStore(t)
	ctx := context.Background()
	for _, vm := range []VM{testVM("a1b2c3d4e5f60718", "one"), testVM("a1b2ffff00000000", "two"), testVM("0123456789abcdef", "a1b2c")} {
		if err := s.CreateVM(ctx, vm); err != nil {
			t.Fatal(err)
		}
	}
	vmTests := []struct {
		ref, wantID string
		err         error
		errHas      []string
	}{
		{ref: "a1b2c3", wantID: "a1b2c3d4e5f60718"},
		{ref: "0123", wantID: "0123456789abcdef"},
		{ref: "a1b2", err: ErrAmbiguous, errHas: []string{`"a1b2" is ambiguous`, "a1b2c3d4e5f60718", "a1b2ffff00000000"}},
		{ref: "a1b2c", wantID: "0123456789abcdef"}, // a name wins over a prefix
		{ref: "a1b", err: ErrNotFound},             // too short to be a prefix
		{ref: "A1B2C3", err: ErrNotFound},          // IDs are lowercase hex
		{ref: "ffff", err: ErrNotFound},
		{ref: "a1b2%", err: ErrNotFound}, // no LIKE wildcards
	}
	for _, tt := range vmTests {
		got, err := s.GetVM(ctx, tt.ref)
		if tt.err != nil {
			if !errors.Is(err, tt.err) {
				t.Errorf("GetVM(%q) = %v, %v; want %v", tt.ref, got.ID, err, tt.err)
			}
			for _, h := range tt.errHas {
				if err == nil || !strings.Contains(err.Error(), h) {
					t.Errorf("GetVM(%q) error %v lacks %q", tt.ref, err, h)
				}
			}
			continue
		}
		if err != nil || got.ID != tt.wantID {
			t.Errorf("GetVM(%q) = %q, %v; want %s", tt.ref, got.ID, err, tt.wantID)
		}
	}

	hexOf := strings.TrimPrefix(testImageID, "sha256:")
	for _, ref := range []string{hexOf[:12], "sha256:" + hexOf[:12]} {
		if img, err := s.GetImage(ctx, ref); err != nil || img.ID != testImageID {
			t.Errorf("GetImage(%q) = %q, %v; want %s", ref, img.ID, err, testImageID)
		}
	}
	if _, err := s.GetImage(ctx, hexOf[:3]); !errors.Is(err, ErrNotFound) {
		t.Errorf("GetImage(3 digits) = %v, want not found", err)
	}
	if err := s.PutKernel(ctx, Kernel{ID: "deadbeef01234567", Name: "hex", Path: "/kernels/hex"}); err != nil {
		t.Fatal(err)
	}
	if err := s.PutKernel(ctx, Kernel{ID: "sha256:beefcafe" + hexOf[8:], Name: "digest", Path: "/kernels/digest"}); err != nil {
		t.Fatal(err)
	}
	for ref, want := range map[string]string{"deadbe": "deadbeef01234567", "beefcafe": "sha256:beefcafe" + hexOf[8:], "sha256:beefca": "sha256:beefcafe" + hexOf[8:]} {
		if k, err := s.GetKernel(ctx, ref); err != nil || k.ID != want {
			t.Errorf("GetKernel(%q) = %q, %v; want %s", ref, k.ID, err, want)
		}
	}
}
