package bytesize

import (
	"strings"
	"testing"
)

func TestParse(t *testing.T) {
	tests := []struct {
		in   string
		want int64
		err  string
	}{
		{in: "10G", want: 10 << 30},
		{in: "512M", want: 512 << 20},
		{in: "512m", want: 512 << 20},
		{in: "1T", want: 1 << 40},
		{in: "64K", want: 64 << 10},
		{in: "10GiB", want: 10 << 30},
		{in: "10GB", want: 10 << 30},
		{in: "10Gi", want: 10 << 30},
		{in: " 2G ", want: 2 << 30},
		{in: "1.5G", want: 3 << 29},
		{in: "4096", want: 4096},
		{in: "4096B", want: 4096},
		{in: "", err: "empty"},
		{in: "G", err: "positive number"},
		{in: "0", err: "out of range"},
		{in: "-1G", err: "positive number"},
		{in: "10X", err: "unknown unit"},
		{in: "10GX", err: "unknown unit"},
		{in: "1e3M", err: "positive number"},
		{in: "9999999999T", err: "out of range"},
		{in: "ten", err: "positive number"},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			got, err := Parse(tt.in)
			if tt.err != "" {
				if err == nil || !strings.Contains(err.Error(), tt.err) {
					t.Errorf("Parse(%q) = %d, %v; want an error containing %q", tt.in, got, err, tt.err)
				}
				return
			}
			if err != nil || got != tt.want {
				t.Errorf("Parse(%q) = %d, %v; want %d", tt.in, got, err, tt.want)
			}
		})
	}
}

func TestFormat(t *testing.T) {
	tests := []struct {
		in   int64
		want string
	}{
		{10 << 30, "10G"}, {3 << 29, "1.5G"}, {512 << 20, "512M"}, {4096, "4K"}, {100, "100"}, {1 << 40, "1T"},
	}
	for _, tt := range tests {
		if got := Format(tt.in); got != tt.want {
			t.Errorf("Format(%d) = %q, want %q", tt.in, got, tt.want)
		}
		if back, err := Parse(Format(tt.in)); err != nil || back != tt.in {
			t.Errorf("Parse(Format(%d)) = %d, %v", tt.in, back, err)
		}
	}
}
