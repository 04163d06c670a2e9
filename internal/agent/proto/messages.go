package proto

import (
	"encoding/json"
	"errors"
	"fmt"
	"time"
)

// Call names: the first frame of every stream names one of them.
const (
	CallHealth         = "health"
	CallExec           = "exec"
	CallPut            = "put"
	CallGet            = "get"
	CallShutdown       = "shutdown"
	CallAuthorizedKeys = "authorized_keys"
	CallProvision      = "provision"
)

// Request is the payload of the FrameRequest that opens a stream. Args is decoded
// by the handler of Call, so an unknown call is refused before its arguments are read.
type Request struct {
	Call string          `json:"call"`
	Args json.RawMessage `json:"args,omitempty"`
}

// Response answers a Request (FrameResponse) and ends a file transfer (FrameStatus).
// Exactly one of Error and Result is set.
type Response struct {
	Error  *Error          `json:"error,omitempty"`
	Result json.RawMessage `json:"result,omitempty"`
}

// Health is the result of CallHealth.
type Health struct {
	Version string `json:"version"`
	// PID1 is true when the agent is the guest's init.
	PID1 bool `json:"pid1"`
	// Uptime is how long the agent has been running.
	Uptime time.Duration `json:"uptime_ns"`
	// Boot lists the init phases in the order they ran (empty in service mode).
	Boot []BootPhase `json:"boot,omitempty"`
}

// BootPhase is one timed step of the agent's start-up.
type BootPhase struct {
	Name     string        `json:"name"`
	Duration time.Duration `json:"duration_ns"`
	// Error is set when a log-and-continue step failed.
	Error string `json:"error,omitempty"`
}

// ExecArgs are the arguments of CallExec.
type ExecArgs struct {
	Argv []string `json:"argv"`
	// Env entries ("K=V") are added to a base environment built for the user
	// (PATH, HOME, USER, LOGNAME, SHELL) and override it.
	Env []string `json:"env,omitempty"`
	// Dir defaults to the user's home directory, or / when it does not exist.
	Dir string `json:"dir,omitempty"`
	// User is a login name from the guest's passwd file; empty means the agent's own user.
	User string `json:"user,omitempty"`
	// TTY runs the command on a new pty of Rows×Cols; its output comes as FrameStdout only.
	TTY  bool   `json:"tty,omitempty"`
	Rows uint16 `json:"rows,omitempty"`
	Cols uint16 `json:"cols,omitempty"`
	// Stdin says the host will send FrameStdin/FrameStdinEOF; otherwise stdin is /dev/null.
	Stdin bool `json:"stdin,omitempty"`
}

// ExecStarted is the result of CallExec once the process runs.
type ExecStarted struct {
	PID int `json:"pid"`
}

// Resize is the payload of FrameResize.
type Resize struct {
	Rows uint16 `json:"rows"`
	Cols uint16 `json:"cols"`
}

// Signal is the payload of FrameSignal: a name ("TERM", "SIGTERM") or a number ("15").
type Signal struct {
	Signal string `json:"signal"`
}

// ExitStatus is the payload of FrameExit.
type ExitStatus struct {
	// Code is the exit code, or 128+N when the process was killed by signal N
	// (the shell's convention, so a CLI can exit with it as is).
	Code int `json:"code"`
	// Signal is the name of the signal that killed the process ("SIGKILL"), if any.
	Signal string `json:"signal,omitempty"`
}

// PutArgs are the arguments of CallPut: the host then sends a tar stream as
// FrameData frames and a FrameDataEnd, and the guest answers with a FrameStatus.
type PutArgs struct {
	// Dir is the absolute directory the archive is extracted into; it is created
	// if missing. No entry may land outside it, through ".." or through symlinks.
	Dir string `json:"dir"`
	// User, when set, owns every extracted entry (instead of the archive's owners).
	User string `json:"user,omitempty"`
}

// GetArgs are the arguments of CallGet: after the response the guest sends a tar
// stream of Path (FrameData…, FrameDataEnd) and then a FrameStatus.
type GetArgs struct {
	// Path is absolute; the archive holds it under its base name, like
	// `tar -C $(dirname Path) -c $(basename Path)`. Symlinks are archived, not followed.
	Path string `json:"path"`
}

// Shutdown actions.
const (
	ActionPoweroff = "poweroff"
	ActionReboot   = "reboot"
)

// ShutdownArgs are the arguments of CallShutdown. The guest answers first and then
// shuts down, so the answer means "accepted", not "done".
type ShutdownArgs struct {
	Action string `json:"action"`
}

// AuthorizedKeysArgs are the arguments of CallAuthorizedKeys: the complete set of
// keys (authorized_keys lines) the SSH server accepts from now on.
type AuthorizedKeysArgs struct {
	Keys []string `json:"keys"`
}

// AuthorizedKeysResult is the result of CallAuthorizedKeys.
type AuthorizedKeysResult struct {
	Count int `json:"count"`
}

// ProvisionArgs are the arguments of CallProvision: the SSH material the host
// gives a guest right after the handshake. It is one call so that it is applied
// all or nothing: both parts are validated before either is applied, and the
// authorized keys are in place before SSH starts listening with the host key.
// An absent part is left as it is; with neither, the call reports the state.
type ProvisionArgs struct {
	// HostKey is the SSH host key, an unencrypted private key in OpenSSH or PEM
	// format (what ssh-keygen writes). The host has already recorded its public
	// half in known_hosts, so the first connection is verified strictly. SSH
	// starts listening once a host key is in place; a new key takes effect for new
	// connections, while open sessions keep the key they were made with. Empty
	// keeps the current key.
	HostKey string `json:"host_key,omitempty"`
	// AuthorizedKeys, when not nil, replaces the keys SSH accepts (as
	// CallAuthorizedKeys does); a pointer to an empty list removes them all.
	AuthorizedKeys *[]string `json:"authorized_keys,omitempty"`
}

// ProvisionResult is the result of CallProvision: the state after the call.
type ProvisionResult struct {
	// HostKey is the SHA256 fingerprint of the host key in use (as ssh-keygen -l
	// prints it), empty when there is none yet.
	HostKey string `json:"host_key,omitempty"`
	// AuthorizedKeys is the number of distinct keys SSH accepts.
	AuthorizedKeys int `json:"authorized_keys"`
	// Listen is the address SSH listens on, empty while it does not.
	Listen string `json:"listen,omitempty"`
}

// Error codes carried on the wire.
const (
	CodeBadRequest    = "bad_request"
	CodeUnknownCall   = "unknown_call"
	CodeFrameTooLarge = "frame_too_large"
	CodeNotFound      = "not_found"
	CodePermission    = "permission_denied"
	CodeUnsupported   = "unsupported"
	CodeInternal      = "internal"
)

// Error is an error the agent reports to the host.
type Error struct {
	Code    string `json:"code"`
	Message string `json:"message"`
}

// Errorf returns an *Error with the given code.
func Errorf(code, format string, args ...any) *Error {
	return &Error{Code: code, Message: fmt.Sprintf(format, args...)}
}

func (e *Error) Error() string { return "agent: " + e.Message + " (" + e.Code + ")" }

// Is matches another *Error with the same code, so callers can write
// errors.Is(err, proto.ErrUnknownCall).
func (e *Error) Is(target error) bool {
	var t *Error
	return errors.As(target, &t) && t.Code == e.Code && t.Message == ""
}

// Sentinels for errors.Is; they match any *Error with the same code.
var (
	ErrBadRequest    = &Error{Code: CodeBadRequest}
	ErrUnknownCall   = &Error{Code: CodeUnknownCall}
	ErrFrameTooLarge = &Error{Code: CodeFrameTooLarge}
	ErrNotFound      = &Error{Code: CodeNotFound}
	ErrPermission    = &Error{Code: CodePermission}
	ErrUnsupported   = &Error{Code: CodeUnsupported}
)

// AsError converts any error into the *Error sent to the host: an *Error is kept,
// anything else becomes CodeInternal with its message.
func AsError(err error) *Error {
	var e *Error
	if errors.As(err, &e) {
		return e
	}
	return &Error{Code: CodeInternal, Message: err.Error()}
}

// ErrorResponse builds a Response carrying err.
func ErrorResponse(err error) Response { return Response{Error: AsError(err)} }

// ResultResponse builds a Response carrying v as its result.
func ResultResponse(v any) (Response, error) {
	b, err := json.Marshal(v)
	if err != nil {
		return Response{}, fmt.Errorf("encode result: %w", err)
	}
	return Response{Result: b}, nil
}

// Where the host finds the agent's control channel.
const (
	// DefaultVsockPort is the vsock port the agent listens on; the host connects
	// through Firecracker's hybrid vsock socket with "CONNECT 1024".
	DefaultVsockPort = 1024
	// SerialPortName is the virtio-serial port name the host gives the agent's
	// channel (QEMU: -device virtserialport,name=banger.agent); the guest sees it
	// as /dev/virtio-ports/banger.agent.
	SerialPortName = "banger.agent"
)
