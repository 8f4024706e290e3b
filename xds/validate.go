package xds

import (
	"errors"
	"fmt"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/known/anypb"
)

// allValidator is what protoc-gen-validate generates on every Envoy message.
type allValidator interface{ ValidateAll() error }

// errNoValidator reports a message without generated validation: such a
// message is not published, because nothing could vouch for it.
var errNoValidator = errors.New("message has no ValidateAll")

// validate runs the protos' own validation (all violations, not only the
// first) on m and on every message packed in an Any anywhere inside it,
// recursively. ValidateAll alone stops at an Any: it checks the type URL's
// rules, never the packed message, and a bad packed HCM or TLS context is
// exactly what gets a whole listener NACKed.
func validate(m proto.Message) error {
	v, ok := m.(allValidator)
	if !ok {
		return fmt.Errorf("%s: %w", m.ProtoReflect().Descriptor().FullName(), errNoValidator)
	}
	if err := v.ValidateAll(); err != nil {
		return err
	}
	return validateAnys(m.ProtoReflect())
}

// validateAnys walks every set field of m looking for Any messages.
func validateAnys(m protoreflect.Message) error {
	var err error
	m.Range(func(fd protoreflect.FieldDescriptor, v protoreflect.Value) bool {
		switch {
		case fd.IsList():
			if fd.Message() == nil {
				return true
			}
			list := v.List()
			for i := 0; i < list.Len() && err == nil; i++ {
				err = validateNested(list.Get(i).Message())
			}
		case fd.IsMap():
			if fd.MapValue().Message() == nil {
				return true
			}
			v.Map().Range(func(k protoreflect.MapKey, mv protoreflect.Value) bool {
				if err = validateNested(mv.Message()); err != nil {
					err = fmt.Errorf("%s[%s]: %w", fd.Name(), k.String(), err)
				}
				return err == nil
			})
			return err == nil
		case fd.Message() != nil:
			err = validateNested(v.Message())
		default:
			return true
		}
		if err != nil {
			err = fmt.Errorf("%s: %w", fd.Name(), err)
		}
		return err == nil
	})
	return err
}

func validateNested(m protoreflect.Message) error {
	a, ok := m.Interface().(*anypb.Any)
	if !ok {
		return validateAnys(m)
	}
	inner, err := a.UnmarshalNew()
	if err != nil {
		return fmt.Errorf("unpack %s: %w", a.GetTypeUrl(), err)
	}
	if err := validate(inner); err != nil {
		return fmt.Errorf("%s: %w", a.GetTypeUrl(), err)
	}
	return nil
}
