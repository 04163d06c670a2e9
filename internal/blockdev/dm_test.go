package blockdev

import (
	"context"
	"os"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"testing"
)

func TestParseDMList(t *testing.T) {
	tests := []struct {
		name, out string
		want      []string
	}{
		{"none", "No devices found\n", nil},
		{"empty", "", nil},
		{"colon form", "banger-ab12\t(253:1)\nbanger-ab12-origin\t(253:0)\n", []string{"banger-ab12", "banger-ab12-origin"}},
		{"comma form", "vg0-root\t(253, 0)\n", []string{"vg0-root"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := parseDMList(tt.out); !reflect.DeepEqual(got, tt.want) {
				t.Errorf("parseDMList(%q) = %q, want %q", tt.out, got, tt.want)
			}
		})
	}
}

func TestValidateDMName(t *testing.T) {
	for _, ok := range []string{"banger-0123abcd", "banger-x-origin", "a.b+c_d"} {
		if err := ValidateDMName(ok); err != nil {
			t.Errorf("ValidateDMName(%q) = %v, want nil", ok, err)
		}
	}
	for _, bad := range []string{"", "-lead", "a/b", "../x", "a b", "a\nb", strings.Repeat("x", 128)} {
		if err := ValidateDMName(bad); err == nil {
			t.Errorf("ValidateDMName(%q) = nil, want an error", bad)
		}
	}
}

// DMAvailable must say why when device-mapper is missing, as on machines without it.
func TestDMAvailable(t *testing.T) {
	err := DMAvailable(context.Background())
	if _, statErr := os.Stat(dmControl); statErr != nil {
		if err == nil || !strings.Contains(err.Error(), dmControl) {
			t.Fatalf("DMAvailable() = %v, want an error naming %s", err, dmControl)
		}
		t.Logf("device-mapper is absent here, as reported: %v", err)
		return
	}
	t.Logf("device-mapper present: DMAvailable() = %v", err)
}

// A real dm device over a real loop device, where the kernel has device-mapper.
func TestDMCreateRemove(t *testing.T) {
	requireLoop(t)
	ctx := context.Background()
	if err := DMAvailable(ctx); err != nil {
		t.Skipf("skipped: %v", err)
	}
	path := filepath.Join(testDir(t), "dm.img")
	want := patternFile(t, path, 1<<20)
	dev, err := LoopAttach(ctx, path, true)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = LoopDetach(ctx, dev) })
	// Not banger's prefix: a disk-layer Reap running at the same time must not touch it.
	name := "bangertest-blockdev-" + strconv.Itoa(os.Getpid())
	mapper, err := DMCreate(ctx, name, "0 2048 linear "+dev+" 0\n")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = DMRemove(ctx, name) })
	got, err := os.ReadFile(mapper)
	if err != nil {
		t.Fatal(err)
	}
	if string(got) != string(want) {
		t.Errorf("%s does not read as its loop's backing file", mapper)
	}
	names, err := DMList(ctx)
	if err != nil || !contains(names, name) {
		t.Errorf("DMList() = %q, %v; want it to hold %s", names, err, name)
	}
	if err := DMRemove(ctx, name); err != nil {
		t.Fatal(err)
	}
	if err := DMRemove(ctx, name); err != nil {
		t.Errorf("second remove: %v, want nil", err)
	}
	if names, _ := DMList(ctx); contains(names, name) {
		t.Errorf("%s still listed after remove", name)
	}
}
