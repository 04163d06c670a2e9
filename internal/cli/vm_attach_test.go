package cli

import (
	"archive/tar"
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestSplitVMPath(t *testing.T) {
	tests := []struct {
		in, vm, path string
		remote       bool
	}{
		{"dev:/etc/hosts", "dev", "/etc/hosts", true},
		{"dev:/", "dev", "/", true},
		{"./file", "", "", false},
		{"/abs/file", "", "", false},
		{"dir/with:colon", "", "", false},
		{":/x", "", "", false},
	}
	for _, tt := range tests {
		vm, p, ok := splitVMPath(tt.in)
		if vm != tt.vm || p != tt.path || ok != tt.remote {
			t.Errorf("splitVMPath(%q) = %q, %q, %v; want %q, %q, %v", tt.in, vm, p, ok, tt.vm, tt.path, tt.remote)
		}
	}
}

func TestAbsRef(t *testing.T) {
	wd, _ := os.Getwd()
	for in, want := range map[string]string{
		"debian:12":            "debian:12",
		"localhost:5000/x:y":   "localhost:5000/x:y",
		"oci:/abs/layout":      "oci:/abs/layout",
		"oci:rel/layout":       "oci:" + filepath.Join(wd, "rel/layout"),
		"./saved.tar":          filepath.Join(wd, "saved.tar"),
		"docker-archive:x.tar": "docker-archive:" + filepath.Join(wd, "x.tar"),
	} {
		if got := absRef(in); got != want {
			t.Errorf("absRef(%q) = %q, want %q", in, got, want)
		}
	}
}

func tarOf(t *testing.T, entries map[string]string) []byte {
	t.Helper()
	var b bytes.Buffer
	tw := tar.NewWriter(&b)
	for name, body := range entries {
		if err := tw.WriteHeader(&tar.Header{Name: name, Mode: 0o644, Size: int64(len(body)), Typeflag: tar.TypeReg}); err != nil {
			t.Fatal(err)
		}
		_, _ = tw.Write([]byte(body))
	}
	_ = tw.Close()
	return b.Bytes()
}

func TestExtractTarRenameAndRefuseEscapes(t *testing.T) {
	dir := t.TempDir()
	if err := extractTar(bytes.NewReader(tarOf(t, map[string]string{"src.txt": "hi"})), dir, "src.txt", "dst.txt"); err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(filepath.Join(dir, "dst.txt")); string(b) != "hi" {
		t.Errorf("renamed file = %q", b)
	}
	outside := filepath.Join(filepath.Dir(dir), "escaped.txt")
	err := extractTar(bytes.NewReader(tarOf(t, map[string]string{"../escaped.txt": "x"})), dir, "x", "")
	if err == nil || !strings.Contains(err.Error(), "escape") && !strings.Contains(err.Error(), "path") {
		t.Errorf("an entry escaping the destination: err = %v, want refused", err)
	}
	if _, err := os.Stat(outside); !os.IsNotExist(err) {
		t.Error("a tar entry wrote outside the destination")
	}
}
