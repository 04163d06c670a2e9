package vmdns

import (
	"net/netip"
	"strings"
	"testing"
)

func TestResolveHint(t *testing.T) {
	tests := []struct {
		name    string
		domain  string
		addr    string
		want    []string
		wantNot []string
	}{
		{
			name:   "bridge address, port 5353",
			domain: "vm",
			addr:   "172.30.77.1:5353",
			want: []string{
				"no systemd-resolved", "at 172.30.77.1:5353",
				"`dig @172.30.77.1 -p 5353 NAME.vm`",
				"`server=/vm/172.30.77.1#5353`",
				"cannot carry a port",
			},
			wantNot: []string{"nameserver 172.30.77.1`"},
		},
		{
			name:    "port 53 can go in resolv.conf",
			domain:  "vm",
			addr:    "172.30.77.1:53",
			want:    []string{"`dig @172.30.77.1 NAME.vm`", "`nameserver 172.30.77.1`", "`server=/vm/172.30.77.1`"},
			wantNot: []string{"-p ", "cannot carry a port", "#53"},
		},
		{
			name:    "wildcard shows loopback",
			domain:  "Dev.Local.",
			addr:    "0.0.0.0:5353",
			want:    []string{"VM names (NAME.dev.local)", "`dig @127.0.0.1 -p 5353 NAME.dev.local`", "`server=/dev.local/127.0.0.1#5353`"},
			wantNot: []string{"0.0.0.0"},
		},
		{
			name:   "IPv6",
			domain: "",
			addr:   "[::]:5353",
			want:   []string{"at [::1]:5353", "`dig @::1 -p 5353 NAME.vm`", "`server=/vm/::1#5353`"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := ResolveHint(tt.domain, netip.MustParseAddrPort(tt.addr))
			for _, w := range tt.want {
				if !strings.Contains(got, w) {
					t.Errorf("got %q, want it to contain %q", got, w)
				}
			}
			for _, w := range tt.wantNot {
				if strings.Contains(got, w) {
					t.Errorf("got %q, want it not to contain %q", got, w)
				}
			}
		})
	}
}
