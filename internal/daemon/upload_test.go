package daemon

import (
	"archive/tar"
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestExtractLayoutRefusesWhatALayoutDoesNotHold: an uploaded OCI layout is a tar
// from the caller; only a layout's own names, as directories and regular files, are
// written, and nothing lands outside the staging directory.
func TestExtractLayoutRefusesWhatALayoutDoesNotHold(t *testing.T) {
	blob := "blobs/sha256/" + strings.Repeat("ab", 32)
	type entry struct {
		name string
		typ  byte
		link string
	}
	for _, tt := range []struct {
		name    string
		entries []entry
		want    string // "" means accepted
	}{
		{"a layout", []entry{{"oci-layout", tar.TypeReg, ""}, {"index.json", tar.TypeReg, ""}, {"blobs/", tar.TypeDir, ""}, {"blobs/sha256/", tar.TypeDir, ""}, {blob, tar.TypeReg, ""}}, ""},
		{"escape with ..", []entry{{"../../etc/passwd", tar.TypeReg, ""}}, "not part of an OCI image layout"},
		{"absolute path", []entry{{"/etc/passwd", tar.TypeReg, ""}}, "not part of an OCI image layout"},
		{"other file", []entry{{"blobs/sha256/notahash", tar.TypeReg, ""}}, "not part of an OCI image layout"},
		{"symlink", []entry{{"index.json", tar.TypeSymlink, "/etc/shadow"}}, "holds only directories and files"},
		{"hard link", []entry{{"index.json", tar.TypeLink, "oci-layout"}}, "holds only directories and files"},
		{"device", []entry{{"oci-layout", tar.TypeChar, ""}}, "holds only directories and files"},
		{"duplicate", []entry{{"oci-layout", tar.TypeReg, ""}, {"oci-layout", tar.TypeReg, ""}}, "exists"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			var b bytes.Buffer
			tw := tar.NewWriter(&b)
			for _, e := range tt.entries {
				h := &tar.Header{Name: e.name, Typeflag: e.typ, Mode: 0o644, Linkname: e.link}
				if e.typ == tar.TypeReg {
					h.Size = 2
				}
				if err := tw.WriteHeader(h); err != nil {
					t.Fatal(err)
				}
				if e.typ == tar.TypeReg {
					tw.Write([]byte("{}"))
				}
			}
			tw.Close()
			parent := t.TempDir()
			dir := filepath.Join(parent, "input")
			err := extractLayout(context.Background(), &b, dir)
			if tt.want == "" {
				if err != nil {
					t.Fatalf("extractLayout = %v, want it accepted", err)
				}
				if _, err := os.Stat(filepath.Join(dir, blob)); err != nil {
					t.Errorf("blob not extracted: %v", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("extractLayout = %v, want an error containing %q", err, tt.want)
			}
			// Nothing outside the staging directory.
			ents, _ := os.ReadDir(parent)
			if len(ents) != 1 || ents[0].Name() != "input" {
				t.Errorf("parent holds %v, want only input/", ents)
			}
		})
	}
}
