package api

import (
	"context"
	"encoding/json"
	"net/http"
	"net/url"
	"time"
)

// Kernel paths.
const (
	PathKernels      = Prefix + "/kernels"        // GET list
	PathKernelImport = Prefix + "/kernels/import" // POST KernelImportRequest → Kernel
	PathKernelPull   = Prefix + "/kernels/pull"   // POST KernelPullRequest → Kernel
	PathKernel       = Prefix + "/kernels/"       // + {ref}: GET inspect, DELETE
)

// Kernel is one kernel as the API shows it.
type Kernel struct {
	ID         string          `json:"id"`
	Name       string          `json:"name"`
	Version    string          `json:"version"`
	Path       string          `json:"path"`
	InitrdPath string          `json:"initrd_path,omitempty"`
	CreatedAt  time.Time       `json:"created_at"`
	Meta       json.RawMessage `json:"meta,omitempty"`
	// Readiness, on inspect: whether it can boot under each driver and what it lacks.
	Firecracker string `json:"firecracker,omitempty"`
	QEMU        string `json:"qemu,omitempty"`
}

// KernelImportRequest imports a kernel file bangerd can read (absolute paths).
type KernelImportRequest struct {
	Path   string `json:"path"`
	Initrd string `json:"initrd,omitempty"`
	Name   string `json:"name,omitempty"`
}

// KernelPullRequest pulls an OCI image carrying a kernel at /boot.
type KernelPullRequest struct {
	Ref  string `json:"ref"`
	Name string `json:"name,omitempty"`
}

// Kernels lists kernels.
func (c *Client) Kernels(ctx context.Context) ([]Kernel, error) {
	var out []Kernel
	return out, c.do(ctx, http.MethodGet, PathKernels, nil, &out)
}

// Kernel inspects one kernel.
func (c *Client) Kernel(ctx context.Context, ref string) (Kernel, error) {
	var out Kernel
	return out, c.do(ctx, http.MethodGet, PathKernel+url.PathEscape(ref), nil, &out)
}

// ImportKernel imports a kernel.
func (c *Client) ImportKernel(ctx context.Context, req KernelImportRequest) (Kernel, error) {
	var out Kernel
	return out, c.do(ctx, http.MethodPost, PathKernelImport, req, &out)
}

// PullKernel pulls a kernel image.
func (c *Client) PullKernel(ctx context.Context, req KernelPullRequest) (Kernel, error) {
	var out Kernel
	return out, c.do(ctx, http.MethodPost, PathKernelPull, req, &out)
}

// RemoveKernel removes a kernel.
func (c *Client) RemoveKernel(ctx context.Context, ref string) (Kernel, error) {
	var out Kernel
	return out, c.do(ctx, http.MethodDelete, PathKernel+url.PathEscape(ref), nil, &out)
}
