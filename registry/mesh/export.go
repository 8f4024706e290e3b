package mesh

import (
	"bytes"
	"encoding/json"
	"fmt"
	"iter"

	"gopkg.in/yaml.v3"

	"github.com/cryptomesh/cryptomesh/registry"
)

// Reader is what Export needs of a registry view.
type Reader interface {
	All(k registry.Kind) iter.Seq[*registry.Object]
}

// Export writes the registry as a YAML mesh document: sorted keys, no
// server-set or derived fields, no empty values, no history. Applying it
// to an empty registry rebuilds the same entities.
func Export(v Reader) ([]byte, error) {
	doc := map[string]any{"cryptomesh": Version}
	for _, s := range sections() {
		entries := map[string]any{}
		for o := range v.All(s.kind) {
			raw, err := o.Encode()
			if err != nil {
				return nil, fmt.Errorf("export %s %q: %w", s.kind, o.ID, err)
			}
			body, err := exportBody(s.kind, raw)
			if err != nil {
				return nil, fmt.Errorf("export %s %q: %w", s.kind, o.ID, err)
			}
			entries[o.ID] = body
		}
		if len(entries) > 0 {
			doc[s.key] = entries
		}
	}
	var buf bytes.Buffer
	enc := yaml.NewEncoder(&buf)
	enc.SetIndent(2)
	if err := enc.Encode(doc); err != nil {
		return nil, fmt.Errorf("encode document: %w", err)
	}
	if err := enc.Close(); err != nil {
		return nil, fmt.Errorf("encode document: %w", err)
	}
	return buf.Bytes(), nil
}

func exportBody(k registry.Kind, raw []byte) (map[string]any, error) {
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	var m map[string]any
	if err := dec.Decode(&m); err != nil {
		return nil, err
	}
	delete(m, k.IDField())
	for _, key := range []string{"created_at", "timestamp", "microservices", "functions"} {
		delete(m, key)
	}
	for key, val := range m {
		if empty(val) {
			delete(m, key)
			continue
		}
		m[key] = numbers(val)
	}
	return m, nil
}

// numbers turns json.Number into Go numbers, which YAML writes bare.
func numbers(v any) any {
	switch x := v.(type) {
	case json.Number:
		if i, err := x.Int64(); err == nil {
			return i
		}
		if f, err := x.Float64(); err == nil {
			return f
		}
		return string(x)
	case map[string]any:
		for k, val := range x {
			x[k] = numbers(val)
		}
	case []any:
		for i, val := range x {
			x[i] = numbers(val)
		}
	}
	return v
}

func empty(v any) bool {
	switch x := v.(type) {
	case nil:
		return true
	case string:
		return x == ""
	case []any:
		return len(x) == 0
	case map[string]any:
		return len(x) == 0
	}
	return false
}
