package registry

import (
	"encoding/json"
	"fmt"

	memdb "github.com/hashicorp/go-memdb"
)

// NewEntity returns a pointer to a zero entity of kind k (*Role, ...), or
// nil for an unknown kind.
func NewEntity(k Kind) any { return newValue(k) }

// newValue returns a pointer to a zero entity of kind k.
func newValue(k Kind) any {
	switch k {
	case KindRole:
		return &Role{}
	case KindSecurityPolicy:
		return &SecurityPolicy{}
	case KindStorage:
		return &Storage{}
	case KindEndpoint:
		return &Endpoint{}
	case KindEndpointState:
		return &EndpointState{}
	case KindService:
		return &Service{}
	case KindMicroservice:
		return &Microservice{}
	case KindFunction:
		return &Function{}
	case KindFunctionState:
		return &FunctionState{}
	case KindFunctionResult:
		return &FunctionResult{}
	case KindJoinToken:
		return &JoinToken{}
	}
	return nil
}

// refsOf extracts the reference fields of a typed entity.
func refsOf(v any) []Ref {
	var refs []Ref
	one := func(field, id string) {
		if id != "" {
			refs = append(refs, Ref{Field: field, ID: id})
		}
	}
	switch e := v.(type) {
	case *SecurityPolicy:
		for _, id := range e.Roles {
			one("roles", id)
		}
	case *Endpoint:
		one("security_policy", e.SecurityPolicy)
		one("role", e.Role)
	case *EndpointState:
		one("endpoint_id", e.EndpointID)
	case *Service:
		one("security_policy", e.SecurityPolicy)
	case *Microservice:
		one("service_id", e.ServiceID)
	case *Function:
		one("microservice_id", e.MicroserviceID)
		one("storage", e.Storage)
		one("endpoint_id", e.EndpointID)
	case *FunctionState:
		one("function_id", e.FunctionID)
	case *FunctionResult:
		one("function_id", e.FunctionID)
	}
	return refs
}

// decodeObject builds the stored object for a put mutation.
func decodeObject(m Mutation, rev uint64) (*Object, error) {
	if !m.Kind.Valid() {
		return nil, fmt.Errorf("unknown kind %q", m.Kind)
	}
	v := newValue(m.Kind)
	if err := json.Unmarshal(m.Value, v); err != nil {
		return nil, fmt.Errorf("decode %s %q: %w", m.Kind, m.ID, err)
	}
	return newObject(m.Kind, m.ID, rev, m.Seq, v), nil
}

// applyMutation applies one resolved mutation to txn, keeping the counters
// in step. It is the only place that writes entity tables, used both by
// live writes and by replay, so both produce the same state.
func applyMutation(txn *tx, m Mutation, rev uint64) (*Object, error) {
	var o *Object
	if !m.Delete() {
		var err error
		if o, err = decodeObject(m, rev); err != nil {
			return nil, err
		}
	}
	return applyObject(txn, m, o)
}

// applyObject applies a mutation whose object (nil for a delete) is
// already decoded, so replay can decode in parallel.
func applyObject(txn *tx, m Mutation, o *Object) (*Object, error) {
	prevRaw, err := txn.First(string(m.Kind), indexID, m.ID)
	if err != nil {
		return nil, fmt.Errorf("look up %s %q: %w", m.Kind, m.ID, err)
	}
	prev, _ := prevRaw.(*Object)
	if prev != nil {
		if err := txn.Delete(string(m.Kind), prev); err != nil {
			return nil, fmt.Errorf("delete %s %q: %w", m.Kind, m.ID, err)
		}
		txn.deltas[counterKey(m.Kind, "")]--
		if m.Kind.History() {
			txn.deltas[counterKey(m.Kind, prev.Owner)]--
		}
	}
	if m.Delete() {
		if prev == nil {
			return nil, fmt.Errorf("delete of missing %s %q", m.Kind, m.ID)
		}
		return nil, nil
	}
	if err := txn.Insert(string(m.Kind), o); err != nil {
		return nil, fmt.Errorf("insert %s %q: %w", m.Kind, m.ID, err)
	}
	txn.deltas[counterKey(m.Kind, "")]++
	if m.Kind.History() {
		txn.deltas[counterKey(m.Kind, o.Owner)]++
	}
	return o, nil
}

// tx is a write transaction that batches counter updates: a counter reads
// as its stored value plus the transaction's pending delta, and is written
// once, by flush, instead of once per mutation.
type tx struct {
	*memdb.Txn
	deltas map[string]int
}

func newTx(db *memdb.MemDB) *tx {
	return &tx{Txn: db.Txn(true), deltas: map[string]int{}}
}

func (t *tx) count(key string) int { return count(t.Txn, key) + t.deltas[key] }

// flush writes the pending counter deltas; call it before Commit.
func (t *tx) flush() error {
	for key, d := range t.deltas {
		if d == 0 {
			continue
		}
		if err := bump(t.Txn, key, d); err != nil {
			return err
		}
	}
	clear(t.deltas)
	return nil
}

func bump(txn *memdb.Txn, key string, delta int) error {
	raw, err := txn.First(tableCounters, indexID, key)
	if err != nil {
		return fmt.Errorf("read counter %q: %w", key, err)
	}
	n := delta
	if c, ok := raw.(*counter); ok {
		n += c.N
	}
	if n <= 0 {
		if raw != nil {
			if err := txn.Delete(tableCounters, raw); err != nil {
				return fmt.Errorf("delete counter %q: %w", key, err)
			}
		}
		return nil
	}
	if err := txn.Insert(tableCounters, &counter{Key: key, N: n}); err != nil {
		return fmt.Errorf("write counter %q: %w", key, err)
	}
	return nil
}

func count(txn *memdb.Txn, key string) int {
	raw, err := txn.First(tableCounters, indexID, key)
	if err != nil || raw == nil {
		return 0
	}
	return raw.(*counter).N
}

func getObject(txn *memdb.Txn, k Kind, id string) *Object {
	raw, err := txn.First(string(k), indexID, id)
	if err != nil || raw == nil {
		return nil
	}
	return raw.(*Object)
}

// render returns o's entity with its derived fields filled in. The stored
// value is never modified.
func render(txn *memdb.Txn, o *Object) any {
	switch e := o.Value.(type) {
	case *Service:
		c := *e
		c.Microservices = childIDs(txn, KindMicroservice, "service_id", o.ID)
		return &c
	case *Microservice:
		c := *e
		c.Functions = childIDs(txn, KindFunction, "microservice_id", o.ID)
		return &c
	}
	return o.Value
}

func childIDs(txn *memdb.Txn, k Kind, field, parent string) []string {
	ids := []string{}
	it, err := txn.Get(string(k), field, parent)
	if err != nil {
		return ids
	}
	for raw := it.Next(); raw != nil; raw = it.Next() {
		ids = append(ids, raw.(*Object).ID)
	}
	return ids
}
