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
	"banger/internal/store"
)

// handlers is the whole API, one greppable table. Handlers return a value to encode
// or an error, which writeError translates to a wire code once, here at the edge.
func (d *Daemon) handlers() map[string]func(*http.Request) (any, error) {
	return map[string]func(*http.Request) (any, error){
		"GET " + api.PathVersion: d.getVersion,
		"GET " + api.PathStatus:  d.getStatus,
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
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		d.writeError(w, r, &api.Error{Code: api.CodeNotFound, Message: "no such API endpoint " + r.Method + " " + r.URL.Path + ": is banger newer than bangerd? restart bangerd"})
	})
	return mux
}

func (d *Daemon) writeError(w http.ResponseWriter, r *http.Request, err error) {
	var ae *api.Error
	switch {
	case errors.As(err, &ae):
	case errors.Is(err, store.ErrNotFound):
		ae = &api.Error{Code: api.CodeNotFound, Message: err.Error()}
	case errors.Is(err, store.ErrExists):
		ae = &api.Error{Code: api.CodeConflict, Message: err.Error()}
	default:
		ae = &api.Error{Code: api.CodeInternal, Message: err.Error()}
	}
	status := map[string]int{api.CodeInvalid: 400, api.CodeNotFound: 404, api.CodeConflict: 409, api.CodeNoHelper: 503}[ae.Code]
	if status == 0 {
		status = http.StatusInternalServerError
	}
	if status >= 500 {
		d.log.Error("api", "method", r.Method, "path", r.URL.Path, "err", err)
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(ae)
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
	return api.StatusResponse{
		Version: buildinfo.Get(), PID: os.Getpid(), Root: d.opts.Layout.Root,
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
