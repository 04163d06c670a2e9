package oci

import (
	"errors"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"
)

func TestParseSource(t *testing.T) {
	dir := t.TempDir()
	lay := filepath.Join(dir, "lay")
	if err := os.Mkdir(lay, 0o755); err != nil {
		t.Fatal(err)
	}
	archive := filepath.Join(dir, "a:b.tar") // a colon in the path itself
	if err := os.WriteFile(archive, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		in         string
		kind       Kind
		path, tag  string
		registry   string // for registry refs: the registry host
		wantErr    error
		wantString string
	}{
		{in: "alpine", kind: KindRegistry, registry: "index.docker.io", wantString: "alpine"},
		{in: "ghcr.io/a/b:1", kind: KindRegistry, registry: "ghcr.io"},
		{in: "localhost:5000/x@sha256:" + strings.Repeat("a", 64), kind: KindRegistry, registry: "localhost:5000"},
		{in: "oci:" + lay, kind: KindLayout, path: lay},
		{in: "oci:" + lay + ":v1", kind: KindLayout, path: lay, tag: "v1"},
		{in: lay, kind: KindLayout, path: lay},
		{in: "docker-archive:" + archive, kind: KindArchive, path: archive},
		{in: "docker-archive:" + archive + ":example.com/x:1", kind: KindArchive, path: archive, tag: "example.com/x:1"},
		{in: archive, kind: KindArchive, path: archive},
		{in: "oci:relative/dir", wantErr: ErrBadReference},
		{in: "Not A Reference", wantErr: ErrBadReference},
		{in: filepath.Join(dir, "missing"), wantErr: os.ErrNotExist},
	} {
		t.Run(tc.in, func(t *testing.T) {
			s, err := ParseSource(tc.in)
			if tc.wantErr != nil {
				if !errors.Is(err, tc.wantErr) {
					t.Fatalf("got %+v, %v, want %v", s, err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if s.Kind != tc.kind || s.Path != tc.path || s.Tag != tc.tag {
				t.Errorf("got %s %q %q, want %s %q %q", s.Kind, s.Path, s.Tag, tc.kind, tc.path, tc.tag)
			}
			if tc.registry != "" && s.Ref.Context().RegistryStr() != tc.registry {
				t.Errorf("registry: got %s, want %s", s.Ref.Context().RegistryStr(), tc.registry)
			}
			if tc.wantString != "" && s.String() != tc.wantString {
				t.Errorf("String: got %q, want %q", s.String(), tc.wantString)
			}
		})
	}
}

func TestLoopbackOnlyPlainHTTP(t *testing.T) {
	for host, want := range map[string]bool{
		"localhost:5000": true, "127.0.0.1:80": true, "127.1.2.3": true, "[::1]:5000": true,
		"10.0.0.1:5000": false, "192.168.1.2": false, "registry.example.com": false,
	} {
		if got := isLoopback(host); got != want {
			t.Errorf("isLoopback(%q): got %v, want %v", host, got, want)
		}
	}
	called := false
	g := guardTransport{next: roundTripFunc(func(*http.Request) (*http.Response, error) {
		called = true
		return &http.Response{StatusCode: 200, Body: http.NoBody}, nil
	})}
	req, _ := http.NewRequest("GET", "http://10.0.0.1:5000/v2/", nil)
	if _, err := g.RoundTrip(req); !errors.Is(err, ErrPlainHTTP) || called {
		t.Errorf("plain HTTP to 10.0.0.1: got %v (sent: %v), want ErrPlainHTTP and nothing sent", err, called)
	}
	for _, u := range []string{"https://10.0.0.1:5000/v2/", "http://127.0.0.1:5000/v2/"} {
		req, _ := http.NewRequest("GET", u, nil)
		if _, err := g.RoundTrip(req); err != nil {
			t.Errorf("%s: %v, want it allowed", u, err)
		}
	}
}

type roundTripFunc func(*http.Request) (*http.Response, error)

func (f roundTripFunc) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }

func TestPickPlatform(t *testing.T) {
	d := func(os, arch, variant string) v1.Descriptor {
		return v1.Descriptor{Digest: v1.Hash{Algorithm: "sha256", Hex: os + arch + variant}, Platform: &v1.Platform{OS: os, Architecture: arch, Variant: variant}}
	}
	descs := []v1.Descriptor{d("unknown", "unknown", ""), d("linux", "arm", "v6"), d("linux", "arm", "v7"), d("linux", "amd64", ""), d("windows", "amd64", "")}
	for _, tc := range []struct {
		want v1.Platform
		got  string
	}{
		{v1.Platform{OS: "linux", Architecture: "amd64"}, "linuxamd64"},
		{v1.Platform{OS: "linux", Architecture: "arm", Variant: "v7"}, "linuxarmv7"},
		{v1.Platform{OS: "windows", Architecture: "amd64"}, "windowsamd64"},
	} {
		got, err := pickPlatform(descs, tc.want, "test")
		if err != nil || got.Digest.Hex != tc.got {
			t.Errorf("pick %s: got %s, %v, want %s", tc.want, got.Digest.Hex, err, tc.got)
		}
	}
	_, err := pickPlatform(descs, v1.Platform{OS: "linux", Architecture: "riscv64"}, "image x")
	if !errors.Is(err, ErrPlatform) || !strings.Contains(err.Error(), "linux/amd64, linux/arm/v6, linux/arm/v7, windows/amd64") || strings.Contains(err.Error(), "unknown") {
		t.Errorf("no match: got %v, want ErrPlatform listing the real platforms", err)
	}
}
