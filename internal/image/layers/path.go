package layers

import (
	"fmt"
	"strings"
)

const (
	// maxNameLen is the longest file name ext4 stores.
	maxNameLen = 255
	// maxPathLen bounds a whole path (Linux PATH_MAX less the NUL). It also
	// keeps every debugfs script line well under debugfs's 8 KiB line buffer.
	maxPathLen = 4095
)

// splitPath turns an archive entry name into clean components relative to the
// image root. The name is interpreted lexically, as containerd and docker do:
// "." and empty components vanish, a leading "/" is ignored, and ".." removes
// the previous component but never climbs above the root ("../../etc/x" is
// "etc/x"): a hostile "../" path is neutralised into the image, not refused.
// Names that no ext4 image or debugfs script can carry are refused.
func splitPath(name string) ([]string, error) {
	if err := checkChars(name); err != nil {
		return nil, err
	}
	if len(name) > maxPathLen {
		return nil, fmt.Errorf("path is %d bytes long, more than %d: %w", len(name), maxPathLen, ErrUnsafe)
	}
	var comps []string
	for _, c := range strings.Split(name, "/") {
		switch c {
		case "", ".":
		case "..":
			if len(comps) > 0 {
				comps = comps[:len(comps)-1]
			}
		default:
			if len(c) > maxNameLen {
				return nil, fmt.Errorf("name %.40q... is %d bytes long, more than %d: %w", c, len(c), maxNameLen, ErrUnsafe)
			}
			comps = append(comps, c)
		}
	}
	return comps, nil
}

// checkChars refuses the bytes that would let a name break out of its line in
// a debugfs script (newline, carriage return) or that no Linux name holds
// (NUL).
func checkChars(s string) error {
	if i := strings.IndexAny(s, "\x00\n\r"); i >= 0 {
		return fmt.Errorf("name %q holds a NUL, newline or carriage return: %w", s, ErrUnsafe)
	}
	return nil
}

// joinPath renders components as an absolute image path.
func joinPath(comps []string) string {
	return "/" + strings.Join(comps, "/")
}
