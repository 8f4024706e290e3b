package registry

import (
	"encoding/json"
	"fmt"

	memdb "github.com/hashicorp/go-memdb"
)

// Object is one stored entity as go-memdb holds it: the typed value, the
// exact JSON that was logged, and what the indexes need.
type Object struct {
	Kind Kind
	ID   string
	// Rev is the revision of the record that last wrote the entity.
	Rev uint64
	// Seq orders history entities in commit order (0 for other kinds).
	Seq uint64
	// Owner is a history entity's owner id; OwnerSeq orders an owner's
	// history ("<owner>\x00<seq as 16 hex digits>").
	Owner    string
	OwnerSeq string
	// Refs lists the ids the entity's reference fields point at.
	Refs []Ref
	// Value is the typed entity (*Role, *Function, ...) without derived
	// fields; immutable once stored. Its JSON encoding (Encode) is what
	// was logged: the stored bytes are not kept, to save memory.
	Value any
}

// Ref is one reference of an entity: its field and the id it names. A
// list field (a policy's roles) has one Ref per id.
type Ref struct {
	Field string
	ID    string
}

// Encode returns the entity's stored encoding.
func (o *Object) Encode() ([]byte, error) { return json.Marshal(o.Value) }

// RefIDs returns the ids field references.
func (o *Object) RefIDs(field string) []string {
	var ids []string
	for _, r := range o.Refs {
		if r.Field == field {
			ids = append(ids, r.ID)
		}
	}
	return ids
}

// counter is a maintained count: objects per kind, history per owner.
type counter struct {
	Key string
	N   int
}

const (
	indexID       = "id"
	indexSeq      = "seq"
	indexOwnerSeq = "owner_seq"
	tableCounters = "counters"
)

func ownerSeq(owner string, seq uint64) string {
	return fmt.Sprintf("%s\x00%016x", owner, seq)
}

func counterKey(k Kind, owner string) string {
	if owner == "" {
		return string(k)
	}
	return string(k) + "\x00" + owner
}

// refIndex indexes Object.Refs[field]; a multi-valued index so that a
// policy's role list is searchable by any of its roles.
type refIndex struct{ field string }

func (ix refIndex) FromObject(raw any) (bool, [][]byte, error) {
	o, ok := raw.(*Object)
	if !ok {
		return false, nil, fmt.Errorf("ref index %s: unexpected %T", ix.field, raw)
	}
	var vals [][]byte
	for _, r := range o.Refs {
		if r.Field == ix.field {
			vals = append(vals, []byte(r.ID+"\x00"))
		}
	}
	return len(vals) > 0, vals, nil
}

func (ix refIndex) FromArgs(args ...any) ([]byte, error) {
	if len(args) != 1 {
		return nil, fmt.Errorf("ref index %s: want one argument", ix.field)
	}
	s, ok := args[0].(string)
	if !ok {
		return nil, fmt.Errorf("ref index %s: argument must be a string, not %T", ix.field, args[0])
	}
	return []byte(s + "\x00"), nil
}

// dbSchema is the go-memdb schema: one table per kind, indexed by id, by
// every reference field, and for history by commit order overall and per
// owner; plus the counters table.
func dbSchema() *memdb.DBSchema {
	tables := map[string]*memdb.TableSchema{
		tableCounters: {
			Name: tableCounters,
			Indexes: map[string]*memdb.IndexSchema{
				indexID: {Name: indexID, Unique: true, Indexer: &memdb.StringFieldIndex{Field: "Key"}},
			},
		},
	}
	for _, k := range allKinds() {
		idx := map[string]*memdb.IndexSchema{
			indexID: {Name: indexID, Unique: true, Indexer: &memdb.StringFieldIndex{Field: "ID"}},
		}
		for _, f := range schemaOf(k).refFields() {
			idx[f.name] = &memdb.IndexSchema{Name: f.name, AllowMissing: true, Indexer: refIndex{field: f.name}}
		}
		if k.History() {
			idx[indexSeq] = &memdb.IndexSchema{Name: indexSeq, Unique: true, Indexer: &memdb.UintFieldIndex{Field: "Seq"}}
			idx[indexOwnerSeq] = &memdb.IndexSchema{Name: indexOwnerSeq, Unique: true, Indexer: &memdb.StringFieldIndex{Field: "OwnerSeq"}}
		}
		tables[string(k)] = &memdb.TableSchema{Name: string(k), Indexes: idx}
	}
	return &memdb.DBSchema{Tables: tables}
}
