package fctest

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/big"
	"sort"
	"strings"

	"gopkg.in/yaml.v3"
)

// Schema is the subset of Swagger 2.0 / JSON Schema that Firecracker's spec
// uses: type, required, properties, enum, minimum/maximum, $ref to
// definitions, arrays/items and additionalProperties. The descriptive keywords
// are accepted and ignored; any other keyword makes the spec fail to load.
type Schema struct {
	Ref                  string             `yaml:"$ref"`
	Type                 string             `yaml:"type"`
	Format               string             `yaml:"format"`
	Required             []string           `yaml:"required"`
	Properties           map[string]*Schema `yaml:"properties"`
	Items                *Schema            `yaml:"items"`
	Enum                 []string           `yaml:"enum"`
	Minimum              *float64           `yaml:"minimum"`
	Maximum              *float64           `yaml:"maximum"`
	AdditionalProperties Additional         `yaml:"additionalProperties"`

	// Descriptive only.
	Description string    `yaml:"description"`
	Default     yaml.Node `yaml:"default"`
	Example     yaml.Node `yaml:"example"`
	ReadOnly    bool      `yaml:"readOnly"`
}

// Additional is additionalProperties: absent, a boolean, or a schema for the
// values of unnamed keys.
//
// Firecracker deserializes with serde's deny_unknown_fields, so an absent
// additionalProperties (or an explicit false) means unknown keys are
// rejected, unlike plain JSON Schema. Only an explicit true (free-form MMDS
// contents) or a schema opens an object to other keys.
type Additional struct {
	Allowed bool    // explicit true
	Schema  *Schema // values of unnamed keys must match it
}

// UnmarshalYAML takes a boolean or a schema. The schema is decoded again with
// a strict decoder: yaml.v3 does not pass KnownFields on to custom unmarshalers.
func (a *Additional) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind == yaml.ScalarNode {
		return n.Decode(&a.Allowed)
	}
	b, err := yaml.Marshal(n)
	if err != nil {
		return err
	}
	dec := yaml.NewDecoder(bytes.NewReader(b))
	dec.KnownFields(true)
	a.Schema = new(Schema)
	return dec.Decode(a.Schema)
}

// maxRefDepth bounds $ref chains; Firecracker's spec is at most a few deep.
const maxRefDepth = 16

func (s *Spec) resolve(sc *Schema) (*Schema, error) {
	for i := 0; sc.Ref != ""; i++ {
		if i == maxRefDepth {
			return nil, fmt.Errorf("$ref chain deeper than %d", maxRefDepth)
		}
		name, ok := strings.CutPrefix(sc.Ref, "#/definitions/")
		if !ok {
			return nil, fmt.Errorf("$ref %q: only #/definitions/ references are understood", sc.Ref)
		}
		d, ok := s.defs[name]
		if !ok {
			return nil, fmt.Errorf("$ref %q: no such definition", sc.Ref)
		}
		sc = d
	}
	return sc, nil
}

// decodeJSON parses one JSON value, keeping numbers exact. Trailing data is an
// error, as it is for serde_json.
func decodeJSON(b []byte) (any, error) {
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		return nil, fmt.Errorf("body is not JSON: %w", err)
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return nil, errors.New("body has trailing data after the JSON value")
	}
	return v, nil
}

// ValidateJSON checks a JSON document against a schema of this spec and
// returns every violation, each naming where it is (e.g. "body.vcpu_count").
func (s *Spec) ValidateJSON(sc *Schema, body []byte) []string {
	v, err := decodeJSON(body)
	if err != nil {
		return []string{err.Error()}
	}
	var errs []string
	s.validate(v, sc, "body", &errs)
	return errs
}

func (s *Spec) validate(v any, sc *Schema, at string, errs *[]string) {
	fail := func(format string, args ...any) {
		*errs = append(*errs, at+": "+fmt.Sprintf(format, args...))
	}
	sc, err := s.resolve(sc)
	if err != nil {
		fail("spec: %v", err)
		return
	}
	switch sc.Type {
	case "object":
		m, ok := v.(map[string]any)
		if !ok {
			fail("want an object, got %s", jsonKind(v))
			return
		}
		for _, r := range sc.Required {
			if _, ok := m[r]; !ok {
				fail("missing required field %q", r)
			}
		}
		keys := make([]string, 0, len(m))
		for k := range m {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		for _, k := range keys {
			switch p, named := sc.Properties[k]; {
			case named:
				s.validate(m[k], p, at+"."+k, errs)
			case sc.AdditionalProperties.Schema != nil:
				s.validate(m[k], sc.AdditionalProperties.Schema, at+"."+k, errs)
			case sc.AdditionalProperties.Allowed:
			default:
				fail("unknown field %q (the spec names: %s)", k, strings.Join(sortedKeys(sc.Properties), ", "))
			}
		}
	case "array":
		a, ok := v.([]any)
		if !ok {
			fail("want an array, got %s", jsonKind(v))
			return
		}
		if sc.Items == nil {
			return
		}
		for i, e := range a {
			s.validate(e, sc.Items, fmt.Sprintf("%s[%d]", at, i), errs)
		}
	case "string":
		str, ok := v.(string)
		if !ok {
			fail("want a string, got %s", jsonKind(v))
			return
		}
		if len(sc.Enum) > 0 && !contains(sc.Enum, str) {
			fail("%q is not one of %s", str, strings.Join(sc.Enum, ", "))
		}
	case "boolean":
		if _, ok := v.(bool); !ok {
			fail("want a boolean, got %s", jsonKind(v))
		}
	case "integer", "number":
		n, ok := v.(json.Number)
		if !ok {
			fail("want %s, got %s", article(sc.Type), jsonKind(v))
			return
		}
		val, ok := new(big.Float).SetString(n.String())
		if !ok {
			fail("number %s does not parse", n)
			return
		}
		if sc.Type == "integer" {
			i, ok := new(big.Int).SetString(n.String(), 10)
			if !ok {
				fail("want an integer, got %s", n)
				return
			}
			if !fitsFormat(i, sc.Format) {
				fail("%s does not fit %s", n, sc.Format)
			}
		}
		if sc.Minimum != nil && val.Cmp(big.NewFloat(*sc.Minimum)) < 0 {
			fail("%s is below the minimum %v", n, *sc.Minimum)
		}
		if sc.Maximum != nil && val.Cmp(big.NewFloat(*sc.Maximum)) > 0 {
			fail("%s is above the maximum %v", n, *sc.Maximum)
		}
	case "":
		fail("spec: schema has no type")
	default:
		fail("spec: type %q is not understood by the contract validator", sc.Type)
	}
}

func fitsFormat(i *big.Int, format string) bool {
	switch format {
	case "int32":
		return i.IsInt64() && i.Int64() >= -1<<31 && i.Int64() < 1<<31
	case "int64":
		return i.IsInt64()
	}
	return true
}

func jsonKind(v any) string {
	switch v.(type) {
	case nil:
		return "null"
	case map[string]any:
		return "an object"
	case []any:
		return "an array"
	case string:
		return "a string"
	case bool:
		return "a boolean"
	case json.Number:
		return "a number"
	}
	return fmt.Sprintf("%T", v)
}

func article(t string) string {
	if t == "integer" {
		return "an integer"
	}
	return "a " + t
}

func contains(list []string, s string) bool {
	for _, e := range list {
		if e == s {
			return true
		}
	}
	return false
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}
