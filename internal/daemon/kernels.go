package daemon

import (
	"encoding/json"
	"net/http"
	"strings"

	"banger/internal/api"
	"banger/internal/store"
)

func toAPIKernel(k store.Kernel) api.Kernel {
	return api.Kernel{ID: k.ID, Name: k.Name, Version: k.Version, Path: k.Path, InitrdPath: k.InitrdPath, CreatedAt: k.CreatedAt, Meta: k.Meta}
}

func (d *Daemon) listKernels(r *http.Request) (any, error) {
	ks, err := d.kernels.List(r.Context())
	if err != nil {
		return nil, err
	}
	out := make([]api.Kernel, 0, len(ks))
	for _, k := range ks {
		out = append(out, toAPIKernel(k))
	}
	return out, nil
}

func (d *Daemon) getKernel(r *http.Request) (any, error) {
	k, ready, err := d.kernels.Inspect(r.Context(), r.PathValue("ref"))
	if err != nil {
		return nil, err
	}
	out := toAPIKernel(k)
	out.Firecracker, out.QEMU = ready.Firecracker, ready.QEMU
	return out, nil
}

func (d *Daemon) deleteKernel(r *http.Request) (any, error) {
	k, err := d.kernels.Remove(r.Context(), r.PathValue("ref"))
	if err != nil {
		return nil, err
	}
	return toAPIKernel(k), nil
}

func (d *Daemon) importKernel(r *http.Request) (any, error) {
	var req api.KernelImportRequest
	if err := decodeBody(r, &req); err != nil {
		return nil, err
	}
	if !strings.HasPrefix(req.Path, "/") || (req.Initrd != "" && !strings.HasPrefix(req.Initrd, "/")) {
		return nil, &api.Error{Code: api.CodeInvalid, Message: "kernel import needs absolute paths"}
	}
	k, err := d.kernels.Import(r.Context(), req.Path, req.Initrd, req.Name)
	if err != nil {
		return nil, err
	}
	return toAPIKernel(k), nil
}

func (d *Daemon) pullKernel(r *http.Request) (any, error) {
	var req api.KernelPullRequest
	if err := decodeBody(r, &req); err != nil {
		return nil, err
	}
	if req.Ref == "" {
		return nil, &api.Error{Code: api.CodeInvalid, Message: "kernel pull needs an image reference"}
	}
	k, err := d.kernels.Pull(r.Context(), req.Ref, req.Name)
	if err != nil {
		return nil, err
	}
	return toAPIKernel(k), nil
}

// decodeBody reads a JSON request with unknown fields refused.
func decodeBody(r *http.Request, v any) error {
	dec := json.NewDecoder(http.MaxBytesReader(nil, r.Body, 1<<20))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return &api.Error{Code: api.CodeInvalid, Message: "request body: " + err.Error()}
	}
	return nil
}
