package config

import (
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

func TestDNSUpstreams(t *testing.T) {
	tests := []struct {
		name, body string
		want       []string // nil: an error mentioning wantErr
		wantErr    string
	}{
		{"absent means the host's", "", []string{}, ""},
		{"ip and ip:port", "[dns]\nupstreams = [\"192.0.2.53\", \"192.0.2.54:5353\", \"[2001:db8::53]:53\"]\n",
			[]string{"192.0.2.53:53", "192.0.2.54:5353", "[2001:db8::53]:53"}, ""},
		{"hostname", "[dns]\nupstreams = [\"dns.example\"]\n", nil, "dns.upstreams entry \"dns.example\""},
		{"port zero", "[dns]\nupstreams = [\"192.0.2.53:0\"]\n", nil, "dns.upstreams"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "config.toml")
			if err := os.WriteFile(path, []byte(tt.body), 0o644); err != nil {
				t.Fatal(err)
			}
			cfg, err := Load(path)
			if tt.want == nil {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("Load: got %v, want an error mentioning %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatalf("Load: %v", err)
			}
			got := []string{}
			for _, u := range cfg.DNS.Upstreams {
				ap, err := ParseUpstream(u)
				if err != nil {
					t.Fatal(err)
				}
				got = append(got, ap.String())
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("upstreams: got %v, want %v", got, tt.want)
			}
		})
	}
}
