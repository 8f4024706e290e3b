package registry

import (
	"errors"
	"fmt"
	"strings"
)

// Code classifies a registry error; the API maps each to an HTTP status.
type Code int

// Error codes.
const (
	CodeInvalid     Code = iota + 1 // the input breaks a rule (422)
	CodeMalformed                   // the input cannot be parsed (400)
	CodeNotFound                    // no such entity (404)
	CodeConflict                    // duplicate id, or a conflict with stored state (409)
	CodeUnavailable                 // the store failed or the registry is closed (503)
)

// Error is a registry error with everything a client needs to fix the
// request.
type Error struct {
	Code    Code
	Message string
	// Fields lists every invalid field (CodeInvalid).
	Fields []FieldError
	// Index is the position of the failing operation in a batch.
	Index int
	cause error
}

func (e *Error) Error() string {
	var b strings.Builder
	b.WriteString(e.Message)
	for _, f := range e.Fields {
		fmt.Fprintf(&b, "; %s: %s", f.Field, f.Message)
	}
	if e.cause != nil {
		fmt.Fprintf(&b, ": %v", e.cause)
	}
	return b.String()
}

func (e *Error) Unwrap() error { return e.cause }

// CodeOf returns the code of err's registry error, or 0.
func CodeOf(err error) Code {
	var e *Error
	if errors.As(err, &e) {
		return e.Code
	}
	return 0
}

func invalid(msg string, fields ...FieldError) *Error {
	return &Error{Code: CodeInvalid, Message: msg, Fields: fields}
}

func notFound(id string) *Error {
	return &Error{Code: CodeNotFound, Message: fmt.Sprintf("Resource '%s' not found", id)}
}

func conflict(format string, args ...any) *Error {
	return &Error{Code: CodeConflict, Message: fmt.Sprintf(format, args...)}
}

func unavailable(msg string, cause error) *Error {
	return &Error{Code: CodeUnavailable, Message: msg, cause: cause}
}
