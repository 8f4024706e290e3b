package api

import (
	"errors"
	"fmt"
	"net/http"

	"github.com/cryptomesh/cryptomesh/registry"
	"github.com/cryptomesh/cryptomesh/registry/mesh"
)

// httpError is an error that knows the HTTP status it answers with. The
// message and fields go to the client; cause is only logged.
type httpError struct {
	status  int
	message string
	fields  []fieldDetail
	cause   error
}

func (e *httpError) Error() string {
	if e.cause != nil {
		return fmt.Sprintf("%d %s: %v", e.status, e.message, e.cause)
	}
	return fmt.Sprintf("%d %s", e.status, e.message)
}

func (e *httpError) Unwrap() error { return e.cause }

func errorf(status int, format string, args ...any) *httpError {
	return &httpError{status: status, message: fmt.Sprintf(format, args...)}
}

// invalidInput is a 422 naming the offending fields (or query parameters).
func invalidInput(message string, fields ...registry.FieldError) *httpError {
	return &httpError{status: http.StatusUnprocessableEntity, message: message, fields: fieldDetails(fields)}
}

// fieldDetail is one entry of an error's "errors" list: the field (for a
// mesh document, the document path such as
// `functions.load_data.resources.cpu`), its line in a YAML document when
// known, and what is wrong with it.
type fieldDetail struct {
	Field   string `json:"field"`
	Line    int    `json:"line,omitempty"`
	Message string `json:"message"`
}

func fieldDetails(fs []registry.FieldError) []fieldDetail {
	if fs == nil {
		return nil
	}
	out := make([]fieldDetail, len(fs))
	for i, f := range fs {
		out[i] = fieldDetail{Field: f.Field, Message: f.Message}
	}
	return out
}

// errorDetail is the body of every error answer (SPEC §2), and the detail
// of a refused item of POST /reports.
type errorDetail struct {
	Message string        `json:"message"`
	Code    int           `json:"code"`
	Errors  []fieldDetail `json:"errors,omitempty"`
}

type errorBody struct {
	Detail errorDetail `json:"detail"`
}

// statusOf maps a registry error code to its HTTP status.
func statusOf(c registry.Code) int {
	switch c {
	case registry.CodeInvalid:
		return http.StatusUnprocessableEntity
	case registry.CodeMalformed:
		return http.StatusBadRequest
	case registry.CodeNotFound:
		return http.StatusNotFound
	case registry.CodeConflict:
		return http.StatusConflict
	case registry.CodeUnavailable:
		return http.StatusServiceUnavailable
	}
	return http.StatusInternalServerError
}

// toHTTP turns any error into the status and detail the client sees.
// Anything that is neither an httpError nor a registry error is a bug on
// our side: the client gets a bare 500 and the cause is only logged.
func toHTTP(err error) *httpError {
	var he *httpError
	if errors.As(err, &he) {
		return he
	}
	var me *mesh.Error
	if errors.As(err, &me) {
		// A document error keeps its paths and YAML lines on every status:
		// a 409 or a duplicate key (400) is as much about one place in the
		// document as a 422 is.
		fields := make([]fieldDetail, len(me.Fields))
		for i, f := range me.Fields {
			fields[i] = fieldDetail{Field: f.Path, Line: f.Line, Message: f.Message}
		}
		return &httpError{status: statusOf(me.Code), message: me.Message, fields: fields}
	}
	var re *registry.Error
	if errors.As(err, &re) {
		status := statusOf(re.Code)
		if status == http.StatusServiceUnavailable || status == http.StatusInternalServerError {
			// The registry's message says what failed ("the write could
			// not be stored"); the cause may hold file names, so it is
			// logged, not sent.
			return &httpError{status: status, message: re.Message, cause: err}
		}
		return &httpError{status: status, message: re.Message, fields: fieldDetails(re.Fields)}
	}
	return &httpError{status: http.StatusInternalServerError, message: "internal server error", cause: err}
}

// detail renders e for the client. A 422 always carries its field list,
// so clients can rely on "errors" being there.
func (e *httpError) detail() errorDetail {
	d := errorDetail{Message: e.message, Code: e.status, Errors: e.fields}
	if e.status == http.StatusUnprocessableEntity && len(d.Errors) == 0 {
		d.Errors = []fieldDetail{{Field: "", Message: e.message}}
	}
	return d
}
