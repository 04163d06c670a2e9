package daemon

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"os"
	"time"

	"banger/internal/api"
	"banger/internal/buildinfo"
	"banger/internal/image"
	"banger/internal/imageservice"
	"banger/internal/kernel"
	"banger/internal/store"
	"banger/internal/vmservice"
)

// handlers is the whole API, one greppable table. Handlers return a value to encode
// or an error, which writeError translates to a wire code once, here at the edge.
func (d *Daemon) handlers() map[string]func(*http.Request) (any, error) {
	return map[string]func(*http.Request) (any, error){
		"GET " + api.PathVersion:                d.getVersion,
		"GET " + api.PathStatus:                 d.getStatus,
		"GET " + api.PathImages:                 d.listImages,
		"GET " + api.PathImage + "{ref}":        d.getImage,
		"DELETE " + api.PathImage + "{ref}":     d.deleteImage,
		"GET " + api.PathKernels:                d.listKernels,
		"GET " + api.PathKernel + "{ref}":       d.getKernel,
		"DELETE " + api.PathKernel + "{ref}":    d.deleteKernel,
		"POST " + api.PathKernelImport:          d.importKernel,
		"POST " + api.PathKernelPull:            d.pullKernel,
		"GET " + api.PathVMs:                    d.listVMs,
		"POST " + api.PathVMs:                   d.createVM,
		"GET " + api.PathVM + "{ref}":           d.getVM,
		"DELETE " + api.PathVM + "{ref}":        d.deleteVM,
		"POST " + api.PathVM + "{ref}/{action}": d.vmAction,
		"GET " + api.PathVM + "{ref}/wait":      d.waitVM,
	}
}

// streamHandlers answer long work (pulls, imports, boots) with NDJSON progress.
func (d *Daemon) streamHandlers() map[string]http.HandlerFunc {
	return map[string]http.HandlerFunc{
		"POST " + api.PathImagePull:          d.pullImage,
		"POST " + api.PathImageImport:        d.importImage,
		"POST " + api.PathImageUpload:        d.uploadImage,
		"GET " + api.PathVM + "{ref}/logs":   d.vmLogs,
		"GET " + api.PathVM + "{ref}/attach": d.attachVM,
	}
}

// Handler returns the daemon's HTTP handler.
func (d *Daemon) Handler() http.Handler {
	mux := http.NewServeMux()
	for pattern, h := range d.handlers() {
		mux.HandleFunc(pattern, func(w http.ResponseWriter, r *http.Request) {
			v, err := h(r)
			if err != nil {
				d.writeError(w, r, err)
				return
			}
			w.Header().Set("Content-Type", "application/json")
			_ = json.NewEncoder(w).Encode(v)
		})
	}
	for pattern, h := range d.streamHandlers() {
		mux.HandleFunc(pattern, h)
	}
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		d.writeError(w, r, &api.Error{Code: api.CodeNotFound, Message: "no such API endpoint " + r.Method + " " + r.URL.Path + ": is banger newer than bangerd? restart bangerd"})
	})
	return mux
}

func (d *Daemon) writeError(w http.ResponseWriter, r *http.Request, err error) {
	ae := d.apiError(r, err)
	status := map[string]int{
		api.CodeInvalid: 400, api.CodeNotFound: 404, api.CodeConflict: 409,
		api.CodeUnavailable: 503, api.CodeNoHelper: 503, api.CodeNoSpace: 507, api.CodeNotReady: 504,
	}[ae.Code]
	if status == 0 {
		status = http.StatusInternalServerError
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(ae)
}

// apiError translates a service error to its wire code, once, here at the edge.
// Messages pass through: services already say what went wrong and what to do.
func (d *Daemon) apiError(r *http.Request, err error) *api.Error {
	var ae *api.Error
	if errors.As(err, &ae) {
		return ae
	}
	code := api.CodeInternal
	switch {
	case errors.Is(err, store.ErrNotFound), errors.Is(err, image.ErrNotFound):
		code = api.CodeNotFound
	case errors.Is(err, vmservice.ErrInvalid), errors.Is(err, store.ErrAmbiguous):
		code = api.CodeInvalid
	case errors.Is(err, vmservice.ErrConflict), errors.Is(err, vmservice.ErrNotRunning):
		code = api.CodeConflict
	case errors.Is(err, vmservice.ErrNotReady):
		code = api.CodeNotReady
	case errors.Is(err, store.ErrExists), errors.Is(err, store.ErrInUse):
		code = api.CodeConflict
	case errors.Is(err, kernel.ErrNotKernel), errors.Is(err, kernel.ErrNotInitrd):
		code = api.CodeInvalid
	case errors.Is(err, kernel.ErrNotFound):
		code = api.CodeNotFound
	case errors.Is(err, image.ErrBadReference), errors.Is(err, image.ErrNotImage), errors.Is(err, image.ErrUnsafe),
		errors.Is(err, image.ErrPlatform), errors.Is(err, image.ErrTooLarge), errors.Is(err, image.ErrCorruptLayer),
		errors.Is(err, image.ErrUnauthorized), errors.Is(err, os.ErrNotExist):
		code = api.CodeInvalid
	case errors.Is(err, image.ErrUnreachable), errors.Is(err, imageservice.ErrNoAgent):
		code = api.CodeUnavailable
	case errors.Is(err, image.ErrNoSpace), errors.Is(err, image.ErrImageFull):
		code = api.CodeNoSpace
	}
	if code == api.CodeInternal {
		d.log.Error("api", "method", r.Method, "path", r.URL.Path, "err", err)
	}
	return &api.Error{Code: code, Message: err.Error()}
}

func (d *Daemon) getVersion(*http.Request) (any, error) {
	return api.VersionResponse{Version: buildinfo.Get(), API: "v1"}, nil
}

func (d *Daemon) getStatus(r *http.Request) (any, error) {
	ctx, cancel := context.WithTimeout(r.Context(), 5*time.Second)
	defer cancel()
	ns, ds, hs := d.net.Status(ctx)
	ds.Listen = d.dns.Addr().String()
	vms, err := d.store.ListVMs(ctx)
	if err != nil {
		return nil, err
	}
	self, _ := os.Executable()
	return api.StatusResponse{
		Version: buildinfo.Get(), PID: os.Getpid(), Root: d.opts.Layout.Root, Binary: self,
		Started: d.started, Uptime: time.Since(d.started),
		Helper: hs, Network: ns, DNS: ds, VMs: len(vms),
	}, nil
}

// Serve answers the API on ln until ctx ends, then shuts down gracefully.
func (d *Daemon) Serve(ctx context.Context, ln net.Listener) error {
	srv := &http.Server{Handler: d.Handler(), ReadHeaderTimeout: 10 * time.Second,
		ErrorLog: slog.NewLogLogger(d.log.Handler(), slog.LevelWarn)}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	return srv.Shutdown(sctx)
}
