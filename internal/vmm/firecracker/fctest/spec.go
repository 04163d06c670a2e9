package fctest

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"sort"
	"strings"

	"gopkg.in/yaml.v3"
)

// Spec is Firecracker's Swagger 2.0 API description, loaded at test time and
// interpreted: the operations (method, path template, body schema, response
// schemas) and the definitions they refer to. It is immutable once loaded and
// safe for concurrent use.
type Spec struct {
	// Version is the spec's info.version, e.g. "1.16.1".
	Version string

	paths []*pathTemplate
	defs  map[string]*Schema
}

// Operation is one method on one path of the spec.
type Operation struct {
	Method  string // upper case: GET, PUT, PATCH
	Path    string // the template, e.g. /drives/{drive_id}
	ID      string // operationId, e.g. putGuestDriveByID
	Summary string

	// Body is the schema of the body parameter; nil when the operation takes no body.
	Body *Schema
	// PathParams are the names of the {params} in Path, in order.
	PathParams []string
	// Responses maps a status ("200", "204", "400", "default") to its body
	// schema; a nil schema means the response has no body.
	Responses map[string]*Schema
}

type pathTemplate struct {
	raw  string
	segs []string // "drives", "{drive_id}"
	ops  map[string]*Operation
}

// Raw YAML shapes. Decoding is strict (yaml KnownFields): a keyword this
// package does not know, in a schema above all (pattern, oneOf, minLength...),
// makes LoadSpec fail instead of being silently ignored, so a new spec can
// never be validated more loosely than it says.
type rawSpec struct {
	Swagger     string                             `yaml:"swagger"`
	Info        rawInfo                            `yaml:"info"`
	Host        string                             `yaml:"host"`
	BasePath    string                             `yaml:"basePath"`
	Schemes     []string                           `yaml:"schemes"`
	Consumes    []string                           `yaml:"consumes"`
	Produces    []string                           `yaml:"produces"`
	Paths       map[string]map[string]rawOperation `yaml:"paths"`
	Definitions map[string]*Schema                 `yaml:"definitions"`
}

type rawInfo struct {
	Title          string            `yaml:"title"`
	Description    string            `yaml:"description"`
	Version        string            `yaml:"version"`
	TermsOfService string            `yaml:"termsOfService"`
	Contact        map[string]string `yaml:"contact"`
	License        map[string]string `yaml:"license"`
}

type rawOperation struct {
	Summary     string                 `yaml:"summary"`
	Description string                 `yaml:"description"`
	OperationID string                 `yaml:"operationId"`
	Parameters  []rawParameter         `yaml:"parameters"`
	Responses   map[string]rawResponse `yaml:"responses"`
}

type rawParameter struct {
	Name        string  `yaml:"name"`
	In          string  `yaml:"in"`
	Description string  `yaml:"description"`
	Required    bool    `yaml:"required"`
	Type        string  `yaml:"type"`
	Schema      *Schema `yaml:"schema"`
}

type rawResponse struct {
	Description string  `yaml:"description"`
	Schema      *Schema `yaml:"schema"`
}

// LoadSpec reads and interprets a Swagger 2.0 file.
func LoadSpec(path string) (*Spec, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("firecracker spec: %w", err)
	}
	s, err := ParseSpec(b)
	if err != nil {
		return nil, fmt.Errorf("firecracker spec %s: %w", path, err)
	}
	return s, nil
}

// ParseSpec interprets the bytes of a Swagger 2.0 document.
func ParseSpec(b []byte) (*Spec, error) {
	var raw rawSpec
	dec := yaml.NewDecoder(bytes.NewReader(b))
	dec.KnownFields(true)
	if err := dec.Decode(&raw); err != nil {
		return nil, fmt.Errorf("parse (a keyword unknown to the contract validator must be implemented in fctest before this spec can be used): %w", err)
	}
	if raw.Swagger != "2.0" {
		return nil, fmt.Errorf("swagger version %q: only 2.0 is understood", raw.Swagger)
	}
	s := &Spec{Version: raw.Info.Version, defs: raw.Definitions}
	for p, methods := range raw.Paths {
		pt := &pathTemplate{raw: p, segs: splitPath(p), ops: map[string]*Operation{}}
		for m, ro := range methods {
			op, err := s.operation(strings.ToUpper(m), p, ro)
			if err != nil {
				return nil, err
			}
			pt.ops[op.Method] = op
		}
		s.paths = append(s.paths, pt)
	}
	// Literal segments before templated ones, so that a literal path is never
	// shadowed by a template of the same shape.
	sort.Slice(s.paths, func(i, j int) bool { return s.paths[i].raw < s.paths[j].raw })
	if err := s.checkRefs(); err != nil {
		return nil, err
	}
	return s, nil
}

func (s *Spec) operation(method, path string, ro rawOperation) (*Operation, error) {
	op := &Operation{Method: method, Path: path, ID: ro.OperationID, Summary: ro.Summary, Responses: map[string]*Schema{}}
	for _, p := range ro.Parameters {
		switch p.In {
		case "body":
			if p.Schema == nil {
				return nil, fmt.Errorf("%s %s: body parameter %q has no schema", method, path, p.Name)
			}
			op.Body = p.Schema
		case "path":
			op.PathParams = append(op.PathParams, p.Name)
		default:
			return nil, fmt.Errorf("%s %s: parameter %q in %q is not understood by the contract validator", method, path, p.Name, p.In)
		}
	}
	for code, r := range ro.Responses {
		op.Responses[code] = r.Schema
	}
	return op, nil
}

// checkRefs makes sure every $ref names a definition, so that validation never
// meets a dangling reference at request time.
func (s *Spec) checkRefs() error {
	var errs []error
	var walk func(at string, sc *Schema)
	walk = func(at string, sc *Schema) {
		if sc == nil {
			return
		}
		if sc.Ref != "" {
			if _, err := s.resolve(sc); err != nil {
				errs = append(errs, fmt.Errorf("%s: %w", at, err))
			}
		}
		for name, p := range sc.Properties {
			walk(at+"."+name, p)
		}
		walk(at+"[]", sc.Items)
		walk(at+"{}", sc.AdditionalProperties.Schema)
	}
	for name, d := range s.defs {
		walk(name, d)
	}
	for _, pt := range s.paths {
		for _, op := range pt.ops {
			walk(op.Method+" "+op.Path, op.Body)
			for code, r := range op.Responses {
				walk(op.Method+" "+op.Path+" "+code, r)
			}
		}
	}
	return errors.Join(errs...)
}

// Operations lists every operation, sorted by path then method.
func (s *Spec) Operations() []*Operation {
	var ops []*Operation
	for _, pt := range s.paths {
		for _, op := range pt.ops {
			ops = append(ops, op)
		}
	}
	sort.Slice(ops, func(i, j int) bool {
		if ops[i].Path != ops[j].Path {
			return ops[i].Path < ops[j].Path
		}
		return ops[i].Method < ops[j].Method
	})
	return ops
}

// Operation returns the operation for method on a path template, if any.
func (s *Spec) Operation(method, template string) (*Operation, bool) {
	for _, pt := range s.paths {
		if pt.raw == template {
			op, ok := pt.ops[method]
			return op, ok
		}
	}
	return nil, false
}

// Definition returns the named definition's fields: property name → whether
// the definition requires it.
func (s *Spec) Definition(name string) (map[string]bool, bool) {
	d, ok := s.defs[name]
	if !ok {
		return nil, false
	}
	fields := map[string]bool{}
	for p := range d.Properties {
		fields[p] = false
	}
	for _, r := range d.Required {
		fields[r] = true
	}
	return fields, true
}

// errNoPath and errNoMethod tell an unknown path from a known path used with
// a method it does not have.
var (
	errNoPath   = errors.New("no such path in the Firecracker API")
	errNoMethod = errors.New("method not allowed on this path")
)

// match finds the operation for a concrete request path, with its path
// parameters. A parameter matches one non-empty segment.
func (s *Spec) match(method, path string) (*Operation, map[string]string, error) {
	segs := splitPath(path)
	for _, pt := range s.paths {
		params, ok := pt.matches(segs)
		if !ok {
			continue
		}
		op, ok := pt.ops[method]
		if !ok {
			allowed := make([]string, 0, len(pt.ops))
			for m := range pt.ops {
				allowed = append(allowed, m)
			}
			sort.Strings(allowed)
			return nil, nil, fmt.Errorf("%w (%s allows %s)", errNoMethod, pt.raw, strings.Join(allowed, ", "))
		}
		return op, params, nil
	}
	return nil, nil, errNoPath
}

func (pt *pathTemplate) matches(segs []string) (map[string]string, bool) {
	if len(segs) != len(pt.segs) {
		return nil, false
	}
	params := map[string]string{}
	for i, ts := range pt.segs {
		if name, ok := strings.CutPrefix(ts, "{"); ok {
			if segs[i] == "" {
				return nil, false
			}
			params[strings.TrimSuffix(name, "}")] = segs[i]
			continue
		}
		if ts != segs[i] {
			return nil, false
		}
	}
	return params, true
}

// splitPath splits "/drives/x" into ["drives", "x"] and "/" into [].
func splitPath(p string) []string {
	p = strings.TrimPrefix(p, "/")
	if p == "" {
		return nil
	}
	return strings.Split(p, "/")
}

// SpecDirEnv overrides where FindSpec looks for the spec files.
const SpecDirEnv = "BANGER_FIRECRACKER_SPEC_DIR"

// Spec file names under the spec directory.
const (
	SpecV1161    = "firecracker-v1.16.1.yaml"
	SpecMain1170 = "firecracker-main-1.17.0-dev.yaml"
)

// FindSpec returns the path of the named spec file: under $BANGER_FIRECRACKER_SPEC_DIR
// when set, else the copy the repository carries in this package's testdata/ (found
// from this source file's directory, so it works from any test's working directory
// and from a fresh clone with nothing beside it).
func FindSpec(name string) (string, error) {
	dir := os.Getenv(SpecDirEnv)
	from := "$" + SpecDirEnv
	if dir == "" {
		_, file, _, ok := runtime.Caller(0)
		if !ok {
			return "", fmt.Errorf("firecracker spec %s: cannot locate the fctest package; set $%s", name, SpecDirEnv)
		}
		dir, from = filepath.Join(filepath.Dir(file), "testdata"), "the repository's copy"
	}
	p := filepath.Join(dir, name)
	if _, err := os.Stat(p); err != nil {
		return "", fmt.Errorf("firecracker spec: %w (from %s)", err, from)
	}
	return p, nil
}
