package registry

import (
	"encoding/json"
	"reflect"
	"strconv"
	"strings"
)

// The write path builds typed entities straight from checked JSON values,
// instead of a marshal/unmarshal round trip per entity: applying a
// document of 10,000 functions spends its time here.

// typeFields maps each entity type's JSON names to struct field indexes;
// built once, read-only.
var typeFields = func() map[reflect.Type]map[string]int {
	out := map[reflect.Type]map[string]int{}
	for _, k := range allKinds() {
		t := reflect.TypeOf(newValue(k)).Elem()
		m := map[string]int{}
		for i := range t.NumField() {
			name, _, _ := strings.Cut(t.Field(i).Tag.Get("json"), ",")
			m[name] = i
		}
		out[t] = m
	}
	return out
}()

var (
	stringType    = reflect.TypeOf("")
	stringsType   = reflect.TypeOf([]string(nil))
	metadataType  = reflect.TypeOf(map[string]string(nil))
	resourcesType = reflect.TypeOf((*Resources)(nil))
)

// buildEntity makes the typed entity of kind k from JSON values (as
// json.Decoder.UseNumber produces them). It reports false, building
// nothing useful, when a value does not fit its field or a key is not a
// field: callers then take the validating path.
func buildEntity(k Kind, values map[string]any) (any, bool) {
	v := newValue(k)
	rv := reflect.ValueOf(v).Elem()
	fields := typeFields[rv.Type()]
	for name, val := range values {
		i, ok := fields[name]
		if !ok {
			if name == "policy_id" {
				continue
			}
			return nil, false
		}
		if val == nil {
			continue
		}
		if !setField(rv.Field(i), val) {
			return nil, false
		}
	}
	return v, true
}

func setField(f reflect.Value, val any) bool {
	switch f.Type() {
	case stringType:
		s, ok := val.(string)
		f.SetString(s)
		return ok
	case stringsType:
		list, ok := val.([]any)
		if !ok {
			return false
		}
		out := make([]string, len(list))
		for i, item := range list {
			if out[i], ok = item.(string); !ok {
				return false
			}
		}
		f.Set(reflect.ValueOf(out))
		return true
	case metadataType:
		m, ok := val.(map[string]any)
		if !ok {
			return false
		}
		out := make(map[string]string, len(m))
		for key, item := range m {
			if out[key], ok = item.(string); !ok {
				return false
			}
		}
		f.Set(reflect.ValueOf(out))
		return true
	case resourcesType:
		m, ok := val.(map[string]any)
		if !ok || len(m) != 2 {
			return false
		}
		n, ok := m["cpu"].(json.Number)
		if !ok {
			return false
		}
		cpu, err := strconv.Atoi(string(n))
		if err != nil {
			return false
		}
		ram, ok := m["ram"].(string)
		f.Set(reflect.ValueOf(&Resources{CPU: cpu, RAM: ram}))
		return ok
	}
	if f.Kind() == reflect.Bool {
		b, ok := val.(bool)
		f.SetBool(b)
		return ok
	}
	return false
}

// stampOf returns the server-set time of an entity: created_at, or a
// history entity's timestamp.
func stampOf(v any) string {
	rv := reflect.ValueOf(v).Elem()
	fields := typeFields[rv.Type()]
	for _, name := range []string{"created_at", "timestamp"} {
		if i, ok := fields[name]; ok {
			return rv.Field(i).String()
		}
	}
	return ""
}

// newObject builds the stored object of a typed entity.
func newObject(k Kind, id string, rev, seq uint64, v any) *Object {
	o := &Object{Kind: k, ID: id, Rev: rev, Seq: seq, Refs: refsOf(v), Value: v}
	if s := schemaOf(k); s.owner != "" {
		if ids := o.RefIDs(s.owner); len(ids) == 1 {
			o.Owner = ids[0]
		}
		o.OwnerSeq = ownerSeq(o.Owner, o.Seq)
	}
	return o
}
