package oci

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"syscall"

	"github.com/google/go-containerregistry/pkg/v1/remote/transport"
)

// Errors a caller can test for with errors.Is.
var (
	ErrBadReference = errors.New("oci: invalid image reference")
	ErrNotFound     = errors.New("oci: image not found")
	ErrUnauthorized = errors.New("oci: access denied by the registry")
	ErrUnreachable  = errors.New("oci: registry unreachable")
	ErrPlatform     = errors.New("oci: no image for this platform")
	ErrNotImage     = errors.New("oci: not an image")
	ErrPlainHTTP    = errors.New("oci: plain HTTP refused for a registry that is not on this machine")
)

// Classify wraps a registry error with the sentinel that says what went
// wrong and what the user can do, keeping the original error text.
func Classify(err error, what string) error {
	if err == nil {
		return nil
	}
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return fmt.Errorf("%s: %w", what, err)
	}
	if errors.Is(err, ErrPlainHTTP) {
		return fmt.Errorf("%s: %w", what, err)
	}
	var te *transport.Error
	if errors.As(err, &te) {
		switch {
		case te.StatusCode == http.StatusNotFound || hasCode(te, transport.ManifestUnknownErrorCode, transport.NameUnknownErrorCode):
			return fmt.Errorf("%s: %w: check the name and tag (%v)", what, ErrNotFound, err)
		case te.StatusCode == http.StatusUnauthorized || te.StatusCode == http.StatusForbidden ||
			hasCode(te, transport.UnauthorizedErrorCode, transport.DeniedErrorCode):
			return fmt.Errorf("%s: %w: log in with `docker login` (credentials are read from ~/.docker/config.json), or check the name (%v)", what, ErrUnauthorized, err)
		}
		return fmt.Errorf("%s: registry error: %w", what, err)
	}
	var ne net.Error
	var dnsErr *net.DNSError
	var opErr *net.OpError
	if errors.As(err, &dnsErr) || errors.As(err, &opErr) || errors.As(err, &ne) ||
		errors.Is(err, syscall.ECONNREFUSED) || errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EHOSTUNREACH) {
		return fmt.Errorf("%s: %w: check the registry address and your network (%v)", what, ErrUnreachable, err)
	}
	return fmt.Errorf("%s: %w", what, err)
}

func hasCode(te *transport.Error, codes ...transport.ErrorCode) bool {
	for _, d := range te.Errors {
		for _, c := range codes {
			if d.Code == c {
				return true
			}
		}
	}
	return false
}

// guardTransport refuses plain-HTTP requests to hosts other than this
// machine. go-containerregistry falls back to HTTP for private (RFC 1918)
// registries on its own; banger allows it only for loopback ones.
type guardTransport struct{ next http.RoundTripper }

func (g guardTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	if req.URL.Scheme == "http" && !isLoopback(req.URL.Host) {
		return nil, fmt.Errorf("%s: %w", req.URL.Host, ErrPlainHTTP)
	}
	return g.next.RoundTrip(req)
}
