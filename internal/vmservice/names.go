package vmservice

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"math/big"
	"regexp"
	"strconv"
	"strings"
)

// nameRe is one DNS label, lowercase: the VM's name is its DNS name and hostname.
var nameRe = regexp.MustCompile(`^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$`)

// ValidateName checks a VM name.
func ValidateName(name string) error {
	if !nameRe.MatchString(name) {
		return fmt.Errorf("vm name %q is not valid: use 1-63 lowercase letters, digits and '-', starting and ending with a letter or digit (it becomes NAME.vm)", name)
	}
	return nil
}

var (
	adjectives = []string{"brave", "calm", "eager", "fancy", "gentle", "happy", "jolly", "keen", "lucky", "mellow", "nimble", "proud", "quick", "rapid", "shiny", "sunny", "tidy", "vivid", "witty", "zesty"}
	nouns      = []string{"otter", "falcon", "badger", "heron", "lynx", "marten", "newt", "orca", "puffin", "quokka", "raven", "stoat", "tapir", "urchin", "vole", "walrus", "yak", "zebra", "bison", "gecko"}
)

// generateName makes a docker-style name that is not in taken.
func generateName(taken func(string) bool) string {
	for i := 0; ; i++ {
		name := pick(adjectives) + "-" + pick(nouns)
		if i > 20 {
			name += "-" + newID()[:4]
		}
		if !taken(name) {
			return name
		}
	}
}

func pick(xs []string) string {
	n, err := rand.Int(rand.Reader, big.NewInt(int64(len(xs))))
	if err != nil {
		return xs[0]
	}
	return xs[n.Int64()]
}

// newID returns 16 random hex characters: a VM's id.
func newID() string {
	b := make([]byte, 8)
	if _, err := rand.Read(b); err != nil {
		panic("crypto/rand: " + err.Error()) // the kernel's RNG does not fail
	}
	return hex.EncodeToString(b)
}

// macFor derives a stable, locally administered unicast MAC from the VM id.
func macFor(id string) string {
	b, err := hex.DecodeString(id[:min(10, len(id))])
	if err != nil || len(b) < 5 {
		// Not one of newID's ids (an old or hand-made record): still one MAC per id,
		// never a panic in the daemon over a stored record.
		h := sha256.Sum256([]byte(id))
		b = h[:5]
	}
	return fmt.Sprintf("02:%02x:%02x:%02x:%02x:%02x", b[0], b[1], b[2], b[3], b[4])
}

// shortID is the id's prefix used in socket and directory names.
func shortID(id string) string { return id[:min(12, len(id))] }

// ParseMemory parses a memory size ("512M", "2G", "1024" meaning MiB) into MiB.
func ParseMemory(in string) (int, error) {
	s := strings.ToUpper(strings.TrimSpace(in))
	mult := 1
	for _, suf := range []struct {
		s string
		m int
	}{{"GIB", 1024}, {"GB", 1024}, {"G", 1024}, {"MIB", 1}, {"MB", 1}, {"M", 1}} {
		if strings.HasSuffix(s, suf.s) {
			s, mult = strings.TrimSuffix(s, suf.s), suf.m
			break
		}
	}
	n, err := strconv.Atoi(s)
	if err != nil || n <= 0 {
		return 0, fmt.Errorf("memory size %q: write it like 512M or 2G", in)
	}
	return n * mult, nil
}
