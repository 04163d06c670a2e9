// Package buildinfo reports the version banger's binaries were built as.
package buildinfo

import (
	"runtime/debug"
	"sync"
)

// Version is set at link time (-ldflags "-X banger/internal/buildinfo.Version=v1.2.3").
// When it is empty, Get derives a version from the VCS stamp Go embeds.
var Version = ""

var (
	once    sync.Once
	version string
)

// Get returns the version string shared by the CLI, bangerd, the helper and the agent.
// Two binaries built from the same tree report the same string, which is what the
// daemon compares against the helper's and the agent's.
func Get() string {
	once.Do(func() {
		if Version != "" {
			version = Version
			return
		}
		version = "dev"
		bi, ok := debug.ReadBuildInfo()
		if !ok {
			return
		}
		var rev, dirty string
		for _, s := range bi.Settings {
			switch s.Key {
			case "vcs.revision":
				rev = s.Value
			case "vcs.modified":
				if s.Value == "true" {
					dirty = "-dirty"
				}
			}
		}
		if len(rev) > 12 {
			rev = rev[:12]
		}
		if rev != "" {
			version = "dev-" + rev + dirty
		}
	})
	return version
}
