package daemon

import (
	"encoding/json"
	"net/http"
	"strings"
	"sync"

	"banger/internal/api"
	"banger/internal/image/progress"
	"banger/internal/store"
)

func toAPIImage(img store.Image, users []string) api.Image {
	if users == nil {
		users = []string{}
	}
	tags := img.Tags
	if tags == nil {
		tags = []string{}
	}
	return api.Image{
		ID: img.ID, Tags: tags, Path: img.Path, SizeBytes: img.SizeBytes, Kind: img.Kind, Source: img.Source,
		AgentVersion: img.AgentVersion, CreatedAt: img.CreatedAt, Meta: img.Meta, UsedBy: users,
	}
}

func (d *Daemon) listImages(r *http.Request) (any, error) {
	imgs, users, err := d.images.List(r.Context())
	if err != nil {
		return nil, err
	}
	out := make([]api.Image, 0, len(imgs))
	for _, img := range imgs {
		out = append(out, toAPIImage(img, users[img.ID]))
	}
	return out, nil
}

func (d *Daemon) getImage(r *http.Request) (any, error) {
	img, users, err := d.images.Get(r.Context(), r.PathValue("ref"))
	if err != nil {
		return nil, err
	}
	return toAPIImage(img, users), nil
}

func (d *Daemon) deleteImage(r *http.Request) (any, error) {
	force := r.URL.Query().Get("force") == "1"
	res, err := d.images.Remove(r.Context(), r.PathValue("ref"), force)
	if err != nil {
		return nil, err
	}
	return api.ImageRemoveResult{ID: res.ID, Removed: res.Removed, Untagged: res.Untagged, KeptFor: res.KeptFor}, nil
}

func (d *Daemon) pullImage(w http.ResponseWriter, r *http.Request) {
	var req api.ImagePullRequest
	if !d.decode(w, r, &req) {
		return
	}
	if strings.TrimSpace(req.Ref) == "" {
		d.writeError(w, r, &api.Error{Code: api.CodeInvalid, Message: "image pull needs a reference, e.g. debian:12, oci:/path/to/layout or /path/to/docker-save.tar"})
		return
	}
	streamResult(d, w, r, func(ev progress.Func) (api.ImageResult, error) {
		res, err := d.images.Pull(r.Context(), req.Ref, req.Name, ev)
		return api.ImageResult{Image: toAPIImage(res.Image, nil), Reused: res.Reused}, err
	})
}

func (d *Daemon) importImage(w http.ResponseWriter, r *http.Request) {
	var req api.ImageImportRequest
	if !d.decode(w, r, &req) {
		return
	}
	if !strings.HasPrefix(req.Path, "/") {
		d.writeError(w, r, &api.Error{Code: api.CodeInvalid, Message: "image import needs an absolute path to a rootfs tarball, a directory or an ext4 file"})
		return
	}
	streamResult(d, w, r, func(ev progress.Func) (api.ImageResult, error) {
		res, err := d.images.Import(r.Context(), req.Path, req.Name, ev)
		return api.ImageResult{Image: toAPIImage(res.Image, nil), Reused: res.Reused}, err
	})
}

// streamResult answers with NDJSON: one line per progress event while run works,
// then its result or error. Once the first line is out the status is 200, so a
// failure travels in-band as an Error line.
func streamResult[T any](d *Daemon, w http.ResponseWriter, r *http.Request, run func(progress.Func) (T, error)) {
	w.Header().Set("Content-Type", "application/x-ndjson")
	w.WriteHeader(http.StatusOK)
	flusher, _ := w.(http.Flusher)
	var mu sync.Mutex // events may come from the library's goroutine
	enc := json.NewEncoder(w)
	write := func(line api.StreamLine[T]) {
		mu.Lock()
		defer mu.Unlock()
		_ = enc.Encode(line)
		if flusher != nil {
			flusher.Flush()
		}
	}
	res, err := run(func(e progress.Event) { write(api.StreamLine[T]{Event: &e}) })
	if err != nil {
		ae := d.apiError(r, err)
		write(api.StreamLine[T]{Error: ae})
		return
	}
	write(api.StreamLine[T]{Result: &res})
}

// decode reads a JSON request body, answering 400 itself when it cannot.
func (d *Daemon) decode(w http.ResponseWriter, r *http.Request, v any) bool {
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, 1<<20))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		d.writeError(w, r, &api.Error{Code: api.CodeInvalid, Message: "request body: " + err.Error()})
		return false
	}
	return true
}
