package main

import (
	"fmt"
	"sort"
	"strings"

	"github.com/cryptomesh/cryptomesh/registry"
)

// cliKind is how the client commands name and show one entity kind.
type cliKind struct {
	kind registry.Kind
	// name is the singular name shown in messages: "security-policy".
	name string
	// aliases are further names accepted besides name, its plural, the
	// route and the kind's own name: "sp", "fn".
	aliases []string
	columns []column
}

// column is one column of a kind's table.
type column struct {
	header string
	value  func(e map[string]any) string
}

// field shows a field as text; "-" when it is empty.
func field(name string) column {
	return column{strings.ToUpper(strings.ReplaceAll(name, "_", "-")), func(e map[string]any) string { return text(e[name]) }}
}

// named is field with another header.
func named(header, name string) column {
	c := field(name)
	c.header = header
	return c
}

// list shows a list field, at most three items and how many more.
func list(header, name string) column {
	return column{header, func(e map[string]any) string {
		items, _ := e[name].([]any)
		var parts []string
		for i, it := range items {
			if i == 3 {
				parts = append(parts, fmt.Sprintf("+%d more", len(items)-3))
				break
			}
			parts = append(parts, text(it))
		}
		if len(parts) == 0 {
			return "-"
		}
		return strings.Join(parts, ",")
	}}
}

func resources() column {
	return column{"RESOURCES", func(e map[string]any) string {
		r, ok := e["resources"].(map[string]any)
		if !ok {
			return "-"
		}
		return fmt.Sprintf("%scpu/%s", text(r["cpu"]), text(r["ram"]))
	}}
}

func metadata() column {
	return column{"METADATA", func(e map[string]any) string {
		m, _ := e["metadata"].(map[string]any)
		keys := make([]string, 0, len(m))
		for k := range m {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		var parts []string
		for _, k := range keys {
			parts = append(parts, k+"="+text(m[k]))
		}
		if len(parts) == 0 {
			return "-"
		}
		return strings.Join(parts, ",")
	}}
}

func text(v any) string {
	switch x := v.(type) {
	case nil:
		return "-"
	case string:
		if x == "" {
			return "-"
		}
		return x
	case bool:
		if x {
			return "yes"
		}
		return "no"
	case float64:
		return fmt.Sprintf("%g", x)
	}
	return fmt.Sprint(v)
}

func cliKinds() []cliKind {
	id := func(k registry.Kind) column { return named("ID", k.IDField()) }
	return []cliKind{
		{registry.KindRole, "role", nil, []column{id(registry.KindRole), field("name"), list("PERMISSIONS", "permissions"), field("description")}},
		{registry.KindSecurityPolicy, "security-policy", []string{"sp", "sps", "policy", "policies"},
			[]column{id(registry.KindSecurityPolicy), named("AUTH", "requires_authentication"), field("mode"), list("ROLES", "roles")}},
		{registry.KindStorage, "storage", []string{"st"},
			[]column{id(registry.KindStorage), field("capacity"), named("SOURCE", "source_path"), named("SINK", "sink_path")}},
		{registry.KindEndpoint, "endpoint", []string{"ep", "eps"},
			[]column{id(registry.KindEndpoint), field("name"), field("address"), field("protocol"), named("POLICY", "security_policy"), field("role"), resources()}},
		{registry.KindEndpointState, "endpoint-state", []string{"es"},
			[]column{id(registry.KindEndpointState), named("ENDPOINT", "endpoint_id"), field("state"), field("timestamp"), metadata()}},
		{registry.KindService, "service", []string{"svc", "svcs"},
			[]column{id(registry.KindService), named("POLICY", "security_policy"), list("MICROSERVICES", "microservices"), resources()}},
		{registry.KindMicroservice, "microservice", []string{"ms"},
			[]column{id(registry.KindMicroservice), named("SERVICE", "service_id"), list("FUNCTIONS", "functions"), resources()}},
		{registry.KindFunction, "function", []string{"fn", "fns", "func"},
			[]column{id(registry.KindFunction), named("MICROSERVICE", "microservice_id"), named("ENDPOINT", "endpoint_id"), named("STATUS", "deployment_status"), field("timeout"), field("storage"), resources()}},
		{registry.KindFunctionState, "function-state", []string{"fs"},
			[]column{id(registry.KindFunctionState), named("FUNCTION", "function_id"), field("state"), field("timestamp"), metadata()}},
		{registry.KindFunctionResult, "function-result", []string{"fr"},
			[]column{id(registry.KindFunctionResult), named("FUNCTION", "function_id"), field("timestamp"), metadata()}},
	}
}

// names lists every name a kind is accepted by.
func (k cliKind) names() []string {
	out := []string{k.name, k.name + "s", k.kind.Route(), strings.ReplaceAll(string(k.kind), "_", "-")}
	if strings.HasSuffix(k.name, "y") {
		out = append(out, strings.TrimSuffix(k.name, "y")+"ies")
	}
	return append(out, k.aliases...)
}

// lookupKind finds a kind by any of its names, in any case, with dashes
// or underscores.
func lookupKind(name string) (cliKind, error) {
	norm := strings.ReplaceAll(strings.ToLower(name), "_", "-")
	var all []string
	for _, k := range cliKinds() {
		for _, n := range k.names() {
			if n == norm {
				return k, nil
			}
		}
		all = append(all, k.kind.Route())
	}
	return cliKind{}, usageError{fmt.Errorf("unknown kind %q; kinds: %s (singular forms and short names such as sp, fn, ms work too)", name, strings.Join(all, ", "))}
}

// kindOfSection is the CLI kind of a mesh document section or registry
// kind ("security_policies").
func kindOfSection(k registry.Kind) cliKind {
	for _, c := range cliKinds() {
		if c.kind == k {
			return c
		}
	}
	return cliKind{kind: k, name: string(k)}
}
