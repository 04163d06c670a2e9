package system

import (
	"errors"
	"fmt"
	"io/fs"

	"banger/internal/config"
	"banger/internal/layout"
	"banger/internal/trustfs"
)

// maxConfig bounds config.toml; a real one is a few hundred bytes.
const maxConfig = 1 << 20

// LoadConfig reads ROOT/config.toml for a command that runs as root. What it says
// decides what root does (the bridge `system uninstall` deletes, the overlap check
// of `system run`), so only a file nobody but root could have written is read:
// root's, not group/other-writable, one link, in root's directories up to /
// (trustfs), read through the descriptor that was checked. A missing file means
// the defaults.
func LoadConfig(l layout.Layout) (config.Config, error) {
	data, err := trustfs.ReadRootFile(l.ConfigPath(), maxConfig)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		data = nil
	case errors.Is(err, trustfs.ErrUntrusted):
		return config.Config{}, fmt.Errorf("refusing to use %s: %w", l.ConfigPath(), err)
	case err != nil:
		return config.Config{}, fmt.Errorf("config: %w", err)
	}
	return config.Parse(data, l.ConfigPath())
}
