package store

import (
	"context"
	"encoding/json"
	"errors"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

const otherImageID = "sha256:2222222222222222222222222222222222222222222222222222222222222222"

func TestImages(t *testing.T) {
	s := newStore(t)
	ctx := context.Background()

	deb := Image{ID: testImageID, Path: "/images/deb.ext4", SizeBytes: 100, Tags: []string{"debian:12", "debian:latest"},
		Kind: "registry", Source: "docker.io/library/debian:12", AgentVersion: "v0.1.0", Meta: json.RawMessage(`{"layers":3}`)}
	alp := Image{ID: otherImageID, Path: "/images/alp.ext4", SizeBytes: 50}
	for _, img := range []Image{deb, alp} {
		if err := s.PutImage(ctx, img); err != nil {
			t.Fatalf("PutImage(%s): %v", img.ID, err)
		}
	}

	lookups := []struct {
		ref     string
		wantID  string
		wantErr error
	}{
		{testImageID, testImageID, nil},
		{"debian:12", testImageID, nil},
		{"debian:latest", testImageID, nil},
		{otherImageID, otherImageID, nil},
		{"alpine", "", ErrNotFound},
		{"sha256:3333333333333333333333333333333333333333333333333333333333333333", "", ErrNotFound},
	}
	for _, l := range lookups {
		got, err := s.GetImage(ctx, l.ref)
		if !errors.Is(err, l.wantErr) || got.ID != l.wantID {
			t.Errorf("GetImage(%q): got %q, %v; want %q, %v", l.ref, got.ID, err, l.wantID, l.wantErr)
		}
	}
	got, _ := s.GetImage(ctx, "debian:12")
	if got.Path != deb.Path || got.SizeBytes != deb.SizeBytes || got.CreatedAt.IsZero() {
		t.Errorf("GetImage: got %+v, want path %s size %d and a creation time", got, deb.Path, deb.SizeBytes)
	}
	if got.Kind != deb.Kind || got.Source != deb.Source || got.AgentVersion != deb.AgentVersion || string(got.Meta) != string(deb.Meta) {
		t.Errorf("provenance: got kind %q source %q agent %q meta %s; want %q %q %q %s", got.Kind, got.Source, got.AgentVersion, got.Meta, deb.Kind, deb.Source, deb.AgentVersion, deb.Meta)
	}
	if other, _ := s.GetImage(ctx, otherImageID); string(other.Meta) != "{}" {
		t.Errorf("meta of an image stored without one = %s, want {}", other.Meta)
	}
	if diff := cmp.Diff([]string{"debian:12", "debian:latest"}, got.Tags); diff != "" {
		t.Errorf("tags (-want +got):\n%s", diff)
	}

	// Moving a tag, tagging by tag, untagging.
	if err := s.TagImage(ctx, "debian:latest", otherImageID); err != nil {
		t.Fatal(err)
	}
	if err := s.TagImage(ctx, "alpine", "debian:latest"); err != nil {
		t.Fatal(err)
	}
	if err := s.UntagImage(ctx, "debian:12"); err != nil {
		t.Fatal(err)
	}
	if err := s.UntagImage(ctx, "debian:12"); !errors.Is(err, ErrNotFound) {
		t.Errorf("second UntagImage: got %v, want ErrNotFound", err)
	}
	if err := s.TagImage(ctx, "x", "nope"); !errors.Is(err, ErrNotFound) {
		t.Errorf("TagImage to a missing image: got %v, want ErrNotFound", err)
	}
	imgs, err := s.ListImages(ctx)
	if err != nil {
		t.Fatal(err)
	}
	gotTags := map[string][]string{}
	for _, img := range imgs {
		gotTags[img.ID] = img.Tags
	}
	wantTags := map[string][]string{testImageID: nil, otherImageID: {"alpine", "debian:latest"}}
	if diff := cmp.Diff(wantTags, gotTags); diff != "" {
		t.Errorf("tags after moves (-want +got):\n%s", diff)
	}

	// Put again updates path and size, keeps the creation time.
	before, _ := s.GetImage(ctx, otherImageID)
	if err := s.PutImage(ctx, Image{ID: otherImageID, Path: "/images/alp2.ext4", SizeBytes: 60}); err != nil {
		t.Fatal(err)
	}
	after, _ := s.GetImage(ctx, otherImageID)
	if after.Path != "/images/alp2.ext4" || after.SizeBytes != 60 || !after.CreatedAt.Equal(before.CreatedAt) || len(after.Tags) != 2 {
		t.Errorf("re-put image: got %+v, want new path and size, old creation time and tags", after)
	}

	// Delete: refused while a VM uses it, then removes the image and its tags.
	if err := s.PutKernel(ctx, Kernel{ID: testKernelID, Name: "k", Path: "/k"}); err != nil {
		t.Fatal(err)
	}
	vm := testVM("0000aaaa", "dev")
	vm.ImageID = otherImageID
	if err := s.CreateVM(ctx, vm); err != nil {
		t.Fatal(err)
	}
	err = s.DeleteImage(ctx, otherImageID)
	if !errors.Is(err, ErrInUse) || !strings.Contains(err.Error(), "used by VM(s) dev") {
		t.Errorf("DeleteImage in use: got %v, want ErrInUse naming dev", err)
	}
	if err := s.DeleteVM(ctx, vm.ID); err != nil {
		t.Fatal(err)
	}
	if err := s.DeleteImage(ctx, otherImageID); err != nil {
		t.Fatalf("DeleteImage: %v", err)
	}
	if _, err := s.GetImage(ctx, "alpine"); !errors.Is(err, ErrNotFound) {
		t.Errorf("tag of a deleted image: got %v, want ErrNotFound", err)
	}
	if err := s.DeleteImage(ctx, otherImageID); !errors.Is(err, ErrNotFound) {
		t.Errorf("second DeleteImage: got %v, want ErrNotFound", err)
	}
}

func TestPutImageInvalid(t *testing.T) {
	s := newStore(t)
	tests := []struct {
		name string
		img  Image
		want string
	}{
		{"not a digest", Image{ID: "debian", Path: "/p"}, "must be a digest"},
		{"short digest", Image{ID: "sha256:abc", Path: "/p"}, "must be a digest"},
		{"empty path", Image{ID: testImageID}, "empty path"},
		{"negative size", Image{ID: testImageID, Path: "/p", SizeBytes: -1}, "negative size"},
		{"digest as tag", Image{ID: testImageID, Path: "/p", Tags: []string{otherImageID}}, "looks like a digest"},
		{"empty tag", Image{ID: testImageID, Path: "/p", Tags: []string{""}}, "empty image tag"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := s.PutImage(context.Background(), tt.img)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("PutImage: got %v, want an error containing %q", err, tt.want)
			}
		})
	}
	if imgs, _ := s.ListImages(context.Background()); len(imgs) != 0 {
		t.Errorf("invalid images were stored: %+v", imgs)
	}
}

func TestKernels(t *testing.T) {
	s := newStore(t)
	ctx := context.Background()
	k1 := Kernel{ID: "k1", Name: "vmlinux-6.1", Path: "/kernels/k1", InitrdPath: "/kernels/k1.initrd",
		Version: "6.1.0-56-cloud-amd64", Meta: json.RawMessage(`{"format":"bzImage"}`)}
	k2 := Kernel{ID: "k2", Name: "host", Path: "/boot/vmlinuz"}
	for _, k := range []Kernel{k1, k2} {
		if err := s.PutKernel(ctx, k); err != nil {
			t.Fatalf("PutKernel(%s): %v", k.ID, err)
		}
	}
	for _, ref := range []string{"k1", "vmlinux-6.1"} {
		got, err := s.GetKernel(ctx, ref)
		if err != nil {
			t.Fatalf("GetKernel(%q): %v", ref, err)
		}
		want := k1
		want.CreatedAt = got.CreatedAt
		if diff := cmp.Diff(want, got); diff != "" || got.CreatedAt.IsZero() {
			t.Errorf("GetKernel(%q) (-want +got):\n%s", ref, diff)
		}
	}
	if _, err := s.GetKernel(ctx, "nope"); !errors.Is(err, ErrNotFound) {
		t.Errorf("GetKernel(nope): got %v, want ErrNotFound", err)
	}

	errCases := []struct {
		name    string
		k       Kernel
		wantErr error
		want    string
	}{
		{"name taken", Kernel{ID: "k3", Name: "host", Path: "/p"}, ErrExists, "taken by kernel k2"},
		{"rename onto another", Kernel{ID: "k1", Name: "host", Path: "/p"}, ErrExists, "taken by kernel k2"},
		{"empty id", Kernel{Name: "x", Path: "/p"}, nil, "empty id"},
		{"empty name", Kernel{ID: "x", Path: "/p"}, nil, "empty name"},
		{"empty path", Kernel{ID: "x", Name: "x"}, nil, "empty path"},
	}
	for _, tt := range errCases {
		t.Run(tt.name, func(t *testing.T) {
			err := s.PutKernel(ctx, tt.k)
			if err == nil || (tt.wantErr != nil && !errors.Is(err, tt.wantErr)) || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("PutKernel: got %v, want %v containing %q", err, tt.wantErr, tt.want)
			}
		})
	}

	// Update in place.
	if err := s.PutKernel(ctx, Kernel{ID: "k2", Name: "host-6.1", Path: "/boot/vmlinuz-6.1"}); err != nil {
		t.Fatal(err)
	}
	ks, err := s.ListKernels(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, k := range ks {
		names = append(names, k.Name)
	}
	if diff := cmp.Diff([]string{"vmlinux-6.1", "host-6.1"}, names); diff != "" {
		t.Errorf("ListKernels names (-want +got):\n%s", diff)
	}

	// Delete: refused while a VM boots it.
	if err := s.PutImage(ctx, Image{ID: testImageID, Path: "/i"}); err != nil {
		t.Fatal(err)
	}
	vm := testVM("0000aaaa", "dev")
	vm.KernelID = "k1"
	if err := s.CreateVM(ctx, vm); err != nil {
		t.Fatal(err)
	}
	if err := s.DeleteKernel(ctx, "k1"); !errors.Is(err, ErrInUse) {
		t.Errorf("DeleteKernel in use: got %v, want ErrInUse", err)
	}
	if err := s.DeleteKernel(ctx, "k2"); err != nil {
		t.Errorf("DeleteKernel(k2): %v", err)
	}
	if err := s.DeleteKernel(ctx, "k2"); !errors.Is(err, ErrNotFound) {
		t.Errorf("second DeleteKernel: got %v, want ErrNotFound", err)
	}
}
