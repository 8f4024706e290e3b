// Package mesh reads and writes mesh documents (SPEC §3): the whole ML
// system as one YAML or JSON file, keyed by kind and id. It turns a
// document into registry operations in dependency order, maps registry
// errors back to document paths and YAML lines, and exports the registry
// as a document that applies back to the same state.
package mesh

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"

	"gopkg.in/yaml.v3"

	"github.com/cryptomesh/cryptomesh/registry"
)

// Version is the value of a document's optional `cryptomesh` key.
const Version = "v1"

// Entry is one entity of a document.
type Entry struct {
	Kind registry.Kind
	ID   string
	Body map[string]any
}

// Document is a parsed mesh document.
type Document struct {
	Entries []Entry
	// lines maps a document path (functions.f1.resources.cpu) to its
	// line in a YAML source.
	lines map[string]int
}

// Line returns the source line of a document path, or of its nearest
// ancestor; 0 when unknown (JSON input).
func (d *Document) Line(path string) int {
	for path != "" {
		if l, ok := d.lines[path]; ok {
			return l
		}
		i := strings.LastIndexAny(path, ".[")
		if i < 0 {
			break
		}
		path = path[:i]
	}
	return 0
}

// sections maps a document's top-level keys to kinds, in apply order.
func sections() []struct {
	key  string
	kind registry.Kind
} {
	return []struct {
		key  string
		kind registry.Kind
	}{
		{"roles", registry.KindRole},
		{"security_policies", registry.KindSecurityPolicy},
		{"storage", registry.KindStorage},
		{"endpoints", registry.KindEndpoint},
		{"services", registry.KindService},
		{"microservices", registry.KindMicroservice},
		{"functions", registry.KindFunction},
	}
}

// FieldError is a problem at a document path.
type FieldError struct {
	Path    string `json:"field"`
	Line    int    `json:"line,omitempty"`
	Message string `json:"message"`
}

// Error is a document that cannot be applied: every problem found, each
// at its path and, for YAML, its line.
type Error struct {
	// Code is registry.CodeMalformed for unparsable input,
	// registry.CodeInvalid for a bad entity, registry.CodeConflict or
	// registry.CodeNotFound from the registry.
	Code    registry.Code
	Message string
	Fields  []FieldError
}

func (e *Error) Error() string {
	var b strings.Builder
	b.WriteString(e.Message)
	for _, f := range e.Fields {
		if f.Line > 0 {
			fmt.Fprintf(&b, "; %s (line %d): %s", f.Path, f.Line, f.Message)
		} else {
			fmt.Fprintf(&b, "; %s: %s", f.Path, f.Message)
		}
	}
	return b.String()
}

// Format is a document's encoding.
type Format int

// Formats.
const (
	JSON Format = iota + 1
	YAML
)

// Parse reads a document. JSON is tried when the input starts with `{`
// and format is not YAML; everything else is YAML (a superset of JSON).
func Parse(data []byte, format Format) (*Document, error) {
	trimmed := bytes.TrimSpace(data)
	if format == JSON || (format == 0 && len(trimmed) > 0 && trimmed[0] == '{') {
		return parseJSON(data)
	}
	return parseYAML(data)
}

func parseJSON(data []byte) (*Document, error) {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	var top map[string]any
	if err := dec.Decode(&top); err != nil {
		return nil, &Error{Code: registry.CodeMalformed, Message: fmt.Sprintf("the document is not valid JSON: %v", err)}
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return nil, &Error{Code: registry.CodeMalformed, Message: "the document has data after its top-level object"}
	}
	return build(top, map[string]int{})
}

func parseYAML(data []byte) (*Document, error) {
	var root yaml.Node
	dec := yaml.NewDecoder(bytes.NewReader(data))
	if err := dec.Decode(&root); err != nil {
		if errors.Is(err, io.EOF) {
			return nil, &Error{Code: registry.CodeInvalid, Message: "the document is empty"}
		}
		return nil, &Error{Code: registry.CodeMalformed, Message: fmt.Sprintf("the document is not valid YAML: %v", err)}
	}
	var extra yaml.Node
	if err := dec.Decode(&extra); !errors.Is(err, io.EOF) {
		return nil, &Error{Code: registry.CodeMalformed, Message: "the document holds more than one YAML document; apply them one at a time"}
	}
	lines := map[string]int{}
	v, err := fromNode(&root, "", lines)
	if err != nil {
		return nil, err
	}
	top, ok := v.(map[string]any)
	if !ok {
		return nil, &Error{Code: registry.CodeInvalid, Message: fmt.Sprintf("the document must be a map of sections, not %s", describe(v))}
	}
	return build(top, lines)
}

// fromNode converts YAML to the values encoding/json produces (with
// UseNumber), recording the line of every path.
func fromNode(n *yaml.Node, path string, lines map[string]int) (any, error) {
	if path != "" {
		lines[path] = n.Line
	}
	bad := func(msg string) error {
		return &Error{Code: registry.CodeMalformed, Message: "the document cannot be read", Fields: []FieldError{{Path: path, Line: n.Line, Message: msg}}}
	}
	switch n.Kind {
	case yaml.DocumentNode:
		if len(n.Content) == 0 {
			return nil, nil
		}
		return fromNode(n.Content[0], path, lines)
	case yaml.AliasNode:
		return nil, bad("YAML aliases are not supported in mesh documents")
	case yaml.MappingNode:
		out := make(map[string]any, len(n.Content)/2)
		for i := 0; i+1 < len(n.Content); i += 2 {
			k, v := n.Content[i], n.Content[i+1]
			if k.Kind != yaml.ScalarNode {
				return nil, bad("map keys must be plain strings")
			}
			if k.Tag == "!!merge" {
				return nil, bad("YAML merge keys (<<) are not supported in mesh documents")
			}
			key := k.Value
			if _, dup := out[key]; dup {
				return nil, &Error{Code: registry.CodeMalformed, Message: "the document cannot be read", Fields: []FieldError{{Path: join(path, key), Line: k.Line, Message: fmt.Sprintf("key %q appears twice", key)}}}
			}
			val, err := fromNode(v, join(path, key), lines)
			if err != nil {
				return nil, err
			}
			lines[join(path, key)] = k.Line
			out[key] = val
		}
		return out, nil
	case yaml.SequenceNode:
		out := make([]any, 0, len(n.Content))
		for i, c := range n.Content {
			val, err := fromNode(c, fmt.Sprintf("%s[%d]", path, i), lines)
			if err != nil {
				return nil, err
			}
			out = append(out, val)
		}
		return out, nil
	case yaml.ScalarNode:
		switch n.ShortTag() {
		case "!!null":
			return nil, nil
		case "!!bool":
			var b bool
			if err := n.Decode(&b); err != nil {
				return nil, bad(err.Error())
			}
			return b, nil
		case "!!int":
			var i int64
			if err := n.Decode(&i); err != nil {
				return nil, bad(err.Error())
			}
			return json.Number(strconv.FormatInt(i, 10)), nil
		case "!!float":
			var f float64
			if err := n.Decode(&f); err != nil {
				return nil, bad(err.Error())
			}
			return json.Number(strconv.FormatFloat(f, 'g', -1, 64)), nil
		case "!!str":
			return n.Value, nil
		}
		return nil, bad(fmt.Sprintf("unsupported YAML tag %s", n.Tag))
	}
	return nil, bad("unsupported YAML node")
}

func join(prefix, key string) string {
	if prefix == "" {
		return key
	}
	return prefix + "." + key
}

func describe(v any) string {
	switch v.(type) {
	case nil:
		return "nothing"
	case string:
		return "a string"
	case []any:
		return "a list"
	case map[string]any:
		return "a map"
	}
	return "a scalar"
}

// build checks the document's shape and collects its entries in apply
// order. Entity bodies are checked later, by the registry.
func build(top map[string]any, lines map[string]int) (*Document, error) {
	doc := &Document{lines: lines}
	var errs []FieldError
	add := func(path, msg string) {
		errs = append(errs, FieldError{Path: path, Line: doc.Line(path), Message: msg})
	}
	known := map[string]bool{"cryptomesh": true}
	for _, s := range sections() {
		known[s.key] = true
	}
	for _, key := range sortedKeys(top) {
		if !known[key] {
			names := []string{"cryptomesh"}
			for _, s := range sections() {
				names = append(names, s.key)
			}
			add(key, fmt.Sprintf("unknown section %q; sections are %s", key, strings.Join(names, ", ")))
		}
	}
	if v, ok := top["cryptomesh"]; ok && v != Version {
		add("cryptomesh", fmt.Sprintf("unsupported document version %v; this server reads %q", v, Version))
	}
	for _, s := range sections() {
		raw, ok := top[s.key]
		if !ok || raw == nil {
			continue
		}
		m, ok := raw.(map[string]any)
		if !ok {
			add(s.key, fmt.Sprintf("must be a map of %s keyed by id, not %s", s.key, describe(raw)))
			continue
		}
		for _, id := range sortedKeys(m) {
			path := s.key + "." + id
			if !registry.ValidID(id) {
				add(path, fmt.Sprintf("%q is not a valid id: use 1-128 characters of A-Z a-z 0-9 . _ -, starting with a letter or digit", id))
				continue
			}
			var body map[string]any
			switch b := m[id].(type) {
			case nil:
				body = map[string]any{}
			case map[string]any:
				body = b
			default:
				add(path, fmt.Sprintf("must be a map of fields, not %s", describe(b)))
				continue
			}
			if v, ok := body[s.kind.IDField()]; ok && v != nil && v != "" && v != id {
				add(path+"."+s.kind.IDField(), fmt.Sprintf("must equal the key %q or be left out", id))
				continue
			}
			doc.Entries = append(doc.Entries, Entry{Kind: s.kind, ID: id, Body: body})
		}
	}
	if len(errs) > 0 {
		return nil, &Error{Code: registry.CodeInvalid, Message: "the document is invalid", Fields: errs}
	}
	return doc, nil
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}
