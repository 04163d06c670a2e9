package vmdns

import (
	"errors"
	"io/fs"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"testing"
)

func TestUpstreams(t *testing.T) {
	const stub = "# This is /run/systemd/resolve/stub-resolv.conf managed by man:systemd-resolved(8).\n" +
		"nameserver 127.0.0.53\noptions edns0 trust-ad\nsearch lan\n"
	tests := []struct {
		name     string
		resolv   string
		resolved *string // nil: no such file
		exclude  []string
		want     []string
		wantErr  error
	}{
		{
			name:   "plain",
			resolv: "nameserver 192.0.2.1\nnameserver 192.0.2.2\n",
			want:   []string{"192.0.2.1:53", "192.0.2.2:53"},
		},
		{
			name: "comments, options and search lines",
			resolv: "# nameserver 198.51.100.1\n; nameserver 198.51.100.2\n" +
				"search example.com\noptions edns0 ndots:2\n  nameserver\t192.0.2.1   # the main one\n" +
				"nameserver 192.0.2.2;backup\ndomain example.com\n",
			want: []string{"192.0.2.1:53", "192.0.2.2:53"},
		},
		{
			name:   "IPv6 with and without zone",
			resolv: "nameserver 2001:db8::1\nnameserver fe80::1%eth0\n",
			want:   []string{"[2001:db8::1]:53", "[fe80::1%eth0]:53"},
		},
		{
			name:   "ports",
			resolv: "nameserver 192.0.2.1:5353\nnameserver [2001:db8::1]:5300\nnameserver [fe80::2%br0]:53\n",
			want:   []string{"192.0.2.1:5353", "[2001:db8::1]:5300", "[fe80::2%br0]:53"},
		},
		{
			name:   "garbage, hostnames and duplicates skipped",
			resolv: "nameserver dns.example.com\nnameserver\nnameserver 192.0.2.1\nnameserver 192.0.2.1:53\nnameserver 300.1.1.1\nnameserver 192.0.2.9:0\n",
			want:   []string{"192.0.2.1:53"},
		},
		{
			name:     "resolved stub: the real upstreams",
			resolv:   stub,
			resolved: ptr("# This is /run/systemd/resolve/resolv.conf\nnameserver 192.0.2.10\nnameserver 2001:db8::10\nsearch lan\n"),
			want:     []string{"192.0.2.10:53", "[2001:db8::10]:53"},
		},
		{
			name:     "resolved DNSSEC proxy 127.0.0.54 alongside the stub",
			resolv:   "nameserver 127.0.0.54\nnameserver 127.0.0.53\n",
			resolved: ptr("nameserver 192.0.2.10\n"),
			want:     []string{"192.0.2.10:53"},
		},
		{
			name:     "stub next to a real server is kept as listed",
			resolv:   "nameserver 127.0.0.53\nnameserver 192.0.2.1\n",
			resolved: ptr("nameserver 192.0.2.10\n"),
			want:     []string{"127.0.0.53:53", "192.0.2.1:53"},
		},
		{
			name:   "stub without resolved's file falls back to the stub",
			resolv: stub,
			want:   []string{"127.0.0.53:53"},
		},
		{
			name:     "stub with resolved listing no server falls back to the stub",
			resolv:   stub,
			resolved: ptr("# No DNS servers known.\n"),
			want:     []string{"127.0.0.53:53"},
		},
		{
			name:    "own address excluded",
			resolv:  "nameserver 172.30.77.1:5353\nnameserver 192.0.2.1\n",
			exclude: []string{"172.30.77.1:5353"},
			want:    []string{"192.0.2.1:53"},
		},
		{
			name:    "wildcard listener excludes loopback on its port",
			resolv:  "nameserver 127.0.0.1:5353\nnameserver 127.0.0.1\n",
			exclude: []string{"0.0.0.0:5353"},
			want:    []string{"127.0.0.1:53"},
		},
		{
			name:     "own address excluded behind the stub too",
			resolv:   stub,
			resolved: ptr("nameserver 172.30.77.1:5353\nnameserver 192.0.2.10\n"),
			exclude:  []string{"172.30.77.1:5353"},
			want:     []string{"192.0.2.10:53"},
		},
		{
			name:    "only itself",
			resolv:  "nameserver 172.30.77.1:5353\n",
			exclude: []string{"172.30.77.1:5353"},
			wantErr: ErrNoUpstreams,
		},
		{
			name:    "no nameserver line",
			resolv:  "search lan\noptions edns0\n",
			wantErr: ErrNoUpstreams,
		},
		{
			name:    "empty file",
			resolv:  "",
			wantErr: ErrNoUpstreams,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			src := UpstreamSource{
				ResolvConf:   filepath.Join(dir, "resolv.conf"),
				ResolvedConf: filepath.Join(dir, "resolved.conf"), // absent unless written below
			}
			writeFile(t, src.ResolvConf, tt.resolv)
			if tt.resolved != nil {
				writeFile(t, src.ResolvedConf, *tt.resolved)
			}
			for _, e := range tt.exclude {
				src.Exclude = append(src.Exclude, netip.MustParseAddrPort(e))
			}
			got, err := src.Upstreams()
			if tt.wantErr != nil {
				if !errors.Is(err, tt.wantErr) {
					t.Fatalf("got %v, %v; want error %v", got, err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("Upstreams: %v", err)
			}
			if !slices.Equal(got, tt.want) {
				t.Errorf("got %q, want %q", got, tt.want)
			}
			// Every result must be accepted back by New.
			if _, err := New(Options{Upstreams: got}); err != nil {
				t.Errorf("New rejects what Upstreams returned: %v", err)
			}
		})
	}
}

func TestUpstreamsMissingFile(t *testing.T) {
	dir := t.TempDir()
	_, err := UpstreamSource{ResolvConf: filepath.Join(dir, "nope"), ResolvedConf: filepath.Join(dir, "nope2")}.Upstreams()
	if !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("got %v, want fs.ErrNotExist", err)
	}
}

func TestHostUpstreams(t *testing.T) {
	path := filepath.Join(t.TempDir(), "resolv.conf")
	writeFile(t, path, "nameserver 192.0.2.1\nnameserver 2001:db8::1\n")
	got, err := HostUpstreams(path)
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{"192.0.2.1:53", "[2001:db8::1]:53"}; !slices.Equal(got, want) {
		t.Errorf("got %q, want %q", got, want)
	}
}

func TestParseUpstream(t *testing.T) {
	tests := []struct {
		in   string
		want string // "" means an error
	}{
		{"192.0.2.1", "192.0.2.1:53"},
		{"192.0.2.1:5353", "192.0.2.1:5353"},
		{"::ffff:192.0.2.1", "192.0.2.1:53"},
		{"2001:db8::1", "[2001:db8::1]:53"},
		{"[2001:db8::1]:5353", "[2001:db8::1]:5353"},
		{"fe80::1%eth0", "[fe80::1%eth0]:53"},
		{"dns.google", ""},
		{"dns.google:53", ""},
		{"192.0.2.1:0", ""},
		{"", ""},
	}
	for _, tt := range tests {
		got, err := ParseUpstream(tt.in)
		switch {
		case tt.want == "" && err == nil:
			t.Errorf("ParseUpstream(%q): got %v, want an error", tt.in, got)
		case tt.want != "" && (err != nil || got.String() != tt.want):
			t.Errorf("ParseUpstream(%q): got %v, %v; want %s", tt.in, got, err, tt.want)
		}
	}
}

func writeFile(t *testing.T, path, content string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}

func ptr[T any](v T) *T { return &v }
