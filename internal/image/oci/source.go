// Package oci finds OCI and Docker images: in registries (credentials from
// ~/.docker/config.json; plain HTTP only for loopback registries), in OCI
// layout directories and in `docker save` archives. It picks the host's
// platform out of multi-arch indexes and resolves an image to its identity,
// the digest of its config, reading manifests only. Layers are read later,
// by the caller, through OpenLayer.
package oci

import (
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"

	"github.com/google/go-containerregistry/pkg/name"
)

// Kind is where an image comes from.
type Kind string

// The kinds of image source.
const (
	KindRegistry Kind = "registry"
	KindLayout   Kind = "oci-layout"
	KindArchive  Kind = "docker-archive"
)

// Source is a parsed image reference.
type Source struct {
	Kind Kind
	Ref  name.Reference // KindRegistry
	Path string         // KindLayout, KindArchive: an absolute path
	// Tag picks one image when a layout or archive holds several: the
	// layout's org.opencontainers.image.ref.name annotation, or the
	// archive's repo:tag.
	Tag string
}

func (s Source) String() string {
	switch s.Kind {
	case KindRegistry:
		return s.Ref.String()
	case KindLayout:
		if s.Tag != "" {
			return "oci:" + s.Path + ":" + s.Tag
		}
		return "oci:" + s.Path
	default:
		if s.Tag != "" {
			return "docker-archive:" + s.Path + ":" + s.Tag
		}
		return "docker-archive:" + s.Path
	}
}

// Prefixes of local references.
const (
	layoutPrefix  = "oci:"
	archivePrefix = "docker-archive:"
)

// ParseSource parses what `banger image pull` takes:
//
//	oci:/path/to/layout[:tag]          an OCI layout directory
//	docker-archive:/path/to/x.tar[:repo:tag]   a `docker save` archive
//	/abs/path, ./path, ../path         a layout directory or an archive file
//	anything else                      a registry reference (alpine, ghcr.io/x/y:1, localhost:5000/z@sha256:...)
//
// Local paths must be absolute after the prefix, since the daemon's working
// directory means nothing to the user; the CLI makes them so. A bare
// relative name is always a registry reference, never a file.
func ParseSource(ref string) (Source, error) {
	switch {
	case strings.HasPrefix(ref, layoutPrefix):
		p, tag, err := splitPathTag(strings.TrimPrefix(ref, layoutPrefix))
		if err != nil {
			return Source{}, err
		}
		return Source{Kind: KindLayout, Path: p, Tag: tag}, nil
	case strings.HasPrefix(ref, archivePrefix):
		p, tag, err := splitPathTag(strings.TrimPrefix(ref, archivePrefix))
		if err != nil {
			return Source{}, err
		}
		return Source{Kind: KindArchive, Path: p, Tag: tag}, nil
	case filepath.IsAbs(ref) || strings.HasPrefix(ref, "./") || strings.HasPrefix(ref, "../"):
		p, err := filepath.Abs(ref)
		if err != nil {
			return Source{}, err
		}
		fi, err := os.Stat(p)
		if err != nil {
			return Source{}, fmt.Errorf("image %q: %w", ref, err)
		}
		if fi.IsDir() {
			return Source{Kind: KindLayout, Path: p}, nil
		}
		return Source{Kind: KindArchive, Path: p}, nil
	}
	r, err := name.ParseReference(ref)
	if err != nil {
		return Source{}, fmt.Errorf("image reference %q: %v: %w", ref, err, ErrBadReference)
	}
	if isLoopback(r.Context().RegistryStr()) {
		// Plain HTTP is fine on this machine; nowhere else (see guardTransport).
		if r, err = name.ParseReference(ref, name.Insecure); err != nil {
			return Source{}, fmt.Errorf("image reference %q: %v: %w", ref, err, ErrBadReference)
		}
	}
	return Source{Kind: KindRegistry, Ref: r}, nil
}

// splitPathTag splits "PATH[:TAG]". The path must exist; since both paths
// and tags may hold colons, the first prefix that exists is the path.
func splitPathTag(s string) (path, tag string, err error) {
	if !filepath.IsAbs(s) {
		return "", "", fmt.Errorf("image path %q must be absolute: %w", s, ErrBadReference)
	}
	if _, err := os.Stat(s); err == nil {
		return filepath.Clean(s), "", nil
	}
	for i := 1; i < len(s); i++ {
		if s[i] != ':' {
			continue
		}
		if _, err := os.Stat(s[:i]); err == nil {
			return filepath.Clean(s[:i]), s[i+1:], nil
		}
	}
	_, err = os.Stat(s)
	return "", "", fmt.Errorf("image path: %w", err)
}

// isLoopback reports whether a registry host[:port] is this machine.
func isLoopback(hostport string) bool {
	host := hostport
	if h, _, err := net.SplitHostPort(hostport); err == nil {
		host = h
	}
	host = strings.Trim(host, "[]")
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}
