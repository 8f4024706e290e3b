package mesh

import (
	"context"
	"errors"
	"fmt"
	"slices"

	"github.com/cryptomesh/cryptomesh/registry"
)

// Applier is what Apply needs of the registry.
type Applier interface {
	Do(ctx context.Context, ops ...registry.Op) ([]registry.Result, error)
	DryRun(ctx context.Context, ops ...registry.Op) ([]registry.Result, error)
}

// Item is the outcome for one entity of an applied document.
type Item struct {
	Kind    registry.Kind    `json:"kind"`
	ID      string           `json:"id"`
	Outcome registry.Outcome `json:"outcome"`
	// Implied marks a role the document named but did not define.
	Implied bool `json:"implied,omitempty"`
	// Embedded marks a policy or storage created from an embedded object.
	Embedded bool `json:"embedded,omitempty"`
}

// Report is the answer to an apply.
type Report struct {
	DryRun    bool     `json:"dry_run"`
	Items     []Item   `json:"items"`
	Warnings  []string `json:"warnings"`
	Created   int      `json:"created"`
	Updated   int      `json:"updated"`
	Unchanged int      `json:"unchanged"`
}

// Ops turns a document into registry operations in dependency order: the
// roles it names but does not define first (created only when missing,
// with no permissions: fail closed), then its entities kind by kind.
func Ops(doc *Document) (ops []registry.Op, implied []string) {
	defined := map[string]bool{}
	for _, e := range doc.Entries {
		if e.Kind == registry.KindRole {
			defined[e.ID] = true
		}
	}
	named := map[string]bool{}
	for _, e := range doc.Entries {
		for _, r := range namedRoles(e) {
			if !defined[r] && !named[r] {
				named[r] = true
				implied = append(implied, r)
			}
		}
	}
	slices.Sort(implied)
	for _, r := range implied {
		ops = append(ops, registry.Op{Type: registry.OpCreate, Kind: registry.KindRole, IfAbsent: true,
			Body: map[string]any{"role_id": r, "name": r, "permissions": []any{}}})
	}
	for _, e := range doc.Entries {
		ops = append(ops, registry.Op{Type: registry.OpPut, Kind: e.Kind, ID: e.ID, Body: e.Body})
	}
	return ops, implied
}

// namedRoles lists the role ids an entry refers to: a policy's roles, an
// embedded policy's roles, an endpoint's role. Ill-typed values are left
// for the registry to report.
func namedRoles(e Entry) []string {
	var out []string
	list := func(v any) {
		items, _ := v.([]any)
		for _, it := range items {
			if s, ok := it.(string); ok && registry.ValidID(s) {
				out = append(out, s)
			}
		}
	}
	switch e.Kind {
	case registry.KindSecurityPolicy:
		list(e.Body["roles"])
	case registry.KindEndpoint, registry.KindService:
		if p, ok := e.Body["security_policy"].(map[string]any); ok {
			list(p["roles"])
		}
		if r, ok := e.Body["role"].(string); ok && e.Kind == registry.KindEndpoint && registry.ValidID(r) {
			out = append(out, r)
		}
	}
	return out
}

// Apply applies doc atomically (or, with dryRun, only plans it) and
// reports every entity's outcome.
func Apply(ctx context.Context, reg Applier, doc *Document, dryRun bool) (*Report, error) {
	ops, implied := Ops(doc)
	do := reg.Do
	if dryRun {
		do = reg.DryRun
	}
	results, err := do(ctx, ops...)
	if err != nil {
		return nil, docError(doc, ops, len(implied), err)
	}
	rep := &Report{DryRun: dryRun, Items: []Item{}, Warnings: []string{}}
	seen := map[string]bool{}
	for i, res := range results {
		item := Item{Kind: res.Kind, ID: res.ID, Outcome: res.Outcome}
		if i < len(implied) {
			if res.Outcome != registry.Created {
				continue // the role exists already: nothing is implied
			}
			item.Implied = true
			rep.Warnings = append(rep.Warnings, fmt.Sprintf("role '%s' is named but not defined: it was created with no permissions and grants nothing yet", res.ID))
		}
		for _, c := range res.Changes {
			if c.Kind == res.Kind && c.ID == res.ID || c.Deleted {
				continue
			}
			key := string(c.Kind) + "/" + c.ID
			if !seen[key] {
				seen[key] = true
				rep.Items = append(rep.Items, Item{Kind: c.Kind, ID: c.ID, Outcome: registry.Created, Embedded: true})
			}
		}
		rep.Items = append(rep.Items, item)
	}
	for _, it := range rep.Items {
		switch it.Outcome {
		case registry.Created:
			rep.Created++
		case registry.Updated:
			rep.Updated++
		case registry.Unchanged:
			rep.Unchanged++
		}
	}
	return rep, nil
}

// docError names the document path (and line) of a registry error.
func docError(doc *Document, ops []registry.Op, nImplied int, err error) error {
	var re *registry.Error
	if !errors.As(err, &re) {
		return err
	}
	if re.Index < 0 || re.Index >= len(ops) || re.Code == registry.CodeUnavailable {
		return err
	}
	op := ops[re.Index]
	prefix := sectionKey(op.Kind) + "." + op.ID
	if re.Index < nImplied {
		prefix = "roles (implied)." + op.Body["role_id"].(string)
	}
	out := &Error{Code: re.Code, Message: fmt.Sprintf("%s: %s", prefix, re.Message)}
	for _, f := range re.Fields {
		p := prefix + "." + f.Field
		out.Fields = append(out.Fields, FieldError{Path: p, Line: doc.Line(p), Message: f.Message})
	}
	if len(out.Fields) == 0 {
		out.Fields = []FieldError{{Path: prefix, Line: doc.Line(prefix), Message: re.Message}}
	}
	return out
}

func sectionKey(k registry.Kind) string {
	for _, s := range sections() {
		if s.kind == k {
			return s.key
		}
	}
	return string(k)
}
