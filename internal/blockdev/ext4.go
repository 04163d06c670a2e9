package blockdev

import (
	"context"
	"errors"
	"fmt"
)

// GrowExt4 grows the ext4 filesystem in path (an image file or a block device) to
// fill it. It first runs `e2fsck -fy`, because resize2fs refuses a filesystem that
// has not been checked since it was last mounted or written; e2fsck's exit status 1
// ("errors corrected") is accepted, anything above is a failure that names the
// tool and carries its output. The filesystem must not be mounted.
func GrowExt4(ctx context.Context, path string) error {
	if _, err := run(ctx, "", "e2fsck", "-fy", path); err != nil {
		var ce *CommandError
		if !errors.As(err, &ce) || ce.ExitCode != 1 {
			return fmt.Errorf("grow ext4 %s: check before resize (banger grows only ext4 root filesystems): %w", path, err)
		}
	}
	if _, err := run(ctx, "", "resize2fs", path); err != nil {
		return fmt.Errorf("grow ext4 %s: %w", path, err)
	}
	return nil
}
