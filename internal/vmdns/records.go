package vmdns

import (
	"errors"
	"fmt"
	"maps"
	"net/netip"
	"strings"
	"sync"
	"time"
)

// ErrInvalidName is wrapped by every error about a VM name that cannot be a DNS label.
var ErrInvalidName = errors.New("vmdns: invalid name")

// ErrNotIPv4 is wrapped by every error about an address the server cannot publish:
// it serves A records only.
var ErrNotIPv4 = errors.New("vmdns: not an IPv4 address")

// ValidateName reports whether name can be the first label of <name>.<domain>:
// 1 to 63 ASCII letters, digits or '-', neither starting nor ending with '-'
// (RFC 1123). Case does not matter; the server folds names to lower case.
func ValidateName(name string) error {
	if !isLabel(name) {
		return fmt.Errorf("%w %q: a VM's DNS name must be 1-63 letters, digits or '-', not starting or ending with '-'", ErrInvalidName, name)
	}
	return nil
}

// isLabel is ValidateName without the error: it sits on the query path.
func isLabel(s string) bool {
	if len(s) == 0 || len(s) > 63 || s[0] == '-' || s[len(s)-1] == '-' {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9', c == '-':
		default:
			return false
		}
	}
	return true
}

// checkRecord validates one record and returns its canonical form: the name in
// lower case and the address unmapped from IPv4-in-IPv6.
func checkRecord(name string, ip netip.Addr) (string, netip.Addr, error) {
	if err := ValidateName(name); err != nil {
		return "", netip.Addr{}, err
	}
	ip = ip.Unmap()
	if !ip.Is4() {
		return "", netip.Addr{}, fmt.Errorf("vm %q: address %v: %w (the VM DNS serves A records only; give the VM's guest IPv4)", name, ip, ErrNotIPv4)
	}
	return strings.ToLower(name), ip, nil
}

// records is the set of A records, one per live VM, keyed by lower-case label.
type records struct {
	mu sync.RWMutex // guards all following fields
	// byName maps a lower-case label to its IPv4. Never nil. Replace swaps in a
	// new map; Set and Remove edit it in place, so readers copy it under mu.
	byName map[string]netip.Addr
	// serial is the zone's SOA serial: bumped on every change so that anyone
	// comparing serials sees the zone moved. Starts at the Unix time, so a
	// restarted daemon does not go backwards.
	serial uint32
}

func newRecords(now time.Time) *records {
	return &records{byName: map[string]netip.Addr{}, serial: uint32(now.Unix())}
}

func (r *records) set(name string, ip netip.Addr) error {
	name, ip, err := checkRecord(name, ip)
	if err != nil {
		return err
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if old, ok := r.byName[name]; ok && old == ip {
		return nil
	}
	r.byName[name] = ip
	r.serial++
	return nil
}

func (r *records) remove(name string) {
	name = strings.ToLower(name)
	r.mu.Lock()
	defer r.mu.Unlock()
	if _, ok := r.byName[name]; !ok {
		return
	}
	delete(r.byName, name)
	r.serial++
}

// replace validates every record and builds the new map before taking the lock,
// so queries are never blocked behind validation and a bad record leaves the
// old set untouched.
func (r *records) replace(in map[string]netip.Addr) error {
	next := make(map[string]netip.Addr, len(in))
	for name, ip := range in {
		n, a, err := checkRecord(name, ip)
		if err != nil {
			return fmt.Errorf("replace records: %w", err)
		}
		if prev, dup := next[n]; dup && prev != a {
			return fmt.Errorf("replace records: %w %q: it differs only in case from another name with a different address", ErrInvalidName, name)
		}
		next[n] = a
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.byName = next
	r.serial++
	return nil
}

func (r *records) lookup(name string) (netip.Addr, bool) {
	name = strings.ToLower(name)
	r.mu.RLock()
	defer r.mu.RUnlock()
	ip, ok := r.byName[name]
	return ip, ok
}

func (r *records) all() map[string]netip.Addr {
	r.mu.RLock()
	defer r.mu.RUnlock()
	return maps.Clone(r.byName)
}

func (r *records) currentSerial() uint32 {
	r.mu.RLock()
	defer r.mu.RUnlock()
	return r.serial
}
