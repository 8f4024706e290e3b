package registry

import (
	"fmt"
	"iter"
	"strings"

	memdb "github.com/hashicorp/go-memdb"
)

// View is a consistent read-only view of the registry at one durable
// revision. Views are cheap; take a new one per request.
type View struct {
	txn *memdb.Txn
	rev uint64
}

// View returns a view of the newest durable revision.
func (r *Registry) View() *View {
	p := r.published.Load()
	return &View{txn: p.db.Txn(false), rev: p.rev}
}

// Revision is the revision the view shows.
func (v *View) Revision() uint64 { return v.rev }

// Get returns one entity with its derived fields.
func (v *View) Get(k Kind, id string) (any, error) {
	if !k.Valid() {
		return nil, invalid(fmt.Sprintf("unknown kind %q", k))
	}
	o := getObject(v.txn, k, id)
	if o == nil {
		return nil, notFound(id)
	}
	return render(v.txn, o), nil
}

// Object returns the stored object, or nil.
func (v *View) Object(k Kind, id string) *Object { return getObject(v.txn, k, id) }

// Count returns how many entities of kind k exist.
func (v *View) Count(k Kind) int { return count(v.txn, counterKey(k, "")) }

// ListOptions select and page a list.
type ListOptions struct {
	// Filters maps reference fields to the id they must reference.
	Filters map[string]string
	// After is the id after which the page starts (id order; for history
	// kinds, commit order).
	After string
	// Limit caps the page; 0 means DefaultListLimit.
	Limit int
}

// List limits of SPEC §2.
const (
	DefaultListLimit = 1000
	MaxListLimit     = 10000
)

// List returns one page of entities of kind k and the number of entities
// that match the filters in all.
func (v *View) List(k Kind, opts ListOptions) ([]any, int, error) {
	if !k.Valid() {
		return nil, 0, invalid(fmt.Sprintf("unknown kind %q", k))
	}
	limit := opts.Limit
	if limit == 0 {
		limit = DefaultListLimit
	}
	if limit < 0 || limit > MaxListLimit {
		return nil, 0, invalid("invalid limit", FieldError{Field: "limit", Message: fmt.Sprintf("must be between 1 and %d", MaxListLimit)})
	}
	s := schemaOf(k)
	var filterField, filterValue string
	for name, val := range opts.Filters {
		f, ok := s.field(name)
		if !ok || (f.typ != ftRef && f.typ != ftRefList && f.typ != ftPolicy && f.typ != ftStorageRef) {
			return nil, 0, invalid("invalid filter", FieldError{Field: name, Message: fmt.Sprintf("%s cannot be filtered by %q; filters: %s", k.Route(), name, strings.Join(FilterFields(k), ", "))})
		}
		if filterField != "" {
			// Further filters are checked on each object.
			continue
		}
		filterField, filterValue = name, val
	}
	match := func(o *Object) bool {
		for name, val := range opts.Filters {
			if !containsStr(o.RefIDs(name), val) {
				return false
			}
		}
		return true
	}

	var it memdb.ResultIterator
	var err error
	afterSeq := uint64(0)
	history := k.History()
	if history && opts.After != "" {
		o := getObject(v.txn, k, opts.After)
		if o == nil {
			return nil, 0, invalid("invalid cursor", FieldError{Field: "after", Message: fmt.Sprintf("%s '%s' does not exist", k.Singular(), opts.After)})
		}
		afterSeq = o.Seq
	}
	switch {
	case history && filterField == s.owner:
		it, err = v.txn.Get(string(k), indexOwnerSeq+"_prefix", filterValue+"\x00")
	case history:
		it, err = v.txn.Get(string(k), indexSeq)
	case filterField != "":
		it, err = v.txn.Get(string(k), filterField, filterValue)
	default:
		it, err = v.txn.Get(string(k), indexID)
	}
	if err != nil {
		return nil, 0, fmt.Errorf("list %s: %w", k, err)
	}
	items := []any{}
	total := 0
	for raw := it.Next(); raw != nil; raw = it.Next() {
		o := raw.(*Object)
		if !match(o) {
			continue
		}
		total++
		if history {
			if o.Seq <= afterSeq {
				continue
			}
		} else if opts.After != "" && o.ID <= opts.After {
			continue
		}
		if len(items) < limit {
			items = append(items, render(v.txn, o))
		}
	}
	return items, total, nil
}

func containsStr(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// Latest returns the last committed history entity of kind k owned by
// owner (an endpoint's latest state, a function's latest state).
func (v *View) Latest(k Kind, owner string) (any, error) {
	if !k.History() {
		return nil, invalid(fmt.Sprintf("%s has no history", k))
	}
	it, err := v.txn.ReverseLowerBound(string(k), indexOwnerSeq, ownerSeq(owner, ^uint64(0)))
	if err != nil {
		return nil, fmt.Errorf("latest %s of %q: %w", k, owner, err)
	}
	raw := it.Next()
	if raw == nil || raw.(*Object).Owner != owner {
		return nil, &Error{Code: CodeNotFound, Message: fmt.Sprintf("Resource '%s' has no %s yet", owner, k.Singular())}
	}
	return raw.(*Object).Value, nil
}

// All yields every object of kind k in id order.
func (v *View) All(k Kind) iter.Seq[*Object] {
	return func(yield func(*Object) bool) {
		it, err := v.txn.Get(string(k), indexID)
		if err != nil {
			return
		}
		for raw := it.Next(); raw != nil; raw = it.Next() {
			if !yield(raw.(*Object)) {
				return
			}
		}
	}
}

// entities yields every stored entity of db as put mutations, for
// snapshots.
func entities(db *memdb.MemDB) iter.Seq2[Mutation, error] {
	return func(yield func(Mutation, error) bool) {
		txn := db.Txn(false)
		for _, k := range allKinds() {
			it, err := txn.Get(string(k), indexID)
			if err != nil {
				yield(Mutation{}, fmt.Errorf("iterate %s: %w", k, err))
				return
			}
			for raw := it.Next(); raw != nil; raw = it.Next() {
				o := raw.(*Object)
				value, err := o.Encode()
				if err != nil {
					yield(Mutation{}, fmt.Errorf("encode %s %q: %w", k, o.ID, err))
					return
				}
				if !yield(Mutation{Kind: k, ID: o.ID, Seq: o.Seq, Value: value}, nil) {
					return
				}
			}
		}
	}
}
