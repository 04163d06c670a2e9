// Package imagetest builds the inputs image tests need (tar layers with
// every kind of entry, hostile ones included) and checks what came out.
package imagetest

import (
	"archive/tar"
	"bytes"
	"io"
	"os/exec"
	"testing"
	"time"

	"banger/internal/image/ext4"
)

// Entry is one tar entry. Zero fields get the usual values: Mode 0644 for
// files (0755 for directories), owner root, a fixed time.
type Entry struct {
	Name     string
	Type     byte // tar.TypeReg when zero
	Body     string
	Size     int64 // for huge sparse-looking entries: a size with Reader as the body
	Reader   io.Reader
	Mode     int64
	UID, GID int
	Linkname string
	Major    int64
	Minor    int64
	Xattrs   map[string]string
}

// EpochUnix is the modification time of every entry, in Unix seconds.
const EpochUnix = 1_600_000_000

// Tar renders entries as a PAX tar stream.
func Tar(t testing.TB, entries ...Entry) []byte {
	t.Helper()
	var buf bytes.Buffer
	WriteTar(t, &buf, entries...)
	return buf.Bytes()
}

// WriteTar writes entries as a PAX tar stream to w.
func WriteTar(t testing.TB, w io.Writer, entries ...Entry) {
	t.Helper()
	tw := tar.NewWriter(w)
	for _, e := range entries {
		hdr := &tar.Header{
			Name:     e.Name,
			Typeflag: e.Type,
			Mode:     e.Mode,
			Uid:      e.UID,
			Gid:      e.GID,
			Linkname: e.Linkname,
			Devmajor: e.Major,
			Devminor: e.Minor,
			ModTime:  time.Unix(EpochUnix, 0),
			Format:   tar.FormatPAX,
		}
		if hdr.Typeflag == 0 {
			hdr.Typeflag = tar.TypeReg
		}
		if hdr.Mode == 0 {
			hdr.Mode = 0o644
			if hdr.Typeflag == tar.TypeDir {
				hdr.Mode = 0o755
			}
		}
		if len(e.Xattrs) > 0 {
			hdr.PAXRecords = map[string]string{}
			for k, v := range e.Xattrs {
				hdr.PAXRecords["SCHILY.xattr."+k] = v
			}
		}
		body := e.Reader
		if hdr.Typeflag == tar.TypeReg {
			hdr.Size = int64(len(e.Body))
			if e.Reader != nil {
				hdr.Size = e.Size
			} else {
				body = bytes.NewReader([]byte(e.Body))
			}
		}
		if err := tw.WriteHeader(hdr); err != nil {
			t.Fatalf("tar header %q: %v", e.Name, err)
		}
		if body != nil {
			if _, err := io.Copy(tw, body); err != nil {
				t.Fatalf("tar body %q: %v", e.Name, err)
			}
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
}

// Tools returns the e2fsprogs tools, skipping the test if they are missing.
func Tools(t testing.TB) ext4.Tools {
	t.Helper()
	tools, err := ext4.FindTools()
	if err != nil {
		t.Skipf("needs e2fsprogs: %v", err)
	}
	return tools
}

// Fsck fails the test unless `e2fsck -fn` passes the image.
func Fsck(t testing.TB, tools ext4.Tools, image string) {
	t.Helper()
	out, err := exec.Command(tools.E2fsck, "-fn", image).CombinedOutput()
	if err != nil {
		t.Fatalf("e2fsck -fn %s: %v\n%s", image, err, out)
	}
}
