package fctest

import (
	"bufio"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"testing"
)

// MustSpec finds and loads the named spec file (SpecV1161, SpecMain1170) or fails the test.
func MustSpec(t testing.TB, name string) *Spec {
	t.Helper()
	p, err := FindSpec(name)
	if err != nil {
		t.Fatal(err)
	}
	s, err := LoadSpec(p)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// ShortTempDir makes a directory for unix sockets, whose paths Linux limits to
// 107 bytes (t.TempDir can be longer), and removes it when the test ends.
func ShortTempDir(t testing.TB) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "fc")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(dir) })
	return dir
}

// Start runs a Server on a fresh socket for the length of the test.
func Start(t testing.TB, spec *Spec, opts Options) *Server {
	t.Helper()
	s, err := NewServer(spec, filepath.Join(ShortTempDir(t), "api.sock"), opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := s.Close(); err != nil {
			t.Errorf("fctest server close: %v", err)
		}
	})
	return s
}

// CheckClean fails the test for every request the server refused and every
// answer of the server's own that broke the spec.
func CheckClean(t testing.TB, records []Record) {
	t.Helper()
	for _, r := range records {
		if r.Rejected() {
			t.Errorf("contract: %s refused: %d %s (body %s)", r.Call(), r.Status, r.Fault, r.Body)
		}
		for _, v := range r.ResponseViolations {
			t.Errorf("contract: fctest's answer to %s breaks the spec: %s", r.Call(), v)
		}
	}
}

// ReadJournal reads the records a fake firecracker process wrote.
func ReadJournal(path string) ([]Record, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("fctest journal: %w", err)
	}
	defer f.Close()
	var recs []Record
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 0, 64<<10), 8*MaxBodySize) // JSON escaping can grow a body several times
	for sc.Scan() {
		var r Record
		if err := json.Unmarshal(sc.Bytes(), &r); err != nil {
			return nil, fmt.Errorf("fctest journal %s: %w", path, err)
		}
		recs = append(recs, r)
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("fctest journal %s: %w", path, err)
	}
	return recs, nil
}
