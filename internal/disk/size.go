package disk

import "banger/internal/bytesize"

// ParseSize reads a size such as "10G" or "512M"; see bytesize.Parse.
func ParseSize(s string) (int64, error) { return bytesize.Parse(s) }

// FormatSize prints n bytes in the largest readable binary unit; see bytesize.Format.
func FormatSize(n int64) string { return bytesize.Format(n) }
