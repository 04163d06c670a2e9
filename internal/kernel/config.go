package kernel

import (
	"bufio"
	"compress/gzip"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
)

// ParseConfig reads a kernel .config: "CONFIG_X=value" lines, and
// "# CONFIG_X is not set", which is recorded as absent. Values keep their
// quotes stripped. Keys keep their CONFIG_ prefix.
func ParseConfig(r io.Reader) (map[string]string, error) {
	cfg := map[string]string{}
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64*1024), 1024*1024)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if !strings.HasPrefix(line, "CONFIG_") {
			continue
		}
		k, v, ok := strings.Cut(line, "=")
		if !ok {
			continue
		}
		cfg[k] = strings.Trim(v, `"`)
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("kernel config: %w", err)
	}
	return cfg, nil
}

// ReadConfigFile parses the config file at path.
func ReadConfigFile(path string) (map[string]string, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	cfg, err := ParseConfig(io.LimitReader(f, maxConfig))
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	if len(cfg) == 0 {
		return nil, fmt.Errorf("%s: no CONFIG_ lines: not a kernel config", path)
	}
	return cfg, nil
}

// embeddedConfig finds CONFIG_IKCONFIG's blob in an uncompressed kernel:
// "IKCFG_ST", a gzip stream of the .config, "IKCFG_ED".
func embeddedConfig(r io.ReaderAt, size int64) (map[string]string, bool, error) {
	at := indexAt(r, size, []byte("IKCFG_ST"), 0, func(r io.ReaderAt, end int64) bool {
		var b [2]byte
		_, err := r.ReadAt(b[:], end)
		return err == nil && b[0] == 0x1f && b[1] == 0x8b
	})
	if at < 0 {
		return nil, false, nil
	}
	zr, err := gzip.NewReader(io.NewSectionReader(r, at+8, size-at-8))
	if err != nil {
		return nil, false, err
	}
	zr.Multistream(false)
	cfg, err := ParseConfig(io.LimitReader(zr, maxConfig))
	if err != nil {
		return nil, false, err
	}
	return cfg, len(cfg) > 0, nil
}

// siblingConfig finds a config file for release: config-RELEASE beside the
// kernel file, then in bootDir. "" if there is none.
func siblingConfig(kernelPath, bootDir, release string) string {
	if release == "" || strings.ContainsAny(release, "/\x00") {
		return ""
	}
	for _, dir := range []string{filepath.Dir(kernelPath), bootDir} {
		if dir == "" {
			continue
		}
		p := filepath.Join(dir, "config-"+release)
		if fi, err := os.Stat(p); err == nil && fi.Mode().IsRegular() {
			return p
		}
	}
	return ""
}
