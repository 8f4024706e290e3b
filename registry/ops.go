package registry

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"reflect"
	"slices"
	"strings"
	"time"

	"github.com/google/uuid"
)

// OpType is what an Op does.
type OpType int

// Operation types.
const (
	OpCreate OpType = iota + 1 // create a new entity; 409 if the id exists
	OpUpdate                   // partial update of an existing entity
	OpDelete                   // delete, optionally following containment
	// OpPut makes the entity equal to Body (a mesh document entry):
	// created when missing, else replaced in full (defaults fill what
	// Body leaves out; created_at is kept). Unchanged when identical.
	OpPut
)

// Op is one operation of a write. Bodies are JSON objects decoded with
// json.Decoder.UseNumber.
type Op struct {
	Type    OpType
	Kind    Kind
	ID      string         // OpUpdate, OpDelete
	Body    map[string]any // OpCreate, OpUpdate, OpPut
	Cascade bool           // OpDelete
	// IfAbsent makes OpCreate of an existing id a no-op (Unchanged)
	// instead of a conflict: implied roles of mesh documents.
	IfAbsent bool
}

// Outcome says what an operation did.
type Outcome string

// Outcomes.
const (
	Created   Outcome = "created"
	Updated   Outcome = "updated"
	Unchanged Outcome = "unchanged"
	Deleted   Outcome = "deleted"
)

// Result is the answer to one Op.
type Result struct {
	Kind    Kind
	ID      string
	Outcome Outcome
	// Value is the entity after the operation, derived fields included
	// (nil after a delete).
	Value any
	// Err is set only by DoEach, for an operation that was refused.
	Err error
	// Changes lists every entity the operation wrote: the entity itself,
	// embedded policies and storage it created, cascaded deletes.
	Changes []Change
}

// Change is one entity written by a committed revision.
type Change struct {
	Kind    Kind
	ID      string
	Deleted bool
}

// Do applies ops atomically: either every op succeeds and they are
// committed in one durable record, or none is and the error of the first
// failing op is returned (its Index says which).
func (r *Registry) Do(ctx context.Context, ops ...Op) ([]Result, error) {
	return r.do(ctx, ops, false, false)
}

// DryRun resolves ops exactly as Do would, reports the same results or
// error, and commits nothing.
func (r *Registry) DryRun(ctx context.Context, ops ...Op) ([]Result, error) {
	return r.do(ctx, ops, false, true)
}

// DoEach applies every op that succeeds, all in one durable record, and
// reports each op's own outcome or error in order.
func (r *Registry) DoEach(ctx context.Context, ops ...Op) ([]Result, error) {
	return r.do(ctx, ops, true, false)
}

// maxConflictRetries bounds how often a write is resolved again after
// losing a race with another replica.
const maxConflictRetries = 20

func (r *Registry) do(ctx context.Context, ops []Op, each, dryRun bool) ([]Result, error) {
	synced := false
	if each && r.follower != nil {
		// DoEach commits what succeeds, so it cannot be retried after a
		// partial refusal: catch up with the store's head first instead.
		synced = true
		if head, err := r.follower.Head(ctx); err == nil && head > r.Revision() {
			if err := r.awaitRevision(ctx, head); err != nil {
				return nil, unavailable("waiting for other replicas' writes", err)
			}
		}
	}
	for attempt := 1; ; attempt++ {
		// The revision this attempt resolves on (at least): a refusal is
		// re-checked only if the store's head is past it.
		seen := r.Revision()
		res, err := r.doOnce(ctx, ops, each, dryRun)
		var ce *ConflictError
		if !errors.As(err, &ce) {
			if r.follower == nil || synced || !refusal(err, res) {
				return res, err
			}
			// A refusal may come from not having seen another replica's
			// write yet: catch up with the store's head, then decide.
			synced = true
			head, herr := r.follower.Head(ctx)
			if herr != nil || head <= seen {
				return res, err
			}
			if werr := r.awaitRevision(ctx, head); werr != nil {
				return res, err
			}
			continue
		}
		if attempt == maxConflictRetries {
			return nil, unavailable("the write lost the race with other replicas too often; try again", err)
		}
		// Resolve again once the winner's record is applied here.
		if err := r.awaitRevision(ctx, ce.Head); err != nil {
			return nil, unavailable("waiting for another replica's write", err)
		}
	}
}

// refusal reports whether a write was refused for a reason the latest
// state could change: an invalid, missing or conflicting reference.
func refusal(err error, res []Result) bool {
	codes := []Code{CodeOf(err)}
	for _, r := range res {
		codes = append(codes, CodeOf(r.Err))
	}
	for _, c := range codes {
		if c == CodeInvalid || c == CodeNotFound || c == CodeConflict {
			return true
		}
	}
	return false
}

func (r *Registry) doOnce(ctx context.Context, ops []Op, each, dryRun bool) ([]Result, error) {
	if err := ctx.Err(); err != nil {
		return nil, unavailable("request cancelled", err)
	}
	r.mu.Lock()
	if r.broken != nil {
		err := r.broken
		r.mu.Unlock()
		return nil, unavailable("the registry accepts no writes", err)
	}
	w := &writer{r: r, txn: newTx(r.db), rev: r.rev + 1, seq: r.seq, now: r.now().UTC().Format(timeFormat)}
	results := make([]Result, len(ops))
	for i, op := range ops {
		mark := len(w.changes)
		res, err := w.run(op)
		res.Changes = slices.Clone(w.changes[mark:])
		if err != nil {
			var e *Error
			if !asError(err, &e) {
				e = &Error{Code: CodeUnavailable, Message: "internal error", cause: err}
			}
			e.Index = i
			if !each {
				w.txn.Abort()
				r.mu.Unlock()
				return nil, e
			}
			results[i] = Result{Kind: op.Kind, ID: op.ID, Err: e}
			continue
		}
		results[i] = res
	}
	if len(w.muts) == 0 || dryRun {
		w.txn.Abort()
		r.mu.Unlock()
		return results, nil
	}
	if err := w.txn.flush(); err != nil {
		w.txn.Abort()
		r.mu.Unlock()
		return nil, unavailable("internal error", err)
	}
	rec := Record{Rev: w.rev, Mutations: w.muts}
	if r.follower != nil {
		rec.ID, rec.Parent = uuid.NewString(), r.lastID
	}
	pending, err := r.store.Append(rec)
	if err != nil {
		w.txn.Abort()
		r.mu.Unlock()
		r.fail(fmt.Errorf("append revision %d: %w", w.rev, err))
		return nil, unavailable("the write could not be stored", err)
	}
	w.txn.Commit()
	r.rev, r.seq, r.lastID = w.rev, w.seq, rec.ID
	snap := r.db.Snapshot()
	r.pubMu.Lock()
	r.queue = append(r.queue, queued{at: time.Now(), rev: w.rev, seq: w.seq, id: rec.ID, db: snap, changes: w.changes})
	r.pubMu.Unlock()
	r.mu.Unlock()

	if err := pending.Wait(ctx); err != nil {
		var ce *ConflictError
		if errors.As(err, &ce) {
			r.rollback(w.rev, rec.ID)
			return nil, ce
		}
		if ctx.Err() != nil {
			// The caller gave up; the record may still become durable, and
			// must then be published.
			r.bg.Add(1)
			go func() {
				defer r.bg.Done()
				r.await(pending, w.rev, rec.ID)
			}()
			return nil, unavailable("request cancelled before the write was durable", err)
		}
		r.fail(fmt.Errorf("store revision %d: %w", w.rev, err))
		return nil, unavailable("the write could not be made durable", err)
	}
	r.publish(w.rev)
	if r.follower != nil {
		// A remote record may have superseded the queue; the follower
		// publishes this one when the store delivers it back.
		if err := r.awaitRevision(ctx, w.rev); err != nil {
			return nil, unavailable("the write is committed but not yet visible here", err)
		}
	}
	return results, nil
}

func (r *Registry) await(p Pending, rev uint64, id string) {
	if err := p.Wait(r.bgCtx); err != nil {
		if errors.As(err, new(*ConflictError)) {
			r.rollback(rev, id) // the record lost: undo it here too
			return
		}
		if r.bgCtx.Err() != nil {
			return // closing: a restart reloads what the store holds
		}
		r.fail(fmt.Errorf("store revision %d: %w", rev, err))
		return
	}
	r.publish(rev)
}

const timeFormat = "2006-01-02T15:04:05.000000Z"

// writer resolves operations within one write transaction. Every check
// an operation makes comes before its first write, so a refused operation
// leaves the transaction as it found it (DoEach relies on this).
type writer struct {
	r       *Registry
	txn     *tx
	rev     uint64
	seq     uint64
	now     string
	muts    []Mutation
	changes []Change
}

func (w *writer) run(op Op) (Result, error) {
	if !op.Kind.Valid() {
		return Result{}, invalid(fmt.Sprintf("unknown kind %q", op.Kind))
	}
	switch op.Type {
	case OpCreate:
		if op.IfAbsent {
			if id, _ := op.Body[op.Kind.IDField()].(string); id != "" && w.exists(op.Kind, id) {
				return w.result(op.Kind, id, Unchanged), nil
			}
		}
		return w.create(op.Kind, op.Body)
	case OpPut:
		if op.ID == "" || !ValidID(op.ID) {
			return Result{}, invalid("invalid id", FieldError{Field: op.Kind.IDField(), Message: idProblem(op.ID)})
		}
		if prev := getObject(w.txn.Txn, op.Kind, op.ID); prev != nil && identicalPut(op.Kind, op.ID, op.Body, prev) {
			return w.result(op.Kind, op.ID, Unchanged), nil
		}
		if !w.exists(op.Kind, op.ID) {
			body := maps.Clone(op.Body)
			if v, ok := body[op.Kind.IDField()]; ok && v != nil && v != "" && v != op.ID {
				return Result{}, invalid("the id does not match", FieldError{Field: op.Kind.IDField(), Message: fmt.Sprintf("must be %q or absent", op.ID)})
			}
			body[op.Kind.IDField()] = op.ID
			return w.create(op.Kind, body)
		}
		return w.rewrite(op.Kind, op.ID, op.Body, false)
	case OpUpdate:
		return w.update(op.Kind, op.ID, op.Body)
	case OpDelete:
		return w.delete(op.Kind, op.ID, op.Cascade)
	}
	return Result{}, invalid(fmt.Sprintf("unknown operation %d", op.Type))
}

// put logs and applies one entity write. A write that would store the
// same bytes as the current entity is skipped and reports false, so
// re-applying a document changes nothing and costs no revision.
func (w *writer) put(k Kind, id string, seq uint64, value map[string]any) (bool, error) {
	typed, ok := buildEntity(k, value)
	if !ok {
		return false, fmt.Errorf("build %s %q: checked values do not fit the entity", k, id)
	}
	if prev := getObject(w.txn.Txn, k, id); prev != nil && reflect.DeepEqual(prev.Value, typed) {
		return false, nil
	}
	raw, err := json.Marshal(typed)
	if err != nil {
		return false, fmt.Errorf("encode %s %q: %w", k, id, err)
	}
	m := Mutation{Kind: k, ID: id, Seq: seq, Value: raw}
	if _, err := applyObject(w.txn, m, newObject(k, id, w.rev, seq, typed)); err != nil {
		return false, err
	}
	w.muts = append(w.muts, m)
	w.changes = append(w.changes, Change{Kind: k, ID: id})
	return true, nil
}

// identicalPut reports whether a document entry would store exactly what
// is stored already. Most entries of a re-applied document are; this
// answers them without validating again (the stored entity is valid and
// its references resolve). Anything unusual (embedded objects, asserted
// children, an ill-typed or unknown field) takes the full path.
func identicalPut(k Kind, id string, body map[string]any, prev *Object) bool {
	values := make(map[string]any, len(body)+4)
	for key, val := range body {
		if val == nil {
			continue
		}
		f, known := schemaOf(k).field(key)
		switch {
		case key == k.IDField():
			if val != id && val != "" {
				return false
			}
			continue
		case known && (f.typ == ftChildren || f.typ == ftServerTime):
			return false
		case known && (f.typ == ftPolicy || f.typ == ftStorageRef):
			if _, ok := val.(string); !ok {
				return false
			}
		}
		values[key] = val
	}
	applyDefaults(k, values)
	values[k.IDField()] = id
	if stamp := stampField(k); stamp != "" {
		values[stamp] = stampOf(prev.Value)
	}
	typed, ok := buildEntity(k, values)
	return ok && reflect.DeepEqual(prev.Value, typed)
}

// stampField is the server-set time field of kind k, if it has one.
func stampField(k Kind) string {
	if _, ok := schemaOf(k).field("timestamp"); ok {
		return "timestamp"
	}
	if _, ok := schemaOf(k).field("created_at"); ok {
		return "created_at"
	}
	return ""
}

func (w *writer) remove(k Kind, id string) error {
	m := Mutation{Kind: k, ID: id}
	if _, err := applyMutation(w.txn, m, w.rev); err != nil {
		return err
	}
	w.muts = append(w.muts, m)
	w.changes = append(w.changes, Change{Kind: k, ID: id, Deleted: true})
	return nil
}

func (w *writer) exists(k Kind, id string) bool { return getObject(w.txn.Txn, k, id) != nil }

func (w *writer) result(k Kind, id string, out Outcome) Result {
	res := Result{Kind: k, ID: id, Outcome: out}
	if o := getObject(w.txn.Txn, k, id); o != nil {
		res.Value = render(w.txn.Txn, o)
	}
	return res
}

// plan is a checked entity ready to be written, with the embedded
// entities it brings along.
type plan struct {
	kind     Kind
	id       string
	values   map[string]any
	embedded []plannedEmbed
}

type plannedEmbed struct {
	kind   Kind
	id     string
	values map[string]any
	create bool // false: an identical entity already exists
}

func (w *writer) create(k Kind, body map[string]any) (Result, error) {
	c, errs := check(k, body, "")
	if len(errs) > 0 {
		return Result{}, invalid(fmt.Sprintf("invalid %s", k.Singular()), errs...)
	}
	id := c.id
	if id == "" {
		id = w.r.newID()
	} else if w.exists(k, id) {
		return Result{}, conflict("Resource '%s' already exists", id)
	}
	values := c.values
	applyDefaults(k, values)
	p, err := w.resolve(k, id, c, values, nil)
	if err != nil {
		return Result{}, err
	}
	seq := uint64(0)
	if k.History() {
		w.seq++
		seq = w.seq
	}
	if _, err := w.commitPlan(p, seq, "", true); err != nil {
		return Result{}, err
	}
	return w.result(k, id, Created), nil
}

func (w *writer) update(k Kind, id string, patch map[string]any) (Result, error) {
	return w.rewrite(k, id, patch, true)
}

// rewrite updates an existing entity: a partial update (merge) or a full
// replacement by a document's body (defaults fill what it leaves out).
func (w *writer) rewrite(k Kind, id string, body map[string]any, merge bool) (Result, error) {
	prev := getObject(w.txn.Txn, k, id)
	if prev == nil {
		return Result{}, notFound(id)
	}
	idField := k.IDField()
	if v, ok := body[idField]; ok && v != nil && v != "" && v != id {
		return Result{}, invalid("the id cannot be changed", FieldError{Field: idField, Message: fmt.Sprintf("must be %q (the id in the path) or absent", id)})
	}
	next := body
	if merge {
		stored, err := storedValues(prev)
		if err != nil {
			return Result{}, fmt.Errorf("decode stored %s %q: %w", k, id, err)
		}
		next = mergePatch(stored, body)
	}
	next = maps.Clone(next)
	delete(next, idField)
	c, errs := check(k, next, "")
	if len(errs) > 0 {
		return Result{}, invalid(fmt.Sprintf("invalid %s", k.Singular()), errs...)
	}
	if !merge {
		applyDefaults(k, c.values)
	}
	// Only children asserted by this request are checked, not the stored
	// (derived) lists.
	pc, _ := check(k, onlyChildren(k, body), "")
	c.children = pc.children
	p, err := w.resolve(k, id, c, c.values, prev)
	if err != nil {
		return Result{}, err
	}
	changed, err := w.commitPlan(p, prev.Seq, stampOf(prev.Value), false)
	if err != nil {
		return Result{}, err
	}
	if !changed {
		return w.result(k, id, Unchanged), nil
	}
	return w.result(k, id, Updated), nil
}

func applyDefaults(k Kind, values map[string]any) {
	for _, f := range schemaOf(k).fields {
		if _, ok := values[f.name]; !ok && f.def != nil {
			values[f.name] = cloneDefault(f.def)
		}
	}
}

func onlyChildren(k Kind, patch map[string]any) map[string]any {
	out := map[string]any{}
	for _, f := range schemaOf(k).fields {
		if f.typ == ftChildren {
			if v, ok := patch[f.name]; ok {
				out[f.name] = v
			}
		}
	}
	return out
}

// mergePatch applies a partial update: given fields replace stored ones,
// null means absent (unchanged), resources merge field by field, lists
// and maps are replaced.
func mergePatch(stored, patch map[string]any) map[string]any {
	out := maps.Clone(stored)
	for key, val := range patch {
		if val == nil {
			continue
		}
		if key == "resources" {
			pm, pok := val.(map[string]any)
			sm, sok := stored[key].(map[string]any)
			if pok && sok {
				m := maps.Clone(sm)
				for rk, rv := range pm {
					if rv != nil {
						m[rk] = rv
					}
				}
				out[key] = m
				continue
			}
		}
		out[key] = val
	}
	// Derived lists are never stored; they are only asserted.
	for _, key := range []string{"microservices", "functions"} {
		if _, given := patch[key]; !given {
			delete(out, key)
		}
	}
	return out
}

// resolve checks references, embedded entities and asserted children for
// an entity about to be written. It only reads.
func (w *writer) resolve(k Kind, id string, c *checked, values map[string]any, prev *Object) (*plan, error) {
	p := &plan{kind: k, id: id, values: values}
	var errs []FieldError
	for _, e := range c.embedded {
		pe, err := w.resolveEmbedded(id, e)
		if err != nil {
			var re *Error
			if asError(err, &re) && re.Code == CodeInvalid {
				errs = append(errs, re.Fields...)
				continue
			}
			return nil, err
		}
		p.embedded = append(p.embedded, pe)
		values[e.field] = pe.id
	}
	planned := func(kind Kind, ref string) bool {
		for _, e := range p.embedded {
			if e.kind == kind && e.id == ref {
				return true
			}
		}
		return w.exists(kind, ref)
	}
	errs = append(errs, danglingRefs(schemaOf(k), values, "", planned)...)
	if len(errs) > 0 {
		sortFieldErrors(errs)
		return nil, invalid(fmt.Sprintf("invalid %s", k.Singular()), errs...)
	}
	if k == KindFunctionResult {
		if st := getObject(w.txn.Txn, KindFunctionState, id); st != nil {
			if fn := st.Value.(*FunctionState).FunctionID; fn != values["function_id"] {
				return nil, invalid("the result belongs to another function than its state", FieldError{
					Field:   "function_id",
					Message: fmt.Sprintf("function state %q belongs to function %q", id, fn),
				})
			}
		}
	}
	if k == KindFunctionState {
		if res := getObject(w.txn.Txn, KindFunctionResult, id); res != nil {
			if fn := res.Value.(*FunctionResult).FunctionID; fn != values["function_id"] {
				return nil, invalid("the state belongs to another function than its result", FieldError{
					Field:   "function_id",
					Message: fmt.Sprintf("function result %q belongs to function %q", id, fn),
				})
			}
		}
	}
	for _, f := range schemaOf(k).fields {
		if f.typ != ftChildren {
			continue
		}
		childSchema := schemaOf(f.target)
		for _, child := range c.children[f.name] {
			o := getObject(w.txn.Txn, f.target, child)
			if o == nil {
				continue // a forward declaration: allowed, not stored
			}
			if parents := o.RefIDs(childSchema.parent); len(parents) == 1 && parents[0] != id {
				return nil, conflict("%s '%s' belongs to %s '%s', not '%s'", f.target.Singular(), child, k.Singular(), parents[0], id)
			}
		}
	}
	return p, nil
}

// danglingRefs reports every reference of values that does not resolve.
func danglingRefs(s *kindSchema, values map[string]any, prefix string, exists func(Kind, string) bool) []FieldError {
	var errs []FieldError
	for _, f := range s.refFields() {
		switch v := values[f.name].(type) {
		case string:
			if v != "" && !exists(f.target, v) {
				errs = append(errs, FieldError{Field: join(prefix, f.name), Message: fmt.Sprintf("%s '%s' does not exist", f.target.Singular(), v)})
			}
		case []any:
			for i, item := range v {
				if id, _ := item.(string); !exists(f.target, id) {
					errs = append(errs, FieldError{Field: fmt.Sprintf("%s[%d]", join(prefix, f.name), i), Message: fmt.Sprintf("%s '%s' does not exist", f.target.Singular(), id)})
				}
			}
		}
	}
	return errs
}

// resolveEmbedded turns an embedded policy or storage object into an
// entity: new, or an existing one with the same content. A different
// existing one is a conflict, never a silent overwrite.
func (w *writer) resolveEmbedded(owner string, e embedded) (plannedEmbed, error) {
	c, _ := check(e.kind, e.body, e.field) // already validated with the owner
	id := c.id
	if id == "" {
		id = owner + "." + map[Kind]string{KindSecurityPolicy: "policy", KindStorage: "storage"}[e.kind]
		if !ValidID(id) {
			return plannedEmbed{}, invalid("invalid embedded object", FieldError{Field: e.field, Message: fmt.Sprintf("the derived id %q is not valid; give the object an id", id)})
		}
	}
	values := c.values
	applyDefaults(e.kind, values)
	if errs := danglingRefs(schemaOf(e.kind), values, e.field, w.exists); len(errs) > 0 {
		return plannedEmbed{}, invalid("invalid embedded object", errs...)
	}
	if o := getObject(w.txn.Txn, e.kind, id); o != nil {
		stored, err := storedValues(o)
		if err != nil {
			return plannedEmbed{}, fmt.Errorf("decode stored %s %q: %w", e.kind, id, err)
		}
		if diff := differingFields(stored, values, schemaOf(e.kind)); len(diff) > 0 {
			return plannedEmbed{}, conflict("%s '%s' already exists with different %s; refer to it by id or give the embedded object another id",
				e.kind.Singular(), id, strings.Join(diff, ", "))
		}
		return plannedEmbed{kind: e.kind, id: id}, nil
	}
	return plannedEmbed{kind: e.kind, id: id, values: values, create: true}, nil
}

// differingFields compares the user-settable fields of two canonical
// entity maps.
func differingFields(stored, values map[string]any, s *kindSchema) []string {
	var diff []string
	for _, f := range s.fields {
		if f.typ == ftServerTime || f.typ == ftChildren {
			continue
		}
		a, _ := json.Marshal(normalizeEmpty(stored[f.name]))
		b, _ := json.Marshal(normalizeEmpty(values[f.name]))
		if string(a) != string(b) {
			diff = append(diff, f.name)
		}
	}
	return diff
}

func normalizeEmpty(v any) any {
	switch x := v.(type) {
	case nil:
		return nil
	case string:
		if x == "" {
			return nil
		}
	case []any:
		if len(x) == 0 {
			return nil
		}
	case map[string]any:
		if len(x) == 0 {
			return nil
		}
	}
	return v
}

// commitPlan writes an entity and its new embedded entities, and trims
// history beyond the limit. It reports whether anything changed.
func (w *writer) commitPlan(p *plan, seq uint64, createdAt string, isNew bool) (bool, error) {
	changed := false
	for _, e := range p.embedded {
		if !e.create {
			continue
		}
		e.values[e.kind.IDField()] = e.id
		e.values[stampField(e.kind)] = w.now
		if _, err := w.put(e.kind, e.id, 0, e.values); err != nil {
			return false, err
		}
		changed = true
	}
	values := p.values
	values[p.kind.IDField()] = p.id
	if createdAt == "" {
		createdAt = w.now
	}
	if stamp := stampField(p.kind); stamp != "" {
		values[stamp] = createdAt
	}
	ok, err := w.put(p.kind, p.id, seq, values)
	if err != nil {
		return false, err
	}
	changed = changed || ok
	if isNew && p.kind.History() {
		return changed, w.trimHistory(p.kind, values[schemaOf(p.kind).owner].(string))
	}
	return changed, nil
}

// trimHistory deletes an owner's oldest history entries beyond the limit;
// the deletes are logged like any other mutation.
func (w *writer) trimHistory(k Kind, owner string) error {
	excess := w.txn.count(counterKey(k, owner)) - w.r.historyLimit
	if excess <= 0 {
		return nil
	}
	it, err := w.txn.Get(string(k), indexOwnerSeq+"_prefix", owner+"\x00")
	if err != nil {
		return fmt.Errorf("list history of %q: %w", owner, err)
	}
	var old []string
	for raw := it.Next(); raw != nil && len(old) < excess; raw = it.Next() {
		old = append(old, raw.(*Object).ID)
	}
	for _, id := range old {
		if err := w.remove(k, id); err != nil {
			return err
		}
	}
	return nil
}

func (w *writer) delete(k Kind, id string, cascade bool) (Result, error) {
	if getObject(w.txn.Txn, k, id) == nil {
		return Result{}, notFound(id)
	}
	// Collect the closure: history always goes with its owner; contained
	// entities only with cascade.
	type key struct {
		k  Kind
		id string
	}
	doomed := map[key]bool{{k, id}: true}
	order := []key{{k, id}}
	type blocker struct {
		key  key
		desc string
	}
	var blockers []blocker
	for i := 0; i < len(order); i++ {
		cur := order[i]
		for _, ref := range referrersOf(cur.k) {
			it, err := w.txn.Get(string(ref.kind), ref.field.name, cur.id)
			if err != nil {
				return Result{}, fmt.Errorf("find referrers of %s %q: %w", cur.k, cur.id, err)
			}
			for raw := it.Next(); raw != nil; raw = it.Next() {
				o := raw.(*Object)
				kk := key{ref.kind, o.ID}
				if doomed[kk] {
					continue
				}
				if ref.field.contains && (ref.kind.History() || cascade) {
					doomed[kk] = true
					order = append(order, kk)
					continue
				}
				blockers = append(blockers, blocker{kk, fmt.Sprintf("%s '%s' (%s)", ref.kind.Singular(), o.ID, ref.field.name)})
			}
		}
	}
	// A blocker found early may be doomed by a later step of the closure.
	var still []string
	for _, b := range blockers {
		if !doomed[b.key] {
			still = append(still, b.desc)
		}
	}
	if len(still) > 0 {
		slices.Sort(still)
		still = slices.Compact(still)
		hint := ""
		if !cascade {
			hint = " (use ?cascade=true to delete contained entities with it)"
		}
		return Result{}, conflict("%s '%s' is referenced by %s%s", k.Singular(), id, strings.Join(still, ", "), hint)
	}
	// Delete children before parents.
	for i := len(order) - 1; i >= 0; i-- {
		if err := w.remove(order[i].k, order[i].id); err != nil {
			return Result{}, err
		}
	}
	return Result{Kind: k, ID: id, Outcome: Deleted}, nil
}

func cloneDefault(v any) any {
	switch x := v.(type) {
	case []any:
		return slices.Clone(x)
	case map[string]any:
		return maps.Clone(x)
	}
	return v
}

// storedValues returns an entity's stored fields as JSON values.
func storedValues(o *Object) (map[string]any, error) {
	raw, err := o.Encode()
	if err != nil {
		return nil, err
	}
	var m map[string]any
	if err := decodeJSON(raw, &m); err != nil {
		return nil, err
	}
	return m, nil
}

func decodeJSON(raw []byte, v any) error {
	dec := json.NewDecoder(strings.NewReader(string(raw)))
	dec.UseNumber()
	return dec.Decode(v)
}

func asError(err error, target **Error) bool { return errors.As(err, target) }
