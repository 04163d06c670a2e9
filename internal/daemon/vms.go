package daemon

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"time"

	"banger/internal/api"
	"banger/internal/consolelog"
	"banger/internal/portfwd"
	"banger/internal/vmservice"
)

func (d *Daemon) toAPIVM(v vmservice.VM) api.VM {
	out := api.VM{
		ID: v.ID, Name: v.Name, State: string(v.State), DNSName: v.Name + "." + d.opts.Config.DNS.Domain,
		Image: v.ImageID, Kernel: v.KernelID, Driver: v.Driver, CPUs: v.CPUs, MemoryMiB: v.MemoryMiB, DiskBytes: v.DiskBytes,
		Env: v.Env, Publish: v.Publish, CreatedAt: v.CreatedAt, StartError: v.StartError, ConsoleLog: v.ConsoleLog,
		Disk: api.VMDisk{Strategy: v.DiskInfo.Strategy, Path: v.DiskInfo.Path, Format: string(v.DiskInfo.Format), SizeBytes: v.DiskInfo.SizeBytes, Base: v.DiskInfo.Base, Note: v.DiskInfo.Note},
	}
	if v.IP.IsValid() {
		out.IP = v.IP.String()
	}
	for _, p := range v.Publish {
		if spec, err := portfwd.ParseSpec(p); err == nil {
			out.Published = append(out.Published, fmt.Sprintf("%s → %d/tcp", spec.HostAddr(), spec.GuestPort))
		}
	}
	if h := v.Handle; h != nil {
		out.PID, out.Tap, out.VsockCID, out.APISocket, out.AgentSocket = h.PID, h.Tap, h.VsockCID, h.APISocket, h.AgentSocket
	}
	if t := v.Timings; t != nil {
		out.Timings = &api.Timings{HostSetup: t.HostSetup, Tap: t.Tap, NAT: t.NAT, Disk: t.Disk, VMMLaunch: t.VMMLaunch,
			AgentReady: t.AgentReady, SSHReady: t.SSHReady, Total: t.Total, At: t.At}
	}
	return out
}

func (d *Daemon) listVMs(r *http.Request) (any, error) {
	vms, err := d.vms.List(r.Context())
	if err != nil {
		return nil, err
	}
	out := make([]api.VM, 0, len(vms))
	for _, v := range vms {
		out = append(out, d.toAPIVM(v))
	}
	d.nameImages(r.Context(), out)
	return out, nil
}

func (d *Daemon) getVM(r *http.Request) (any, error) {
	v, err := d.vms.Get(r.Context(), r.PathValue("ref"))
	if err != nil {
		return nil, err
	}
	return d.namedVM(r.Context(), v), nil
}

// namedVM is one VM as the API shows it, its image named.
func (d *Daemon) namedVM(ctx context.Context, v vmservice.VM) api.VM {
	out := []api.VM{d.toAPIVM(v)}
	d.nameImages(ctx, out)
	return out[0]
}

// nameImages fills ImageName from the images' tags, read once for all the VMs. A
// failure to read them only costs the names (the IDs are still there), so it is
// logged, not returned.
func (d *Daemon) nameImages(ctx context.Context, vms []api.VM) {
	imgs, err := d.store.ListImages(ctx) // the tags only: not the VM users images.List adds
	if err != nil {
		d.log.Warn("list image tags for VM listing", "err", err)
		return
	}
	names := make(map[string]string, len(imgs))
	for _, img := range imgs {
		if len(img.Tags) > 0 {
			names[img.ID] = img.Tags[0]
		}
	}
	for i := range vms {
		vms[i].ImageName = names[vms[i].Image]
	}
}

// createVM creates, and for `vm run` starts, a VM.
func (d *Daemon) createVM(r *http.Request) (any, error) {
	var req api.VMCreateRequest
	if err := decodeBody(r, &req); err != nil {
		return nil, err
	}
	cr := vmservice.CreateRequest{
		Name: req.Name, Image: req.Image, Kernel: req.Kernel, Driver: req.Driver, CPUs: req.CPUs,
		MemoryMiB: req.MemoryMiB, DiskBytes: req.DiskBytes, Env: req.Env, Publish: req.Publish,
		DiskStrategy: req.DiskStrategy,
	}
	create := d.vms.Create
	if req.Start {
		create = d.vms.Run
	}
	v, err := create(r.Context(), cr)
	if err != nil {
		return nil, err
	}
	return d.namedVM(r.Context(), v), nil
}

func (d *Daemon) vmAction(r *http.Request) (any, error) {
	ref, ctx := r.PathValue("ref"), r.Context()
	var req api.VMStopRequest
	if r.ContentLength > 0 {
		if err := decodeBody(r, &req); err != nil {
			return nil, err
		}
	}
	var (
		v   vmservice.VM
		err error
	)
	switch r.PathValue("action") {
	case "start":
		v, err = d.vms.Start(ctx, ref)
	case "stop":
		v, err = d.vms.Stop(ctx, ref, req.Timeout)
	case "restart":
		v, err = d.vms.Restart(ctx, ref, req.Timeout)
	case "kill":
		v, err = d.vms.Kill(ctx, ref)
	default:
		return nil, &api.Error{Code: api.CodeNotFound, Message: "unknown VM action " + r.PathValue("action") + ": use start, stop, restart or kill"}
	}
	if err != nil {
		return nil, err
	}
	return d.namedVM(r.Context(), v), nil
}

func (d *Daemon) waitVM(r *http.Request) (any, error) {
	timeout := 5 * time.Minute
	if s := r.URL.Query().Get("timeout"); s != "" {
		t, err := time.ParseDuration(s)
		if err != nil {
			return nil, &api.Error{Code: api.CodeInvalid, Message: "timeout: " + err.Error()}
		}
		timeout = t
	}
	ctx, cancel := context.WithTimeout(r.Context(), timeout)
	defer cancel()
	v, err := d.vms.Wait(ctx, r.PathValue("ref"))
	if err != nil {
		return nil, err
	}
	return d.namedVM(r.Context(), v), nil
}

func (d *Daemon) deleteVM(r *http.Request) (any, error) {
	v, err := d.vms.Remove(r.Context(), r.PathValue("ref"), r.URL.Query().Get("force") == "1")
	if err != nil {
		return nil, err
	}
	return d.namedVM(r.Context(), v), nil
}

// vmLogs streams the console log (both halves of the capped log, older first) as
// the guest wrote it; with follow=1 it keeps sending what is appended until the
// client goes away. The bytes are raw: the CLI neutralises them for a terminal
// unless asked for --raw.
func (d *Daemon) vmLogs(w http.ResponseWriter, r *http.Request) {
	path, err := d.vms.ConsoleLog(r.Context(), r.PathValue("ref"))
	if err != nil {
		d.writeError(w, r, err)
		return
	}
	w.Header().Set("Content-Type", "application/octet-stream")
	if r.URL.Query().Get("follow") == "1" {
		w.WriteHeader(http.StatusOK)
		flush := func() {}
		if f, ok := w.(http.Flusher); ok {
			flush = f.Flush
		}
		_ = consolelog.Follow(r.Context(), w, path, 200*time.Millisecond, flush)
		return
	}
	rc, err := consolelog.Open(path)
	if err != nil {
		d.writeError(w, r, err)
		return
	}
	defer rc.Close()
	w.WriteHeader(http.StatusOK)
	_, _ = io.Copy(w, rc)
}

// attachVM upgrades the connection and bridges one agent call (exec, cp).
func (d *Daemon) attachVM(w http.ResponseWriter, r *http.Request) {
	if r.Header.Get("Upgrade") != api.UpgradeAttach {
		d.writeError(w, r, &api.Error{Code: api.CodeInvalid, Message: "attach needs Upgrade: " + api.UpgradeAttach})
		return
	}
	if _, err := d.vms.Get(r.Context(), r.PathValue("ref")); err != nil {
		d.writeError(w, r, err)
		return
	}
	hj, ok := w.(http.Hijacker)
	if !ok {
		d.writeError(w, r, &api.Error{Code: api.CodeInternal, Message: "connection cannot be upgraded"})
		return
	}
	conn, brw, err := hj.Hijack()
	if err != nil {
		return
	}
	_, _ = brw.WriteString("HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: " + api.UpgradeAttach + "\r\n\r\n")
	if err := brw.Flush(); err != nil {
		conn.Close()
		return
	}
	// Bytes the client sent after its request may sit in brw's reader.
	rw := struct {
		io.Reader
		io.Writer
		io.Closer
	}{io.MultiReader(io.LimitReader(brw.Reader, int64(brw.Reader.Buffered())), conn), conn, conn}
	// The request's context ends with the hijack; the attach lives as long as the
	// connection or the daemon.
	if err := d.vms.Attach(d.ctx, r.PathValue("ref"), rw); err != nil {
		d.log.Debug("attach ended", "vm", r.PathValue("ref"), "err", err)
	}
}
