package initramfs

import (
	"bufio"
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// moduleDB is what depmod wrote for one kernel: where each module is, what it
// needs, and which modules are built into the kernel image.
type moduleDB struct {
	dir     string              // /lib/modules/VERSION
	path    map[string]string   // module name -> path relative to dir, as modules.dep says
	deps    map[string][]string // module name -> names it needs, as modules.dep lists them
	builtin map[string]bool     // modules.builtin: compiled in, no file to load
	softPre map[string][]string // modules.softdep "pre:" names (module names or aliases)
	alias   map[string][]string // modules.alias, exact (wildcard-free) aliases only
}

// moduleName is the kernel's name for a module file or a user's spelling of
// it: base name without .ko[.xz|.zst|.gz], dashes as underscores (the kernel
// treats them as the same).
func moduleName(s string) string {
	s = filepath.Base(s)
	for _, ext := range []string{".xz", ".zst", ".gz"} {
		s = strings.TrimSuffix(s, ext)
	}
	s = strings.TrimSuffix(s, ".ko")
	return strings.ReplaceAll(s, "-", "_")
}

func loadModuleDB(modulesDir, version string) (*moduleDB, error) {
	dir := filepath.Join(modulesDir, version)
	db := &moduleDB{
		dir:     dir,
		path:    map[string]string{},
		deps:    map[string][]string{},
		builtin: map[string]bool{},
		softPre: map[string][]string{},
		alias:   map[string][]string{},
	}
	err := eachLine(filepath.Join(dir, "modules.dep"), true, func(line string) error {
		mod, rest, ok := strings.Cut(line, ":")
		if !ok {
			return fmt.Errorf("line %q has no colon", line)
		}
		name := moduleName(mod)
		db.path[name] = mod
		for _, d := range strings.Fields(rest) {
			db.deps[name] = append(db.deps[name], moduleName(d))
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("kernel %s: %w (are its modules installed? run depmod %s)", version, err, version)
	}
	// modules.builtin is absent for kernels built without modules.builtin
	// support; then nothing is known to be built in.
	err = eachLine(filepath.Join(dir, "modules.builtin"), false, func(line string) error {
		db.builtin[moduleName(line)] = true
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("kernel %s: %w", version, err)
	}
	err = eachLine(filepath.Join(dir, "modules.softdep"), false, func(line string) error {
		f := strings.Fields(line)
		if len(f) < 3 || f[0] != "softdep" {
			return nil
		}
		name, pre := moduleName(f[1]), false
		for _, w := range f[2:] {
			switch w {
			case "pre:":
				pre = true
			case "post:":
				pre = false
			default:
				if pre {
					db.softPre[name] = append(db.softPre[name], w)
				}
			}
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("kernel %s: %w", version, err)
	}
	err = eachLine(filepath.Join(dir, "modules.alias"), false, func(line string) error {
		f := strings.Fields(line)
		if len(f) == 3 && f[0] == "alias" && !strings.ContainsAny(f[1], "*?[") {
			db.alias[f[1]] = append(db.alias[f[1]], moduleName(f[2]))
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("kernel %s: %w", version, err)
	}
	return db, nil
}

// eachLine calls fn with each non-empty, non-comment line of path. A missing
// file is an error only when required.
func eachLine(path string, required bool, fn func(string) error) error {
	f, err := os.Open(path)
	if os.IsNotExist(err) && !required {
		return nil
	}
	if err != nil {
		return err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64*1024), 1024*1024)
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		if err := fn(line); err != nil {
			return fmt.Errorf("%s:%d: %w", path, n, err)
		}
	}
	if err := sc.Err(); err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	return nil
}

// resolved is the outcome of resolving a module list.
type resolved struct {
	order   []string // module names to load, each after everything it needs
	builtin []string // requested or needed modules that are built in
}

// resolve orders the named modules and everything they need so that each
// module comes after its dependencies: a depth-first post-order over
// modules.dep, with modules.softdep "pre:" modules before the module that
// asks for them. A name that is neither a module nor built in is an error;
// a soft dependency that cannot be found is skipped, as modprobe does.
func (db *moduleDB) resolve(names []string) (resolved, error) {
	var r resolved
	state := map[string]int{} // 0 unseen, 1 visiting, 2 done
	var visit func(name string, chain []string, soft bool) error
	visit = func(raw string, chain []string, soft bool) error {
		name := moduleName(raw)
		switch state[name] {
		case 1:
			return fmt.Errorf("module dependency cycle: %s -> %s", strings.Join(chain, " -> "), name)
		case 2:
			return nil
		}
		if db.builtin[name] {
			state[name] = 2
			r.builtin = append(r.builtin, name)
			return nil
		}
		if _, ok := db.path[name]; !ok {
			// Aliases are matched as written: "crypto-crc32c" keeps its dash.
			targets := db.alias[raw]
			if len(targets) == 0 {
				targets = db.alias[name]
			}
			if len(targets) > 0 {
				state[name] = 2
				for _, t := range targets {
					if err := visit(t, append(chain, name), soft); err != nil {
						return err
					}
				}
				return nil
			}
			if soft {
				return nil
			}
			if len(chain) > 0 {
				return fmt.Errorf("module %s (needed by %s) is not in %s/modules.dep nor built in", name, strings.Join(chain, " -> "), db.dir)
			}
			return fmt.Errorf("module %s is not in %s/modules.dep nor built in: check the name (modinfo %s)", name, db.dir, name)
		}
		state[name] = 1
		next := append(chain[:len(chain):len(chain)], name)
		for _, s := range db.softPre[name] {
			if err := visit(s, next, true); err != nil {
				return err
			}
		}
		// modprobe loads modules.dep's list from the end; do the same so
		// the order matches what the host itself would do.
		deps := db.deps[name]
		for i := len(deps) - 1; i >= 0; i-- {
			if err := visit(deps[i], next, false); err != nil {
				return err
			}
		}
		state[name] = 2
		r.order = append(r.order, name)
		return nil
	}
	for _, n := range names {
		if err := visit(n, nil, false); err != nil {
			return resolved{}, err
		}
	}
	return r, nil
}
