package privileged

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"banger/internal/buildinfo"
	"banger/internal/config"
	"banger/internal/layout"
	"banger/internal/trustfs"
)

// MaxRequestBody caps a request body. The largest legitimate request is a few hundred
// bytes; anything near this is refused before it is decoded.
const MaxRequestBody = 64 << 10

const (
	// opTimeout bounds one privileged operation.
	opTimeout = 60 * time.Second
	// shutdownTimeout bounds draining in-flight calls when Serve's context ends.
	shutdownTimeout = 10 * time.Second
	// maxOpName bounds the op name quoted in the audit log and in errors.
	maxOpName = 64
)

// opPath is the URL prefix of every op: POST /v1/op/<Op>.
const opPath = "/v1/op/"

// bridgeNameRe matches what internal/config accepts for network.bridge.
var bridgeNameRe = regexp.MustCompile(`^[a-zA-Z][a-zA-Z0-9_-]{0,14}$`)

// ServerConfig is everything the helper's server needs, passed explicitly.
type ServerConfig struct {
	// Layout locates the socket (Layout.HelperSocket), the root that bounds
	// ChownToOwner, and the disks and images directories that bound the loop ops and
	// name this root's device-mapper devices (DMPrefix).
	Layout layout.Layout
	// OwnerUID is the only uid allowed to call the helper (checked with SO_PEERCRED),
	// and with OwnerGID the owner of the socket, of taps and of chowned files.
	OwnerUID int
	OwnerGID int
	// Bridge is the configured bridge (network.bridge), the only one the helper touches.
	Bridge string
	// BridgePrefix is the bridge address with the guests' prefix (network.bridge_cidr).
	BridgePrefix netip.Prefix
	// MTU of taps the helper creates (network.mtu).
	MTU int
	// DNSDomain and DNSListen are dns.domain and dns.listen (config.DNSListen) of the
	// helper's own config.toml: ResolverRouting routes that domain, and only that,
	// to that server, and only that, for the whole host. Zero values mean the
	// defaults of a config.toml that sets neither (config.DefaultDNSDomain, the
	// bridge address on config.DefaultDNSPort).
	DNSDomain string
	DNSListen netip.AddrPort
	// Net, Resolver and Block do the kernel work, after validation. Never nil.
	Net      NetOps
	Resolver ResolverOps
	Block    BlockOps
	// ConsoleMax caps a jailed VM's console log (console.max_size); 0 is
	// consolelog.DefaultMax.
	ConsoleMax int64
	// Jail runs Firecracker's jailer for the jail ops; nil makes them answer that
	// the jailer is not configured.
	Jail JailRuntime
	// Audit receives exactly one line per call (see NewAuditLogger). Never nil.
	Audit *slog.Logger
	// Logger receives operational messages; nil discards them.
	Logger *slog.Logger

	// devices locates /dev/mapper, /dev and /sys/dev/block for DMCreate's chown; the
	// zero value means the real ones. Tests point it at a temporary tree.
	devices devPaths
	// startConsole puts a capped logger between a jailed Firecracker and its console
	// log; nil means consolelog.StartOnFile. The fuzz targets, which launch
	// thousands of fake jails, hand the log itself through instead.
	startConsole func(log *os.File, path string, max int64, cred *syscall.Credential) (*os.File, error)
}

func (c ServerConfig) check() error {
	switch {
	case c.Layout.Root == "" || c.Layout.RunDir == "":
		return errors.New("helper server: no layout: build one with layout.Resolve")
	case c.OwnerUID < 0 || c.OwnerGID < 0:
		return fmt.Errorf("helper server: owner uid/gid %d:%d unknown: pass --owner-uid/--owner-gid or run `banger system install`", c.OwnerUID, c.OwnerGID)
	case !bridgeNameRe.MatchString(c.Bridge) || strings.HasPrefix(c.Bridge, "tap-"):
		return fmt.Errorf("helper server: bridge %q is not a valid bridge name: fix network.bridge in %s", c.Bridge, c.Layout.ConfigPath())
	case !c.BridgePrefix.IsValid() || !c.BridgePrefix.Addr().Is4():
		return fmt.Errorf("helper server: bridge prefix %v is not an IPv4 address with prefix: fix network.bridge_cidr in %s", c.BridgePrefix, c.Layout.ConfigPath())
	case c.BridgePrefix.Addr() == c.BridgePrefix.Masked().Addr() || c.BridgePrefix.Addr() == config.Broadcast(c.BridgePrefix):
		return fmt.Errorf("helper server: bridge address %v is the network or broadcast address: fix network.bridge_cidr in %s", c.BridgePrefix, c.Layout.ConfigPath())
	case c.MTU < MinMTU || c.MTU > MaxMTU:
		return fmt.Errorf("helper server: mtu %d out of range %d-%d: fix network.mtu in %s", c.MTU, MinMTU, MaxMTU, c.Layout.ConfigPath())
	case c.DNSDomain != "" && checkDomain(c.DNSDomain) != nil:
		return fmt.Errorf("helper server: dns domain %q is not a valid DNS name: fix dns.domain in %s", c.DNSDomain, c.Layout.ConfigPath())
	case c.DNSListen != (netip.AddrPort{}) && (!c.DNSListen.IsValid() || c.DNSListen.Port() == 0):
		return fmt.Errorf("helper server: dns listen address %v has no port: fix dns.listen in %s", c.DNSListen, c.Layout.ConfigPath())
	case c.Net == nil || c.Resolver == nil || c.Block == nil:
		return errors.New("helper server: Net, Resolver and Block are required")
	case c.Audit == nil:
		return errors.New("helper server: an audit logger is required: every privileged call is logged")
	}
	return nil
}

// handler runs one op from its raw body. It records the decoded request in rec for
// the audit line, and returns the response or the error to send.
type handler func(ctx context.Context, body []byte, rec *auditRecord) (any, *Error)

// Server is banger-helper's API: typed, validated privileged operations over a unix
// socket that only the owner can reach. A Server serves once: after Shutdown it cannot
// be started again.
type Server struct {
	cfg      ServerConfig       // immutable
	v        validator          // immutable
	handlers map[string]handler // immutable: the op table, see handlerTable
	log      *slog.Logger       // never nil
	srv      *http.Server       // immutable

	// blockMu serialises the block ops that change the kernel's loop and
	// device-mapper state: each checks its arguments against that state and then acts,
	// and no other such call may change it in between (a loop detached and re-bound
	// by someone else must not be detached on the strength of an earlier check).
	blockMu sync.Mutex

	mu sync.Mutex // guards all following fields
	// socketPath and socketInfo identify the socket ListenAndServe created, so that
	// Shutdown removes that one and never a successor's.
	socketPath string
	socketInfo fs.FileInfo
	// resolverState describes the last ResolverRouting call, for Status.
	resolverState string
}

// NewServer checks cfg and returns a server ready to Serve or ListenAndServe.
func NewServer(cfg ServerConfig) (*Server, error) {
	if err := cfg.check(); err != nil {
		return nil, err
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	s := &Server{
		cfg: cfg,
		v: validator{
			root:       cfg.Layout.Root,
			bridge:     cfg.Bridge,
			prefix:     cfg.BridgePrefix,
			ownerUID:   cfg.OwnerUID,
			disksRel:   mustRel(cfg.Layout.Root, cfg.Layout.DisksDir()),
			imagesRel:  mustRel(cfg.Layout.Root, cfg.Layout.ImagesDir()),
			kernelsRel: mustRel(cfg.Layout.Root, cfg.Layout.KernelsDir()),
			dmPrefix:   DMPrefix(cfg.Layout.DisksDir()),
			logDir:     cfg.Layout.LogDir,
			jailBase:   JailBase(cfg.Layout),
			dnsDomain:  cfg.DNSDomain,
			dnsListen:  cfg.DNSListen,
		},
		log:           log,
		resolverState: "unknown: not requested since the helper started",
	}
	if s.v.dnsDomain == "" {
		s.v.dnsDomain = config.DefaultDNSDomain
	}
	if s.v.dnsListen == (netip.AddrPort{}) {
		s.v.dnsListen = netip.AddrPortFrom(cfg.BridgePrefix.Addr(), config.DefaultDNSPort)
	}
	s.handlers = s.handlerTable()
	s.srv = &http.Server{
		Handler:           s,
		ConnContext:       withPeerCred,
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       30 * time.Second,
		IdleTimeout:       2 * time.Minute,
		MaxHeaderBytes:    16 << 10,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelWarn),
	}
	return s, nil
}

// ServeHTTP answers one call and writes its audit line before the answer, so that
// a caller never sees the result of a call the audit log does not hold.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	rec := auditRecord{peer: peerFrom(r.Context()), op: opName(r.URL.Path)}
	resp, e, status := s.handle(w, r, &rec)
	rec.err = e
	writeAudit(s.cfg.Audit, rec, time.Since(start))

	w.Header().Set("Content-Type", "application/json")
	var body any = resp
	if e != nil {
		body = e
		if status == 0 {
			status = statusFor(e.Code)
		}
		if status == http.StatusMethodNotAllowed {
			w.Header().Set("Allow", http.MethodPost)
		}
	} else {
		status = http.StatusOK
	}
	w.WriteHeader(status)
	if err := json.NewEncoder(w).Encode(body); err != nil {
		s.log.Warn("write answer", "op", rec.op, "err", err)
	}
}

// handle runs the checks in order — caller, method, op, body — then the op. A status
// of 0 means "derived from the error code".
func (s *Server) handle(w http.ResponseWriter, r *http.Request, rec *auditRecord) (any, *Error, int) {
	if e := s.checkPeer(rec.peer); e != nil {
		return nil, e, 0
	}
	if r.Method != http.MethodPost {
		return nil, invalidf("method %s is not allowed: call ops with POST %s<Op>", r.Method, opPath), http.StatusMethodNotAllowed
	}
	op, ok := strings.CutPrefix(r.URL.Path, opPath)
	h := s.handlers[op]
	if !ok || h == nil {
		return nil, &Error{Code: CodeUnknownOp, Message: fmt.Sprintf(
			"unknown op %q: this banger-helper (version %s) knows %s; if bangerd is a different version, restart both with `banger system restart`",
			rec.op, buildinfo.Get(), strings.Join(s.opNames(), ", "))}, 0
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, MaxRequestBody))
	if err != nil {
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			return nil, invalidf("request body is larger than %d bytes", MaxRequestBody), http.StatusRequestEntityTooLarge
		}
		return nil, invalidf("read request body: %v", err), 0
	}
	rec.rawBody = body
	// A privileged step is not abandoned halfway because the caller went away: it runs
	// to completion or to opTimeout, whichever comes first.
	ctx, cancel := context.WithTimeout(context.WithoutCancel(r.Context()), opTimeout)
	defer cancel()
	resp, e := h(ctx, body, rec)
	return resp, e, 0
}

// checkPeer refuses every caller but the owner, by the kernel's SO_PEERCRED record.
func (s *Server) checkPeer(p peerCred) *Error {
	if p.Err != nil {
		return &Error{Code: CodeForbidden, Message: fmt.Sprintf(
			"cannot identify the caller (%v): banger-helper answers only its owner (uid %d) on its unix socket", p.Err, s.cfg.OwnerUID)}
	}
	if p.UID != s.cfg.OwnerUID {
		return &Error{Code: CodeForbidden, Message: fmt.Sprintf(
			"uid %d may not use banger-helper: only its owner, uid %d, may; run banger as uid %d, or reinstall banger for your user with `banger system install --owner <user>`",
			p.UID, s.cfg.OwnerUID, s.cfg.OwnerUID)}
	}
	return nil
}

// mustRel is dir relative to root, for directories the layout puts under its root.
// Should Rel ever fail it returns dir itself: absolute, it matches no relative path,
// so the loop ops would then refuse every file rather than accept a wrong one.
func mustRel(root, dir string) string {
	rel, err := filepath.Rel(root, dir)
	if err != nil {
		return dir
	}
	return rel
}

func (s *Server) opNames() []string {
	names := make([]string, 0, len(s.handlers))
	for n := range s.handlers {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

// opName is the op a path names, bounded for logs.
func opName(path string) string {
	op, ok := strings.CutPrefix(path, opPath)
	if !ok {
		op = path
	}
	if len(op) > maxOpName {
		op = op[:maxOpName] + "…"
	}
	return strings.ToValidUTF8(op, "\uFFFD")
}

func statusFor(code string) int {
	switch code {
	case CodeInvalid:
		return http.StatusBadRequest
	case CodeForbidden:
		return http.StatusForbidden
	case CodeUnknownOp:
		return http.StatusNotFound
	default:
		return http.StatusInternalServerError
	}
}

// Serve answers calls on l until ctx ends (then it shuts down, draining in-flight
// calls for up to 10s, and removes the socket ListenAndServe made) or Shutdown is
// called. Only unix-socket connections can pass the peer check; on any other
// listener every call is refused.
func (s *Server) Serve(ctx context.Context, l net.Listener) error {
	s.log.Info("serving", "addr", l.Addr().String(), "owner_uid", s.cfg.OwnerUID, "bridge", s.cfg.Bridge, "version", buildinfo.Get())
	errc := make(chan error, 1)
	go func() { errc <- s.srv.Serve(l) }()
	select {
	case err := <-errc:
		if errors.Is(err, http.ErrServerClosed) {
			return nil // Shutdown was called; it does the cleanup
		}
		if rerr := s.removeSocket(); rerr != nil {
			s.log.Warn("remove socket", "err", rerr)
		}
		return fmt.Errorf("serve %s: %w", l.Addr(), err)
	case <-ctx.Done():
		sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), shutdownTimeout)
		defer cancel()
		err := s.Shutdown(sctx)
		<-errc
		return err
	}
}

// ListenAndServe creates the socket at Layout.HelperSocket (see listen) and serves on
// it until ctx ends or Shutdown is called.
func (s *Server) ListenAndServe(ctx context.Context) error {
	l, err := s.listen()
	if err != nil {
		return err
	}
	return s.Serve(ctx, l)
}

// Shutdown stops accepting calls, waits for in-flight ones (until ctx ends) and
// removes the socket ListenAndServe created, if it is still ours.
func (s *Server) Shutdown(ctx context.Context) error {
	err := s.srv.Shutdown(ctx)
	if rerr := s.removeSocket(); rerr != nil && err == nil {
		err = rerr
	}
	s.log.Info("stopped")
	return err
}

// listen makes the helper's socket so that no one but root and the owner can ever
// connect to it, not even for an instant, and so that the owner cannot turn its
// making into a chmod or chown of something else.
//
// It all happens in Layout.HelperSocketDir, a directory of root's that only root
// can change (checked on a descriptor, ancestors included, see socketDir): the
// socket is bound there under a temporary name, chmod-ed 0600 and chowned to the
// owner there, then hard-linked into place. The path-based chmod and chown are safe
// only because nothing on the way can be swapped by anyone but root; they cannot go
// through the listener's descriptor, since fchmod on a socket changes the socket
// and not the file bound to it. link(2) never replaces an existing file, so a socket
// that appeared since the liveness check is not clobbered either.
func (s *Server) listen() (_ net.Listener, err error) {
	path := s.cfg.Layout.HelperSocket()
	dir, err := s.socketDir()
	if err != nil {
		return nil, err
	}
	dir.Close()
	if err := s.clearStaleSocket(path); err != nil {
		return nil, err
	}
	tmp := filepath.Join(filepath.Dir(path), fmt.Sprintf(".helper-%d.sock", os.Getpid()))
	if err := os.Remove(tmp); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("helper socket: %w", err)
	}
	l, err := net.ListenUnix("unix", &net.UnixAddr{Name: tmp, Net: "unix"})
	if err != nil {
		return nil, fmt.Errorf("helper socket: listen: %w", err)
	}
	defer os.Remove(tmp)
	// The path changes under the listener; removal is ours (removeSocket).
	l.SetUnlinkOnClose(false)
	defer func() {
		if err != nil {
			l.Close()
		}
	}()
	if err := os.Chmod(tmp, 0o600); err != nil {
		return nil, fmt.Errorf("helper socket: chmod: %w", err)
	}
	if err := os.Chown(tmp, s.cfg.OwnerUID, s.cfg.OwnerGID); err != nil {
		return nil, fmt.Errorf("helper socket: chown to owner %d:%d: %w", s.cfg.OwnerUID, s.cfg.OwnerGID, err)
	}
	if err := os.Link(tmp, path); err != nil {
		if errors.Is(err, fs.ErrExist) {
			return nil, fmt.Errorf("helper socket %s appeared while starting: another banger-helper is starting for this root; stop it first", path)
		}
		return nil, fmt.Errorf("helper socket: %w", err)
	}
	fi, err := os.Lstat(path)
	if err != nil {
		os.Remove(path)
		return nil, fmt.Errorf("helper socket: %w", err)
	}
	s.mu.Lock()
	s.socketPath, s.socketInfo = path, fi
	s.mu.Unlock()
	return l, nil
}

// socketDir opens Layout.HelperSocketDir, creating it (and the root) when missing,
// and refuses one that anyone but this process's user could change: the directory
// and every ancestor must be root's and writable by no one else (sticky ones
// excepted: trustfs.OpenDir). It is never given to the owner, who only needs to pass
// through it. Not run as root (tests), the rule is the same with our uid for root's,
// for the directory itself.
func (s *Server) socketDir() (*os.File, error) {
	dir := s.cfg.Layout.HelperSocketDir()
	for _, d := range []string{s.cfg.Layout.Root, dir} {
		if err := os.Mkdir(d, 0o755); err != nil && !errors.Is(err, fs.ErrExist) {
			return nil, fmt.Errorf("helper socket directory: %w", err)
		}
	}
	if os.Geteuid() == 0 {
		f, err := trustfs.OpenDir(dir)
		if err != nil {
			return nil, fmt.Errorf("helper socket directory: %w", err)
		}
		return f, nil
	}
	f, err := os.OpenFile(dir, unix.O_PATH|unix.O_DIRECTORY|unix.O_NOFOLLOW, 0)
	if err != nil {
		return nil, fmt.Errorf("helper socket directory: %w", err)
	}
	var st unix.Stat_t
	if err := unix.Fstat(int(f.Fd()), &st); err != nil || int(st.Uid) != os.Geteuid() || st.Mode&0o022 != 0 {
		f.Close()
		return nil, fmt.Errorf("helper socket directory %s must be ours and writable by us only: move it away and start again", dir)
	}
	return f, nil
}

// clearStaleSocket refuses to replace a socket that something still answers on and
// removes one that nothing answers on (left by a helper that died).
func (s *Server) clearStaleSocket(path string) error {
	fi, err := os.Lstat(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("helper socket %s: %w", path, err)
	}
	if fi.Mode().Type() != fs.ModeSocket {
		return fmt.Errorf("helper socket path %s exists and is not a socket: move it away, then start banger-helper again", path)
	}
	c, err := net.DialTimeout("unix", path, time.Second)
	if err == nil {
		c.Close()
		return fmt.Errorf("another banger-helper is already serving on %s: stop it first, or give this one a different --root", path)
	}
	if !errors.Is(err, syscall.ECONNREFUSED) {
		return fmt.Errorf("probe existing helper socket %s: %w", path, err)
	}
	s.log.Info("removing stale helper socket", "path", path)
	if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("remove stale helper socket %s: %w", path, err)
	}
	return nil
}

// removeSocket removes the socket listen created, unless it was replaced since.
func (s *Server) removeSocket() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.socketPath == "" {
		return nil
	}
	path, info := s.socketPath, s.socketInfo
	s.socketPath, s.socketInfo = "", nil
	fi, err := os.Lstat(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("remove helper socket: %w", err)
	}
	if !os.SameFile(fi, info) {
		return nil // someone else's now
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("remove helper socket: %w", err)
	}
	return nil
}
