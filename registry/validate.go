package registry

import (
	"encoding/json"
	"fmt"
	"net"
	"path"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"
)

// FieldError is one invalid field, named by its path from the body's root
// (`resources.cpu`, `security_policy.roles[1]`).
type FieldError struct {
	Field   string `json:"field"`
	Message string `json:"message"`
}

const maxIDLen = 128

var sizePattern = regexp.MustCompile(`(?i)^([0-9]+(?:\.[0-9]+)?)\s*(KB|MB|GB|TB)$`)

// ValidID reports whether s is a legal client-chosen id.
func ValidID(s string) bool {
	if len(s) < 1 || len(s) > maxIDLen {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		alnum := c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9'
		if !alnum && (i == 0 || c != '.' && c != '_' && c != '-') {
			return false
		}
	}
	return true
}

func idProblem(s string) string {
	if len(s) > maxIDLen {
		return fmt.Sprintf("id is %d characters long; at most %d are allowed", len(s), maxIDLen)
	}
	return fmt.Sprintf("%q is not a valid id: use 1-128 characters of A-Z a-z 0-9 . _ -, starting with a letter or digit", s)
}

// ParseSize returns the number of bytes a size such as "512MB" stands for.
func ParseSize(s string) (float64, error) {
	m := sizePattern.FindStringSubmatch(strings.TrimSpace(s))
	if m == nil {
		return 0, fmt.Errorf("%q is not a size: use a positive number and a unit KB, MB, GB or TB, e.g. \"512MB\"", s)
	}
	n, err := strconv.ParseFloat(m[1], 64)
	if err != nil || n <= 0 {
		return 0, fmt.Errorf("%q is not a positive size", s)
	}
	unit := map[string]float64{"KB": 1 << 10, "MB": 1 << 20, "GB": 1 << 30, "TB": 1 << 40}[strings.ToUpper(m[2])]
	return n * unit, nil
}

// ParsePermission splits a permission into its action and function glob
// ("" when unscoped) and checks the grammar of SPEC §1.
func ParsePermission(p string) (action, glob string, err error) {
	action, glob, scoped := strings.Cut(p, ":")
	switch action {
	case "execute", "read", "write", "*":
	default:
		return "", "", fmt.Errorf("%q is not a permission: use execute, read, write or *, optionally scoped as ACTION:GLOB", p)
	}
	if scoped {
		if glob == "" {
			return "", "", fmt.Errorf("%q has an empty function glob", p)
		}
		if _, err := path.Match(glob, ""); err != nil {
			return "", "", fmt.Errorf("%q has a malformed glob: %w", p, err)
		}
	}
	return action, glob, nil
}

// validator collects every field error of one body.
type validator struct {
	errs []FieldError
}

func (v *validator) add(field, format string, args ...any) {
	v.errs = append(v.errs, FieldError{Field: field, Message: fmt.Sprintf(format, args...)})
}

func join(prefix, name string) string {
	if prefix == "" {
		return name
	}
	return prefix + "." + name
}

// TypeName describes the JSON type of a decoded value for messages
// ("a string", "an array"...).
func TypeName(v any) string { return typeName(v) }

func typeName(v any) string {
	switch v.(type) {
	case nil:
		return "null"
	case string:
		return "a string"
	case bool:
		return "a boolean"
	case json.Number, float64:
		return "a number"
	case []any:
		return "an array"
	case map[string]any:
		return "an object"
	}
	return fmt.Sprintf("%T", v)
}

// embedded is a policy or storage object given inline in another entity
// (the compatibility input of SPEC §1).
type embedded struct {
	kind  Kind
	id    string // "" when the object had none
	field string // the owner's field, for messages and the derived id
	body  map[string]any
}

// checked is a body that passed field validation: the known fields in
// canonical JSON types, with embedded objects split off.
type checked struct {
	kind     Kind
	id       string // "" when absent: the server assigns one
	values   map[string]any
	embedded []embedded
	// children are the derived-list ids asserted on input, by field.
	children map[string][]string
}

// check validates body as an entity of kind k. Every problem is reported,
// each with its path under prefix.
func check(k Kind, body map[string]any, prefix string) (*checked, []FieldError) {
	v := &validator{}
	c := v.entity(k, body, prefix)
	sortFieldErrors(v.errs)
	return c, v.errs
}

func (v *validator) entity(k Kind, body map[string]any, prefix string) *checked {
	s := schemaOf(k)
	c := &checked{kind: k, values: map[string]any{}, children: map[string][]string{}}
	idField := k.IDField()
	given := map[string]bool{}
	for _, name := range sortedKeys(body) {
		val := body[name]
		p := join(prefix, name)
		if name == idField {
			switch id := val.(type) {
			case nil:
			case string:
				if id != "" && !ValidID(id) {
					v.add(p, "%s", idProblem(id))
				}
				c.id = id
			default:
				v.add(p, "must be a string, not %s", typeName(val))
			}
			continue
		}
		if name == "policy_id" {
			continue // sent by clients of the original CryptoMesh; ignored
		}
		f, ok := s.field(name)
		if !ok {
			v.add(p, "unknown field %q for a %s", name, k.Singular())
			continue
		}
		if val == nil {
			continue // null means absent
		}
		given[name] = true
		v.value(c, f, val, p)
	}
	for _, f := range s.fields {
		if !f.required {
			continue
		}
		if !given[f.name] {
			v.add(join(prefix, f.name), "is required")
		}
	}
	if k == KindSecurityPolicy {
		auth, _ := c.values["requires_authentication"].(bool)
		roles, _ := c.values["roles"].([]any)
		if auth && len(roles) == 0 {
			v.add(join(prefix, "roles"), "a policy that requires authentication must name at least one role")
		}
	}
	return c
}

func (v *validator) value(c *checked, f field, val any, p string) {
	str := func() (string, bool) {
		s, ok := val.(string)
		if !ok {
			v.add(p, "must be a string, not %s", typeName(val))
		}
		return s, ok
	}
	switch f.typ {
	case ftServerTime, ftIgnored:
		return
	case ftString:
		if s, ok := str(); ok {
			c.values[f.name] = s
		}
	case ftText:
		if s, ok := str(); ok {
			if strings.TrimSpace(s) == "" {
				v.add(p, "must not be blank")
				return
			}
			c.values[f.name] = s
		}
	case ftBool:
		b, ok := val.(bool)
		if !ok {
			v.add(p, "must be true or false, not %s", typeName(val))
			return
		}
		c.values[f.name] = b
	case ftEnum:
		if s, ok := str(); ok {
			if !slices.Contains(f.enum, s) {
				v.add(p, "%q is not one of %s", s, strings.Join(f.enum, ", "))
				return
			}
			c.values[f.name] = s
		}
	case ftSize:
		if s, ok := str(); ok {
			if _, err := ParseSize(s); err != nil {
				v.add(p, "%v", err)
				return
			}
			c.values[f.name] = s
		}
	case ftDuration:
		if s, ok := str(); ok {
			d, err := time.ParseDuration(s)
			if err != nil {
				v.add(p, "%q is not a duration such as \"30s\" or \"5m\" (\"0\" means none)", s)
				return
			}
			if d < 0 {
				v.add(p, "must not be negative")
				return
			}
			c.values[f.name] = s
		}
	case ftTimestamp:
		if s, ok := str(); ok {
			if _, err := time.Parse(time.RFC3339, s); err != nil {
				v.add(p, "%q is not an RFC 3339 time", s)
				return
			}
			c.values[f.name] = s
		}
	case ftHostPort:
		if s, ok := str(); ok {
			if s == "" {
				return // "" is an unset optional address
			}
			if err := checkHostPort(s); err != nil {
				v.add(p, "%v", err)
				return
			}
			c.values[f.name] = s
		}
	case ftResources:
		if r, ok := v.resources(val, p); ok {
			c.values[f.name] = r
		}
	case ftMetadata:
		m, ok := val.(map[string]any)
		if !ok {
			v.add(p, "must be an object of strings, not %s", typeName(val))
			return
		}
		out := map[string]any{}
		for _, key := range sortedKeys(m) {
			s, ok := m[key].(string)
			if !ok {
				v.add(p+"."+key, "must be a string, not %s", typeName(m[key]))
				continue
			}
			out[key] = s
		}
		c.values[f.name] = out
	case ftPermissions:
		list, ok := val.([]any)
		if !ok {
			v.add(p, "must be an array of permissions, not %s", typeName(val))
			return
		}
		out := []any{}
		for i, item := range list {
			ip := fmt.Sprintf("%s[%d]", p, i)
			s, ok := item.(string)
			if !ok {
				v.add(ip, "must be a string, not %s", typeName(item))
				continue
			}
			if _, _, err := ParsePermission(s); err != nil {
				v.add(ip, "%v", err)
				continue
			}
			out = append(out, s)
		}
		c.values[f.name] = out
	case ftRef:
		if s, ok := str(); ok {
			if s == "" {
				if f.required {
					v.add(p, "is required")
				}
				return // "" clears an optional reference
			}
			if !ValidID(s) {
				v.add(p, "%s", idProblem(s))
				return
			}
			c.values[f.name] = s
		}
	case ftRefList, ftChildren:
		list, ok := val.([]any)
		if !ok {
			v.add(p, "must be an array of ids, not %s", typeName(val))
			return
		}
		out := []any{}
		seen := map[string]bool{}
		for i, item := range list {
			ip := fmt.Sprintf("%s[%d]", p, i)
			s, ok := item.(string)
			if !ok {
				v.add(ip, "must be a string id, not %s", typeName(item))
				continue
			}
			if !ValidID(s) {
				v.add(ip, "%s", idProblem(s))
				continue
			}
			if seen[s] {
				v.add(ip, "%q is listed twice", s)
				continue
			}
			seen[s] = true
			out = append(out, s)
		}
		if f.typ == ftChildren {
			ids := make([]string, len(out))
			for i, s := range out {
				ids[i] = s.(string)
			}
			c.children[f.name] = ids
			return
		}
		c.values[f.name] = out
	case ftPolicy, ftStorageRef:
		switch x := val.(type) {
		case string:
			if x == "" {
				if f.required {
					v.add(p, "is required")
				}
				return
			}
			if !ValidID(x) {
				v.add(p, "%s", idProblem(x))
				return
			}
			c.values[f.name] = x
		case map[string]any:
			inner := v.entity(f.target, x, p)
			c.embedded = append(c.embedded, embedded{kind: f.target, id: inner.id, field: f.name, body: x})
		default:
			v.add(p, "must be a %s id or an embedded %s object, not %s", f.target.Singular(), f.target.Singular(), typeName(val))
		}
	}
}

func (v *validator) resources(val any, p string) (map[string]any, bool) {
	m, ok := val.(map[string]any)
	if !ok {
		v.add(p, "must be an object {\"cpu\": int, \"ram\": size}, not %s", typeName(val))
		return nil, false
	}
	before := len(v.errs)
	out := map[string]any{}
	for _, key := range sortedKeys(m) {
		kp := p + "." + key
		switch key {
		case "cpu":
			n, ok := m[key].(json.Number)
			if !ok {
				v.add(kp, "must be an integer, not %s", typeName(m[key]))
				continue
			}
			i, err := strconv.ParseInt(string(n), 10, 32)
			if err != nil {
				v.add(kp, "%s is not an integer number of CPUs", n)
				continue
			}
			if i <= 0 {
				v.add(kp, "must be greater than 0, not %d", i)
				continue
			}
			out["cpu"] = json.Number(strconv.FormatInt(i, 10))
		case "ram":
			s, ok := m[key].(string)
			if !ok {
				v.add(kp, "must be a size string such as \"512MB\", not %s", typeName(m[key]))
				continue
			}
			if _, err := ParseSize(s); err != nil {
				v.add(kp, "%v", err)
				continue
			}
			out["ram"] = s
		default:
			v.add(kp, "unknown field %q in resources", key)
		}
	}
	for _, key := range []string{"cpu", "ram"} {
		if _, given := m[key]; !given {
			v.add(p+"."+key, "is required")
		}
	}
	return out, len(v.errs) == before
}

func checkHostPort(s string) error {
	host, port, err := net.SplitHostPort(s)
	if err != nil {
		return fmt.Errorf("%q is not host:port: %w", s, err)
	}
	if host == "" {
		return fmt.Errorf("%q has no host", s)
	}
	n, err := strconv.Atoi(port)
	if err != nil || n < 1 || n > 65535 {
		return fmt.Errorf("%q has no valid port (1-65535)", s)
	}
	return nil
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

func sortFieldErrors(errs []FieldError) {
	slices.SortStableFunc(errs, func(a, b FieldError) int { return strings.Compare(a.Field, b.Field) })
}
