package vmdns

import (
	"errors"
	"net/netip"
	"strings"
	"testing"
	"time"
)

func TestValidateName(t *testing.T) {
	tests := []struct {
		name string
		ok   bool
	}{
		{"dev", true},
		{"Dev-1", true},
		{"1", true},
		{"a-b-c", true},
		{strings.Repeat("a", 63), true},
		{"", false},
		{strings.Repeat("a", 64), false},
		{"-dev", false},
		{"dev-", false},
		{"dev.vm", false},
		{"dev_1", false},
		{"dév", false},
		{"dev vm", false},
	}
	for _, tt := range tests {
		err := ValidateName(tt.name)
		if (err == nil) != tt.ok {
			t.Errorf("ValidateName(%q): got %v, want ok=%v", tt.name, err, tt.ok)
		}
		if err != nil && !errors.Is(err, ErrInvalidName) {
			t.Errorf("ValidateName(%q): got %v, want it to wrap ErrInvalidName", tt.name, err)
		}
	}
}

func TestSetValidates(t *testing.T) {
	s, err := New(Options{})
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name    string
		ip      netip.Addr
		wantErr error
	}{
		{"bad_name", netip.MustParseAddr("10.0.0.1"), ErrInvalidName},
		{"v6", netip.MustParseAddr("2001:db8::1"), ErrNotIPv4},
		{"zero", netip.Addr{}, ErrNotIPv4},
	}
	for _, tt := range tests {
		if err := s.Set(tt.name, tt.ip); !errors.Is(err, tt.wantErr) {
			t.Errorf("Set(%q, %v): got %v, want %v", tt.name, tt.ip, err, tt.wantErr)
		}
	}
	if got := len(s.Records()); got != 0 {
		t.Errorf("records after failed Sets: got %d, want 0", got)
	}
	if err := s.Replace(map[string]netip.Addr{"a": netip.MustParseAddr("::1")}); !errors.Is(err, ErrNotIPv4) {
		t.Errorf("Replace with IPv6: got %v, want ErrNotIPv4", err)
	}
	err = s.Replace(map[string]netip.Addr{"a": netip.MustParseAddr("10.0.0.1"), "A": netip.MustParseAddr("10.0.0.2")})
	if !errors.Is(err, ErrInvalidName) {
		t.Errorf("Replace with names equal but for case and different addresses: got %v, want ErrInvalidName", err)
	}
}

func TestRecordsAndLookup(t *testing.T) {
	s, err := New(Options{})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Set("Dev", netip.MustParseAddr("::ffff:10.0.0.5")); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"dev", "DEV", "Dev"} {
		ip, ok := s.Lookup(name)
		if !ok || ip != netip.MustParseAddr("10.0.0.5") {
			t.Errorf("Lookup(%q): got %v, %v; want 10.0.0.5, true", name, ip, ok)
		}
	}
	if ip, ok := s.Lookup("dev.vm"); ok {
		t.Errorf("Lookup of a full name: got %v, true; want false (Lookup takes the VM name)", ip)
	}
	recs := s.Records()
	if len(recs) != 1 || recs["dev"] != netip.MustParseAddr("10.0.0.5") {
		t.Errorf("Records: got %v, want map[dev:10.0.0.5]", recs)
	}
	recs["intruder"] = netip.MustParseAddr("10.6.6.6")
	if _, ok := s.Lookup("intruder"); ok {
		t.Errorf("changing the map Records returned changed the server")
	}
}

func TestSerialMovesOnChangeOnly(t *testing.T) {
	r := newRecords(time.Unix(1000, 0))
	steps := []struct {
		name   string
		do     func() error
		change bool
	}{
		{"set new", func() error { return r.set("a", netip.MustParseAddr("10.0.0.1")) }, true},
		{"set same", func() error { return r.set("A", netip.MustParseAddr("10.0.0.1")) }, false},
		{"set other address", func() error { return r.set("a", netip.MustParseAddr("10.0.0.2")) }, true},
		{"remove absent", func() error { r.remove("b"); return nil }, false},
		{"remove", func() error { r.remove("a"); return nil }, true},
		{"replace", func() error { return r.replace(map[string]netip.Addr{"c": netip.MustParseAddr("10.0.0.3")}) }, true},
		{"failed replace", func() error { _ = r.replace(map[string]netip.Addr{"-": {}}); return nil }, false},
	}
	prev := r.currentSerial()
	if prev != 1000 {
		t.Fatalf("initial serial: got %d, want the Unix time 1000", prev)
	}
	for _, st := range steps {
		if err := st.do(); err != nil {
			t.Fatalf("%s: %v", st.name, err)
		}
		got := r.currentSerial()
		if changed := got != prev; changed != st.change {
			t.Errorf("%s: serial %d → %d, want changed=%v", st.name, prev, got, st.change)
		}
		prev = got
	}
}
