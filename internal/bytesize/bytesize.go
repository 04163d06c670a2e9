// Package bytesize reads and prints sizes in binary units (10G, 512M, 1.5GiB) the way
// qemu-img, Firecracker and Multipass do; a leaf so that config and disk can share it.
package bytesize

import (
	"fmt"
	"math"
	"strconv"
	"strings"
)

// Parse reads a size such as "10G", "512M", "1.5GiB" or "4096". Units are
// binary whatever their spelling (K, KB, KiB = 1024; M = 1024²; G; T), as qemu-img,
// Firecracker and Multipass read them; case does not matter; a bare number is bytes.
// The result must be positive.
func Parse(s string) (int64, error) {
	in := strings.TrimSpace(s)
	if in == "" {
		return 0, fmt.Errorf("size is empty: use a number with a unit, like 10G or 512M")
	}
	num := strings.TrimRightFunc(in, func(r rune) bool { return r >= 'A' && r <= 'Z' || r >= 'a' && r <= 'z' })
	unit := strings.ToUpper(strings.TrimSpace(in[len(num):]))
	num = strings.TrimSpace(num)
	if num == "" || strings.ContainsAny(num, "+-eE") {
		return 0, fmt.Errorf("size %q: want a positive number with a unit, like 10G or 512M", s)
	}
	var shift uint
	switch strings.TrimSuffix(strings.TrimSuffix(unit, "B"), "I") {
	case "":
		if unit != "" && unit != "B" {
			return 0, fmt.Errorf("size %q: unknown unit %q: use K, M, G or T (10G, 512M)", s, unit)
		}
	case "K":
		shift = 10
	case "M":
		shift = 20
	case "G":
		shift = 30
	case "T":
		shift = 40
	default:
		return 0, fmt.Errorf("size %q: unknown unit %q: use K, M, G or T (10G, 512M)", s, unit)
	}
	if n, err := strconv.ParseInt(num, 10, 64); err == nil {
		if n <= 0 || n > math.MaxInt64>>shift {
			return 0, fmt.Errorf("size %q: out of range", s)
		}
		return n << shift, nil
	}
	f, err := strconv.ParseFloat(num, 64)
	if err != nil || f <= 0 {
		return 0, fmt.Errorf("size %q: want a positive number with a unit, like 10G or 512M", s)
	}
	v := math.Ceil(f * float64(uint64(1)<<shift))
	if v >= math.MaxInt64 {
		return 0, fmt.Errorf("size %q: out of range", s)
	}
	return int64(v), nil
}

// Format prints n bytes in the largest binary unit that keeps it readable
// ("10G", "1.5G", "512M", "4096").
func Format(n int64) string {
	for _, u := range []struct {
		suffix string
		shift  uint
	}{{"T", 40}, {"G", 30}, {"M", 20}, {"K", 10}} {
		if n >= 1<<u.shift {
			v := float64(n) / float64(int64(1)<<u.shift)
			if n%(1<<u.shift) == 0 {
				return strconv.FormatInt(n>>u.shift, 10) + u.suffix
			}
			return strconv.FormatFloat(v, 'f', 1, 64) + u.suffix
		}
	}
	return strconv.FormatInt(n, 10)
}
