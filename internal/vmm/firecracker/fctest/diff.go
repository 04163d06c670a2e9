package fctest

import (
	"fmt"
	"sort"
	"strings"
)

// DiffOperation compares one operation (method on a path template) between
// two specs and describes every difference in its body and response schemas,
// one line each, e.g.
//
//	PUT /machine-config body.huge_pages: type=string enum=[None 2M] → type=string enum=[None 2M Transparent]
//
// It is how a test tells which of the calls banger makes a new Firecracker
// release touches.
func DiffOperation(old, cur *Spec, method, template string) []string {
	name := method + " " + template
	a, okA := old.Operation(method, template)
	b, okB := cur.Operation(method, template)
	switch {
	case !okA && !okB:
		return []string{name + ": in neither spec"}
	case !okB:
		return []string{name + ": removed"}
	case !okA:
		return []string{name + ": added"}
	}
	var out []string
	out = append(out, diffFlat(name+" body", old.flatten(a.Body), cur.flatten(b.Body))...)
	codes := map[string]bool{}
	for c := range a.Responses {
		codes[c] = true
	}
	for c := range b.Responses {
		codes[c] = true
	}
	for _, c := range sortedKeys(codes) {
		ra, inA := a.Responses[c]
		rb, inB := b.Responses[c]
		switch {
		case !inA:
			out = append(out, fmt.Sprintf("%s response %s: added", name, c))
		case !inB:
			out = append(out, fmt.Sprintf("%s response %s: removed", name, c))
		default:
			out = append(out, diffFlat(name+" response "+c, old.flatten(ra), cur.flatten(rb))...)
		}
	}
	return out
}

func diffFlat(prefix string, a, b map[string]string) []string {
	keys := map[string]bool{}
	for k := range a {
		keys[k] = true
	}
	for k := range b {
		keys[k] = true
	}
	var out []string
	for _, k := range sortedKeys(keys) {
		va, inA := a[k]
		vb, inB := b[k]
		switch {
		case !inA:
			out = append(out, fmt.Sprintf("%s%s: added (%s)", prefix, k, vb))
		case !inB:
			out = append(out, fmt.Sprintf("%s%s: removed (was %s)", prefix, k, va))
		case va != vb:
			out = append(out, fmt.Sprintf("%s%s: %s → %s", prefix, k, va, vb))
		}
	}
	return out
}

// flatten describes a schema as "location → constraints", with $refs
// followed, so two schemas compare key by key whatever their definitions are named.
func (s *Spec) flatten(sc *Schema) map[string]string {
	out := map[string]string{}
	if sc != nil {
		s.flattenInto(sc, "", out, 0)
	}
	return out
}

func (s *Spec) flattenInto(sc *Schema, at string, out map[string]string, depth int) {
	if depth > maxRefDepth {
		return
	}
	sc, err := s.resolve(sc)
	if err != nil {
		out[at] = "unresolvable: " + err.Error()
		return
	}
	var d []string
	d = append(d, "type="+sc.Type)
	if sc.Format != "" {
		d = append(d, "format="+sc.Format)
	}
	if len(sc.Required) > 0 {
		r := append([]string(nil), sc.Required...)
		sort.Strings(r)
		d = append(d, fmt.Sprintf("required=%v", r))
	}
	if len(sc.Enum) > 0 {
		d = append(d, fmt.Sprintf("enum=%v", sc.Enum))
	}
	if sc.Minimum != nil {
		d = append(d, fmt.Sprintf("min=%v", *sc.Minimum))
	}
	if sc.Maximum != nil {
		d = append(d, fmt.Sprintf("max=%v", *sc.Maximum))
	}
	if sc.AdditionalProperties.Allowed {
		d = append(d, "additionalProperties=true")
	}
	out[at] = strings.Join(d, " ")
	for name, p := range sc.Properties {
		s.flattenInto(p, at+"."+name, out, depth+1)
	}
	if sc.Items != nil {
		s.flattenInto(sc.Items, at+"[]", out, depth+1)
	}
	if sc.AdditionalProperties.Schema != nil {
		s.flattenInto(sc.AdditionalProperties.Schema, at+"{}", out, depth+1)
	}
}
