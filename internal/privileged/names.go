package privileged

import (
	"fmt"
	"regexp"
	"strconv"
	"strings"
)

// Tap naming. banger creates taps under exactly two patterns, and the helper refuses to
// create, delete or touch any interface outside them:
//
//	tap-pool-N   an idle pool tap (N a decimal index, monotonic per daemon)
//	tap-vm-X     a tap created for one VM when the pool was empty (X: 1-8 lowercase hex)
//
// Linux limits interface names to 15 bytes (IFNAMSIZ-1); both patterns stay under it.
const (
	PoolTapPrefix = "tap-pool-"
	VMTapPrefix   = "tap-vm-"
	MaxIfaceName  = 15
)

var (
	poolTapRe = regexp.MustCompile(`^tap-pool-(0|[1-9][0-9]{0,5})$`)
	vmTapRe   = regexp.MustCompile(`^tap-vm-[0-9a-f]{1,8}$`)
)

// PoolTapName returns the pool tap name for index n.
func PoolTapName(n int) string { return PoolTapPrefix + strconv.Itoa(n) }

// VMTapName returns the fallback tap name for a VM id (its first 8 hex characters).
func VMTapName(vmID string) string {
	id := strings.ToLower(vmID)
	if len(id) > 8 {
		id = id[:8]
	}
	return VMTapPrefix + id
}

// PoolTapIndex returns N for a pool tap name.
func PoolTapIndex(name string) (int, bool) {
	if !poolTapRe.MatchString(name) {
		return 0, false
	}
	n, err := strconv.Atoi(strings.TrimPrefix(name, PoolTapPrefix))
	return n, err == nil
}

// IsPoolTap reports whether name is a pool tap.
func IsPoolTap(name string) bool { _, ok := PoolTapIndex(name); return ok }

// ValidateTapName accepts only banger's tap patterns, at most 15 bytes.
func ValidateTapName(name string) error {
	if len(name) > MaxIfaceName {
		return fmt.Errorf("tap name %q is %d bytes: Linux allows at most %d", name, len(name), MaxIfaceName)
	}
	if !poolTapRe.MatchString(name) && !vmTapRe.MatchString(name) {
		return fmt.Errorf("tap name %q is not one of banger's (tap-pool-N or tap-vm-<hex>): banger touches only its own taps", name)
	}
	return nil
}
