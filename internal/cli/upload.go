package cli

import (
	"archive/tar"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"

	"banger/internal/api"
	"banger/internal/image"
	"banger/internal/image/oci"
	"banger/internal/image/progress"
)

// Local inputs (image import PATH, image pull of an archive or OCI layout) are read
// here, with the rights of whoever runs the CLI, and sent to bangerd as the request
// body (api.ImageUpload): bangerd runs as the owner and must neither need nor lend
// access to the caller's files.

// uploadImport sends path (a rootfs tarball, an ext4 file, or a directory) for import.
func uploadImport(ctx context.Context, cl *api.Client, path, name string, onEvent progress.Func) (api.ImageResult, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return api.ImageResult{}, localError(path, err)
	}
	u := api.ImageUpload{Op: api.UploadImport, Kind: api.UploadFile, Source: path, Name: name}
	switch {
	case fi.IsDir():
		if isLayout(path) {
			return api.ImageResult{}, usageError(fmt.Errorf("%s is an OCI image layout, not a root filesystem: use `banger image pull oci:%s`", path, path))
		}
		u.Kind = api.UploadDir
		return cl.UploadImage(ctx, u, produce(ctx, func(w io.Writer) error { return image.WriteDirTar(ctx, path, w) }), onEvent)
	case fi.Mode().IsRegular():
		f, err := os.Open(path)
		if err != nil {
			return api.ImageResult{}, localError(path, err)
		}
		defer f.Close()
		return cl.UploadImage(ctx, u, f, onEvent)
	}
	return api.ImageResult{}, usageError(fmt.Errorf("%s is a %s: import takes a tar archive, a directory or an ext4 file", path, fi.Mode().Type()))
}

// uploadPull sends a local docker archive or OCI layout named by src for pull.
func uploadPull(ctx context.Context, cl *api.Client, src oci.Source, name string, onEvent progress.Func) (api.ImageResult, error) {
	fi, err := os.Stat(src.Path)
	if err != nil {
		return api.ImageResult{}, localError(src.Path, err)
	}
	u := api.ImageUpload{Op: api.UploadPull, Kind: api.UploadFile, Source: src.String(), Name: name, Tag: src.Tag}
	if src.Kind == oci.KindLayout {
		if !fi.IsDir() || !isLayout(src.Path) {
			return api.ImageResult{}, usageError(fmt.Errorf("%s is not an OCI image layout (no oci-layout and index.json in it)", src.Path))
		}
		u.Kind = api.UploadLayout
		return cl.UploadImage(ctx, u, produce(ctx, func(w io.Writer) error { return writeLayoutTar(src.Path, w) }), onEvent)
	}
	if !fi.Mode().IsRegular() {
		return api.ImageResult{}, usageError(fmt.Errorf("%s is not a file: a docker archive is the file `docker save` writes", src.Path))
	}
	f, err := os.Open(src.Path)
	if err != nil {
		return api.ImageResult{}, localError(src.Path, err)
	}
	defer f.Close()
	return cl.UploadImage(ctx, u, f, onEvent)
}

// localError says what is wrong with a local file in the caller's terms; it is never
// blamed on a network.
func localError(path string, err error) error {
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return usageError(fmt.Errorf("%s does not exist", path))
	case errors.Is(err, fs.ErrPermission):
		return usageError(fmt.Errorf("%s cannot be read by you (permission denied): run banger as a user who can read it", path))
	}
	return fmt.Errorf("%s: %w", path, err)
}

func isLayout(dir string) bool {
	for _, f := range []string{"oci-layout", "index.json"} {
		if _, err := os.Stat(filepath.Join(dir, f)); err != nil {
			return false
		}
	}
	return true
}

// produce runs write in a goroutine and returns the reading end of what it writes;
// write's error, if any, ends the stream (and with it the upload).
func produce(ctx context.Context, write func(io.Writer) error) io.Reader {
	pr, pw := io.Pipe()
	go func() {
		err := write(pw)
		if err == nil {
			err = ctx.Err()
		}
		pw.CloseWithError(err)
	}()
	return pr
}

// writeLayoutTar writes an OCI layout's directories and regular files as a tar.
// Anything else (a symlink into the caller's files) is refused rather than followed.
func writeLayoutTar(dir string, w io.Writer) error {
	tw := tar.NewWriter(w)
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(dir, p)
		if err != nil || rel == "." {
			return err
		}
		switch {
		case d.IsDir():
			return tw.WriteHeader(&tar.Header{Name: rel + "/", Typeflag: tar.TypeDir, Mode: 0o755})
		case d.Type().IsRegular():
			f, err := os.Open(p)
			if err != nil {
				return err
			}
			defer f.Close()
			fi, err := f.Stat()
			if err != nil {
				return err
			}
			if err := tw.WriteHeader(&tar.Header{Name: rel, Typeflag: tar.TypeReg, Mode: 0o644, Size: fi.Size()}); err != nil {
				return err
			}
			_, err = io.Copy(tw, f)
			return err
		}
		return fmt.Errorf("%s is a %s: an OCI layout holds only directories and files", p, d.Type())
	})
	if err != nil {
		return err
	}
	return tw.Close()
}
