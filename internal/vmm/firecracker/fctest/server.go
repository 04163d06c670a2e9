package fctest

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strings"
	"sync"
)

// MaxBodySize is the largest request body Firecracker's API server accepts.
const MaxBodySize = 51200

// Options tune a Server. The zero value is usable.
type Options struct {
	// InstanceID is the "id" of GET / (Firecracker's --id). Default "anonymous-instance".
	InstanceID string
	// OnAction, if set, is called with the action_type of every accepted
	// PUT /actions, after the 204 has been written and flushed, so the caller
	// may end the process (as a guest booted with reboot=k does on SendCtrlAltDel).
	OnAction func(actionType string)
	// Journal, if set, receives every Record as one JSON line, written as the
	// request completes (so it survives the process being killed).
	Journal io.Writer
	// Logger receives one debug line per request. Default: discard.
	Logger *slog.Logger
	// Root, when set, emulates a chroot: every filesystem path a request
	// names (kernel, drives, vsock, log, snapshot files) is taken under it,
	// as a jailed Firecracker sees its paths. The socket path is not.
	Root string
	// VsockDial is the guest side of the hybrid vsock device: it returns a
	// stream to whatever listens on the guest port, or an error when nothing
	// does. The server accepts host connections on the bound uds_path and
	// speaks the hybrid protocol on each (CONNECT <port>, OK <n>, then raw
	// bytes; no answer when nothing listens). Nil: nothing in the guest
	// listens, so every CONNECT is closed unanswered.
	VsockDial func(port uint32) (net.Conn, error)
}

// Record is one request the server received and how it answered.
type Record struct {
	Method    string `json:"method"`
	Path      string `json:"path"`
	Operation string `json:"operation,omitempty"` // the spec's operationId; empty when unmatched
	Body      string `json:"body,omitempty"`
	Status    int    `json:"status"`
	// Fault is the fault_message of a rejected request.
	Fault string `json:"fault,omitempty"`
	// ResponseViolations lists where the server's own answer broke the spec
	// (a bug in this package, never in the client).
	ResponseViolations []string `json:"response_violations,omitempty"`
}

// Call is "METHOD /path".
func (r Record) Call() string { return r.Method + " " + r.Path }

// Rejected reports whether the server refused the request.
func (r Record) Rejected() bool { return r.Status >= 400 }

// Server is a fake Firecracker API server on a unix socket that holds every
// request to the spec and to the rules the real server enforces beyond it
// (see the package doc), keeps the microVM state those rules need, and
// records every request. It answers as the spec says: 204 without a body for
// accepted PUT/PATCH, 200 and a body matching the response schema for GET,
// 400 and {"fault_message": ...} for anything refused.
type Server struct {
	spec *Spec
	opts Options
	ln   net.Listener
	srv  *http.Server
	sock string
	done chan struct{}
	// vconns are the hybrid vsock connections being served.
	vconns vsockConns

	mu sync.Mutex // guards all following fields
	vm vmState
	// records holds every request in arrival order.
	records []Record
}

// NewServer listens on socketPath (which must not exist) and serves until Close.
func NewServer(spec *Spec, socketPath string, opts Options) (*Server, error) {
	if opts.InstanceID == "" {
		opts.InstanceID = "anonymous-instance"
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	ln, err := net.Listen("unix", socketPath)
	if err != nil {
		return nil, fmt.Errorf("fctest: listen: %w", err)
	}
	s := &Server{spec: spec, opts: opts, ln: ln, sock: socketPath, done: make(chan struct{}), vm: newVMState(opts.Root)}
	s.srv = &http.Server{Handler: s, ErrorLog: slog.NewLogLogger(opts.Logger.Handler(), slog.LevelDebug)}
	go func() {
		defer close(s.done)
		_ = s.srv.Serve(ln) // returns http.ErrServerClosed on Close
	}()
	return s, nil
}

// SocketPath is the API socket the server listens on.
func (s *Server) SocketPath() string { return s.sock }

// Spec is the spec the server holds requests to.
func (s *Server) Spec() *Spec { return s.spec }

// Close stops serving, closes the vsock socket it bound and removes the API socket.
func (s *Server) Close() error {
	err := s.srv.Close()
	<-s.done
	s.mu.Lock()
	s.vm.closeVsock()
	s.mu.Unlock()
	s.vconns.closeAll()
	if rmErr := os.Remove(s.sock); rmErr != nil && !errors.Is(rmErr, os.ErrNotExist) {
		err = errors.Join(err, rmErr)
	}
	return err
}

// Records returns a copy of every request received so far, in order.
func (s *Server) Records() []Record {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]Record(nil), s.records...)
}

// Calls returns "METHOD /path" for every request, in order.
func (s *Server) Calls() []string {
	var calls []string
	for _, r := range s.Records() {
		calls = append(calls, r.Call())
	}
	return calls
}

// Rejected returns the requests the server refused.
func (s *Server) Rejected() []Record {
	var bad []Record
	for _, r := range s.Records() {
		if r.Rejected() {
			bad = append(bad, r)
		}
	}
	return bad
}

// Boot is what the microVM was booted with, for a fake guest to act on.
type Boot struct {
	// BootArgs are the boot-source's boot_args as Firecracker hands them to
	// the kernel: with "pci=off" and, for a root drive, "root=/dev/vda rw|ro"
	// appended.
	BootArgs string
	// VsockPath is the host path of the bound hybrid vsock socket; "" when
	// there is no vsock device.
	VsockPath string
}

// Boot returns the boot configuration accepted so far.
func (s *Server) Boot() Boot {
	s.mu.Lock()
	defer s.mu.Unlock()
	args := strings.TrimSpace(s.vm.bootArgs + " pci=off")
	for _, d := range s.vm.driveInfo {
		if d.root {
			mode := "rw"
			if d.readOnly {
				mode = "ro"
			}
			args += " root=/dev/vda " + mode
		}
	}
	b := Boot{BootArgs: args}
	if s.vm.vsock != nil {
		b.VsockPath = s.vm.host(s.vm.vsockPath)
	}
	return b
}

// State is the microVM state as GET / reports it: "Not started", "Running" or "Paused".
func (s *Server) State() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.vm.state
}

// reject is a refusal: its message becomes the fault_message.
type reject struct{ msg string }

func (r *reject) Error() string { return r.msg }

func refuse(format string, args ...any) error { return &reject{msg: fmt.Sprintf(format, args...)} }

// ServeHTTP checks one request (size, path, method, path ids, body presence,
// body schema, path id == body id, state rules), applies it and answers.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, readErr := io.ReadAll(io.LimitReader(r.Body, MaxBodySize+1))
	rec := Record{Method: r.Method, Path: r.URL.Path, Body: string(body)}

	var (
		op      *Operation
		payload any
		err     = readErr
	)
	if err == nil {
		op, payload, err = s.handle(r, body)
	}
	if op != nil {
		rec.Operation = op.ID
	}
	status := http.StatusNoContent
	var out []byte
	switch {
	case err != nil:
		status = http.StatusBadRequest
		rec.Fault = err.Error()
		out, _ = json.Marshal(map[string]string{"fault_message": rec.Fault})
	case payload != nil:
		status = http.StatusOK
		out, err = json.Marshal(payload)
		if err != nil {
			status = http.StatusInternalServerError
			out, _ = json.Marshal(map[string]string{"fault_message": "fctest: " + err.Error()})
		}
	}
	rec.Status = status
	rec.ResponseViolations = s.checkResponse(op, status, out)

	s.mu.Lock()
	s.records = append(s.records, rec)
	s.mu.Unlock()
	s.journal(rec)
	s.opts.Logger.Debug("fctest request", "call", rec.Call(), "status", status, "fault", rec.Fault)

	if out != nil {
		w.Header().Set("Content-Type", "application/json")
	}
	w.WriteHeader(status)
	if out != nil {
		_, _ = w.Write(out)
	}
	if f, ok := w.(http.Flusher); ok {
		f.Flush()
	}
	if status == http.StatusNoContent && op != nil && op.ID == "createSyncAction" && s.opts.OnAction != nil {
		var a struct {
			ActionType string `json:"action_type"`
		}
		if json.Unmarshal(body, &a) == nil {
			s.opts.OnAction(a.ActionType)
		}
	}
}

func (s *Server) journal(rec Record) {
	if s.opts.Journal == nil {
		return
	}
	line, err := json.Marshal(rec)
	if err != nil {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	// One write per line: with O_APPEND, a line is never split by a kill.
	_, _ = s.opts.Journal.Write(append(line, '\n'))
}

// handle runs the checks in the order the real server meets them and, if all
// pass, applies the request to the microVM state.
func (s *Server) handle(r *http.Request, body []byte) (*Operation, any, error) {
	if len(body) > MaxBodySize {
		return nil, nil, refuse("request body is over %d bytes: Firecracker refuses bodies larger than %d bytes", MaxBodySize, MaxBodySize)
	}
	if r.URL.RawQuery != "" {
		return nil, nil, refuse("%s %s: the Firecracker API takes no query string", r.Method, r.URL.Path)
	}
	op, params, err := s.spec.match(r.Method, r.URL.Path)
	if err != nil {
		return nil, nil, refuse("Invalid request method and/or path: %s %s: %v", r.Method, r.URL.Path, err)
	}
	for _, name := range op.PathParams {
		if err := checkID(name, params[name]); err != nil {
			return op, nil, err
		}
	}
	var doc map[string]any
	switch {
	case r.Method == http.MethodGet && len(body) > 0:
		return op, nil, refuse("GET %s: a GET request must not carry a body", r.URL.Path)
	case op.Body == nil && len(body) > 0:
		return op, nil, refuse("%s %s takes no body", r.Method, r.URL.Path)
	case op.Body != nil && len(body) == 0:
		return op, nil, refuse("%s %s: the request needs a JSON body", r.Method, r.URL.Path)
	case op.Body != nil:
		if errs := s.spec.ValidateJSON(op.Body, body); len(errs) > 0 {
			return op, nil, refuse("%s %s: invalid body: %s", r.Method, r.URL.Path, strings.Join(errs, "; "))
		}
		v, _ := decodeJSON(body) // valid: ValidateJSON parsed it
		doc, _ = v.(map[string]any)
	}
	// Firecracker takes the id from the path and refuses a body that names another.
	for _, name := range op.PathParams {
		if v, ok := doc[name]; ok && v != params[name] {
			return op, nil, refuse("The id from the path (%s) does not match the id from the body (%v)", params[name], v)
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	payload, err := s.vm.apply(s, op, params, doc)
	return op, payload, err
}

// checkID holds a path id to Firecracker's rule: ASCII letters, digits and '_'.
func checkID(name, id string) error {
	if id == "" {
		return refuse("Required key %s not present in the path", name)
	}
	for i := 0; i < len(id); i++ {
		c := id[i]
		if !(c == '_' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9') {
			return refuse("Invalid %s %q: only ASCII letters, digits and '_' are allowed", name, id)
		}
	}
	return nil
}

// checkResponse holds the server's own answer to the spec.
func (s *Server) checkResponse(op *Operation, status int, out []byte) []string {
	if op == nil {
		if status == http.StatusBadRequest {
			return nil // an unmatched path has no spec entry; Error is the universal shape
		}
		return []string{"answered an unmatched request with a success"}
	}
	sc, ok := op.Responses[fmt.Sprint(status)]
	if !ok {
		sc, ok = op.Responses["default"]
	}
	if !ok {
		return []string{fmt.Sprintf("status %d is not among the spec's responses", status)}
	}
	switch {
	case sc == nil && len(out) > 0:
		return []string{fmt.Sprintf("status %d must have no body", status)}
	case sc != nil && len(out) == 0:
		return []string{fmt.Sprintf("status %d needs a body", status)}
	case sc == nil:
		return nil
	}
	return s.spec.ValidateJSON(sc, out)
}
