package daemon

import (
	"archive/tar"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path"
	"path/filepath"
	"regexp"

	"banger/internal/api"
	"banger/internal/image/progress"
	"banger/internal/imageservice"
)

// uploadImage takes a local input the CLI read as its caller (see api.ImageUpload):
// the body is staged in a private directory beside the images, converted like the
// path it came from, and removed. bangerd never opens a caller's file itself, so it
// needs no access to the caller's files and lends the caller none of its own.
func (d *Daemon) uploadImage(w http.ResponseWriter, r *http.Request) {
	u, err := api.ParseImageUpload(r.URL.Query())
	if err != nil {
		d.writeError(w, r, &api.Error{Code: api.CodeInvalid, Message: err.Error()})
		return
	}
	if err := os.MkdirAll(d.opts.Layout.ImagesDir(), 0o750); err != nil {
		d.writeError(w, r, err)
		return
	}
	// ".upload-" directories are the daemon's own scratch space: private (0700) and
	// removed when the request ends, whatever happens.
	stage, err := os.MkdirTemp(d.opts.Layout.ImagesDir(), ".upload-")
	if err != nil {
		d.writeError(w, r, err)
		return
	}
	defer os.RemoveAll(stage)

	staged := filepath.Join(stage, "input")
	if u.Kind == api.UploadLayout {
		err = extractLayout(r.Context(), r.Body, staged)
	} else {
		err = writeBody(r.Body, staged)
	}
	if err != nil {
		d.writeError(w, r, &api.Error{Code: api.CodeInvalid, Message: fmt.Sprintf("upload of %s: %v", u.Source, err)})
		return
	}

	streamResult(d, w, r, func(ev progress.Func) (api.ImageResult, error) {
		var res imageservice.Result
		var err error
		switch {
		case u.Op == api.UploadImport:
			res, err = d.images.ImportLocal(r.Context(), staged, u.Source, u.Kind == api.UploadDir, u.Name, ev)
		case u.Kind == api.UploadLayout:
			res, err = d.images.PullLocal(r.Context(), withTag("oci:"+staged, u.Tag), staged, u.Source, u.Name, ev)
		default:
			res, err = d.images.PullLocal(r.Context(), withTag("docker-archive:"+staged, u.Tag), staged, u.Source, u.Name, ev)
		}
		return api.ImageResult{Image: toAPIImage(res.Image, nil), Reused: res.Reused}, err
	})
}

func withTag(ref, tag string) string {
	if tag == "" {
		return ref
	}
	return ref + ":" + tag
}

// writeBody copies the request body into a new file.
func writeBody(body io.Reader, dst string) error {
	f, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return err
	}
	if _, err := io.Copy(f, body); err != nil {
		f.Close()
		return fmt.Errorf("receive: %w", err)
	}
	return f.Close()
}

// layoutEntry is every name an OCI image layout holds: its marker, its index and
// content-addressed blobs (blobs/<algorithm>/<hex>).
var layoutEntry = regexp.MustCompile(`^(oci-layout|index\.json|blobs|blobs/[a-z0-9]+|blobs/[a-z0-9]+/[a-f0-9]{32,128})/?$`)

// extractLayout unpacks an OCI layout sent as a tar into dir. It takes only what a
// layout holds (directories and regular files with layout names) and writes through
// an os.Root, so a hostile tar can place nothing outside dir, nor anything but
// plain files inside it.
func extractLayout(ctx context.Context, body io.Reader, dir string) error {
	if err := os.Mkdir(dir, 0o700); err != nil {
		return err
	}
	root, err := os.OpenRoot(dir)
	if err != nil {
		return err
	}
	defer root.Close()
	tr := tar.NewReader(body)
	for {
		if err := ctx.Err(); err != nil {
			return err
		}
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("not a tar stream: %w", err)
		}
		name := path.Clean(h.Name)
		if name == "." {
			continue
		}
		if !layoutEntry.MatchString(name) {
			return fmt.Errorf("%q is not part of an OCI image layout", h.Name)
		}
		switch h.Typeflag {
		case tar.TypeDir:
			if err := root.MkdirAll(name, 0o700); err != nil {
				return err
			}
		case tar.TypeReg:
			if d := path.Dir(name); d != "." {
				if err := root.MkdirAll(d, 0o700); err != nil {
					return err
				}
			}
			f, err := root.OpenFile(name, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
			if err != nil {
				return err
			}
			_, err = io.Copy(f, tr)
			if cerr := f.Close(); err == nil {
				err = cerr
			}
			if err != nil {
				return fmt.Errorf("%s: %w", name, err)
			}
		default:
			return fmt.Errorf("%q is a %c entry: an OCI image layout holds only directories and files", h.Name, h.Typeflag)
		}
	}
}
