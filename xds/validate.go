package xds

import (
	"errors"
	"fmt"
	"slices"
	"sync"

	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/known/anypb"
)

// allValidator is what protoc-gen-validate generates on every Envoy message.
type allValidator interface{ ValidateAll() error }

// errNoValidator reports a message without generated validation: such a
// message is not published, because nothing could vouch for it.
var errNoValidator = errors.New("message has no ValidateAll")

// anyName is the full name of google.protobuf.Any.
const anyName protoreflect.FullName = "google.protobuf.Any"

// checker is the one gate every message passes on its way out: it runs the
// protos' own validation (ValidateAll: all violations, not only the first)
// on each resource and on every message packed in an Any anywhere inside
// it. ValidateAll alone stops at an Any — it checks the type URL, never
// the packed message — and a bad packed HCM or TLS context is exactly what
// gets a whole listener NACKed.
//
// Messages are packed by pack, which validates them first and remembers
// the Any it made; the walk over an enclosing message then trusts those
// Anys instead of unpacking and validating them again at every level of
// nesting (RBAC inside a route inside an HCM inside a listener). Any other
// Any is unpacked and validated in full. Trusted Anys are never modified
// after pack returns them.
//
// The walk looks only at fields that can lead to an Any, from a table
// computed once per checker (newChecker) for the message types the package
// generates; a type outside the table (inside a foreign Any) has its fields
// worked out on the spot. Most messages hold no Any at all (a virtual host,
// a load assignment): their encoding, which is made anyway, is scanned for
// one first — no reflection, no allocation — and only a message that has
// one is walked. The zero checker is ready to use, table-less.
type checker struct {
	trusted sync.Map // *anypb.Any → struct{}
	// plans maps a message type to the fields whose type is, or can
	// contain, an Any. Read-only once built.
	plans map[protoreflect.FullName]*walkPlan
}

// walkPlan is where an Any can be found in a message of one type.
type walkPlan struct {
	fields []protoreflect.FieldDescriptor // outside any oneof
	// oneofs have a member that can lead to an Any; one WhichOneof call
	// replaces asking each member whether it is set.
	oneofs  []protoreflect.OneofDescriptor
	inOneof map[protoreflect.FieldNumber]bool
	// byNumber holds every field above, for scanning encodings.
	byNumber map[protoreflect.FieldNumber]protoreflect.FieldDescriptor
}

// newChecker returns a checker with the field table of every message type
// reachable from roots.
func newChecker(roots ...protoreflect.MessageDescriptor) *checker {
	all := map[protoreflect.FullName]protoreflect.MessageDescriptor{}
	var collect func(protoreflect.MessageDescriptor)
	collect = func(d protoreflect.MessageDescriptor) {
		if _, ok := all[d.FullName()]; ok {
			return
		}
		all[d.FullName()] = d
		for _, sub := range fieldMessages(d) {
			collect(sub)
		}
	}
	for _, r := range roots {
		collect(r)
	}
	// holds[d]: an Any can occur somewhere inside a d. Iterate to the
	// fixpoint, since message types refer to each other in cycles
	// (RBAC permissions, for one).
	holds := map[protoreflect.FullName]bool{anyName: true}
	for changed := true; changed; {
		changed = false
		for name, d := range all {
			if holds[name] {
				continue
			}
			for _, sub := range fieldMessages(d) {
				if holds[sub.FullName()] {
					holds[name], changed = true, true
					break
				}
			}
		}
	}
	c := &checker{plans: make(map[protoreflect.FullName]*walkPlan, len(all))}
	for name, d := range all {
		plan := &walkPlan{inOneof: map[protoreflect.FieldNumber]bool{}, byNumber: map[protoreflect.FieldNumber]protoreflect.FieldDescriptor{}}
		fds := d.Fields()
		for i := range fds.Len() {
			fd := fds.Get(i)
			sub := fieldMessage(fd)
			if sub == nil || !holds[sub.FullName()] {
				continue
			}
			plan.byNumber[fd.Number()] = fd
			od := fd.ContainingOneof()
			if od == nil || od.IsSynthetic() {
				plan.fields = append(plan.fields, fd)
				continue
			}
			if !slices.Contains(plan.oneofs, od) {
				plan.oneofs = append(plan.oneofs, od)
			}
			plan.inOneof[fd.Number()] = true
		}
		c.plans[name] = plan
	}
	return c
}

// fieldMessage is the message type of a field's values (a map's values),
// or nil for scalars.
func fieldMessage(fd protoreflect.FieldDescriptor) protoreflect.MessageDescriptor {
	if fd.IsMap() {
		return fd.MapValue().Message()
	}
	return fd.Message()
}

func fieldMessages(d protoreflect.MessageDescriptor) []protoreflect.MessageDescriptor {
	var subs []protoreflect.MessageDescriptor
	fds := d.Fields()
	for i := range fds.Len() {
		if sub := fieldMessage(fds.Get(i)); sub != nil {
			subs = append(subs, sub)
		}
	}
	return subs
}

// plan says where to look for Anys in a message of type md.
func (c *checker) plan(md protoreflect.MessageDescriptor) *walkPlan {
	if p, ok := c.plans[md.FullName()]; ok {
		return p
	}
	// A type the table does not know: work it out for this message only.
	return newChecker(md).plans[md.FullName()]
}

// pack validates m and puts it into an Any with deterministic bytes.
func (c *checker) pack(m proto.Message) (*anypb.Any, error) {
	name := m.ProtoReflect().Descriptor().FullName()
	b, err := c.marshalValid(m)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	a := &anypb.Any{TypeUrl: anyTypePrefix + string(name), Value: b}
	c.trusted.Store(a, struct{}{})
	return a, nil
}

// anyTypePrefix is what anypb.New puts before a message's full name.
const anyTypePrefix = "type.googleapis.com/"

// marshalValid marshals m deterministically and validates it (and what is
// packed in it), returning the bytes only if it is valid.
func (c *checker) marshalValid(m proto.Message) ([]byte, error) {
	b, err := deterministic().Marshal(m)
	if err != nil {
		return nil, fmt.Errorf("marshal: %w", err)
	}
	v, ok := m.(allValidator)
	if !ok {
		return nil, fmt.Errorf("%s: %w", m.ProtoReflect().Descriptor().FullName(), errNoValidator)
	}
	if err := v.ValidateAll(); err != nil {
		return nil, err
	}
	found, err := c.encodedHasAny(m.ProtoReflect().Descriptor(), b)
	if err != nil {
		return nil, err
	}
	if found {
		if err := c.walk(m.ProtoReflect()); err != nil {
			return nil, err
		}
	}
	return b, nil
}

// encodedHasAny reports whether the encoding b of a message of type md
// holds an Any anywhere.
func (c *checker) encodedHasAny(md protoreflect.MessageDescriptor, b []byte) (bool, error) {
	plan := c.plan(md)
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return false, fmt.Errorf("%s: %w", md.FullName(), protowire.ParseError(n))
		}
		b = b[n:]
		fd, walkable := plan.byNumber[num]
		if !walkable || typ != protowire.BytesType {
			if n = protowire.ConsumeFieldValue(num, typ, b); n < 0 {
				return false, fmt.Errorf("%s: %w", md.FullName(), protowire.ParseError(n))
			}
			b = b[n:]
			continue
		}
		v, n := protowire.ConsumeBytes(b)
		if n < 0 {
			return false, fmt.Errorf("%s: %w", md.FullName(), protowire.ParseError(n))
		}
		b = b[n:]
		sub := fieldMessage(fd)
		if sub.FullName() == anyName {
			return true, nil
		}
		if fd.IsMap() {
			// A map entry is a message of key (1) and value (2).
			if v, err := mapEntryValue(v); err != nil {
				return false, fmt.Errorf("%s: %w", md.FullName(), err)
			} else if v != nil {
				if found, err := c.encodedHasAny(sub, v); err != nil || found {
					return found, err
				}
			}
			continue
		}
		if found, err := c.encodedHasAny(sub, v); err != nil || found {
			return found, err
		}
	}
	return false, nil
}

// mapEntryValue is the encoded value of a map entry whose values are
// messages, or nil when the entry has none.
func mapEntryValue(entry []byte) ([]byte, error) {
	var value []byte
	for len(entry) > 0 {
		num, typ, n := protowire.ConsumeTag(entry)
		if n < 0 {
			return nil, protowire.ParseError(n)
		}
		entry = entry[n:]
		if num == 2 && typ == protowire.BytesType {
			v, n := protowire.ConsumeBytes(entry)
			if n < 0 {
				return nil, protowire.ParseError(n)
			}
			value, entry = v, entry[n:]
			continue
		}
		if n = protowire.ConsumeFieldValue(num, typ, entry); n < 0 {
			return nil, protowire.ParseError(n)
		}
		entry = entry[n:]
	}
	return value, nil
}

// validate checks m and every message packed in it.
func (c *checker) validate(m proto.Message) error {
	v, ok := m.(allValidator)
	if !ok {
		return fmt.Errorf("%s: %w", m.ProtoReflect().Descriptor().FullName(), errNoValidator)
	}
	if err := v.ValidateAll(); err != nil {
		return err
	}
	return c.walk(m.ProtoReflect())
}

// walk visits the set fields of m that may lead to an Any.
func (c *checker) walk(m protoreflect.Message) error {
	plan := c.plan(m.Descriptor())
	for _, fd := range plan.fields {
		if !m.Has(fd) {
			continue
		}
		if err := c.walkField(m, fd); err != nil {
			return fmt.Errorf("%s: %w", fd.Name(), err)
		}
	}
	for _, od := range plan.oneofs {
		fd := m.WhichOneof(od)
		if fd == nil || !plan.inOneof[fd.Number()] {
			continue
		}
		if err := c.walkField(m, fd); err != nil {
			return fmt.Errorf("%s: %w", fd.Name(), err)
		}
	}
	return nil
}

func (c *checker) walkField(m protoreflect.Message, fd protoreflect.FieldDescriptor) error {
	var err error
	v := m.Get(fd)
	switch {
	case fd.IsList():
		list := v.List()
		for i := 0; i < list.Len() && err == nil; i++ {
			err = c.visit(list.Get(i).Message())
		}
	case fd.IsMap():
		v.Map().Range(func(k protoreflect.MapKey, mv protoreflect.Value) bool {
			if err = c.visit(mv.Message()); err != nil {
				err = fmt.Errorf("[%s]: %w", k.String(), err)
			}
			return err == nil
		})
	default:
		err = c.visit(v.Message())
	}
	return err
}

func (c *checker) visit(m protoreflect.Message) error {
	a, ok := m.Interface().(*anypb.Any)
	if !ok {
		return c.walk(m)
	}
	if _, ok := c.trusted.Load(a); ok {
		return nil
	}
	inner, err := a.UnmarshalNew()
	if err != nil {
		return fmt.Errorf("unpack %s: %w", a.GetTypeUrl(), err)
	}
	if err := c.validate(inner); err != nil {
		return fmt.Errorf("%s: %w", a.GetTypeUrl(), err)
	}
	return nil
}
