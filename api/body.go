package api

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"strconv"
	"strings"

	"github.com/cryptomesh/cryptomesh/registry"
)

// DefaultMaxBodyBytes is the request body limit of SPEC §2.
const DefaultMaxBodyBytes = 1 << 20

// readObject reads a request body that must be one JSON object.
//
//   - a missing or non-JSON Content-Type is 415 (a charset parameter is
//     allowed, but only UTF-8, the only encoding JSON has);
//   - a body over the limit is 413;
//   - an empty body, malformed JSON, data after the object and duplicate
//     keys are 400: a duplicate key makes the document ambiguous (encoding/json
//     would silently keep the last one), so it counts as malformed rather than
//     as a wrong value;
//   - valid JSON that is not an object is 422.
//
// Numbers are kept as json.Number, as the registry expects.
func (s *Server) readObject(w http.ResponseWriter, r *http.Request) (map[string]any, error) {
	if err := checkJSONContentType(r.Header.Get("Content-Type")); err != nil {
		return nil, err
	}
	if r.ContentLength > s.maxBody {
		return nil, tooLarge(s.maxBody)
	}
	raw, err := io.ReadAll(http.MaxBytesReader(w, r.Body, s.maxBody))
	if err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			return nil, tooLarge(s.maxBody)
		}
		return nil, &httpError{status: http.StatusBadRequest, message: "the request body could not be read", cause: err}
	}
	return decodeObject(raw)
}

func tooLarge(limit int64) *httpError {
	return errorf(http.StatusRequestEntityTooLarge, "the request body exceeds the limit of %d bytes", limit)
}

func checkJSONContentType(ct string) error {
	if ct == "" {
		return errorf(http.StatusUnsupportedMediaType, "missing Content-Type; send application/json")
	}
	mt, params, err := mime.ParseMediaType(ct)
	if err != nil {
		return errorf(http.StatusUnsupportedMediaType, "malformed Content-Type %q; send application/json", ct)
	}
	if mt != "application/json" {
		return errorf(http.StatusUnsupportedMediaType, "unsupported Content-Type %q; send application/json", mt)
	}
	if cs, ok := params["charset"]; ok && !strings.EqualFold(cs, "utf-8") {
		return errorf(http.StatusUnsupportedMediaType, "unsupported charset %q; JSON is UTF-8", cs)
	}
	return nil
}

func decodeObject(raw []byte) (map[string]any, error) {
	if len(bytes.TrimSpace(raw)) == 0 {
		return nil, errorf(http.StatusBadRequest, "the request body is empty; send a JSON object")
	}
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		return nil, malformed(err)
	}
	// Anything but whitespace after the value is an error: a second value
	// or garbage would otherwise be silently ignored.
	if _, err := dec.Token(); err != io.EOF {
		return nil, errorf(http.StatusBadRequest, "malformed JSON: unexpected data after the JSON value at byte %d", dec.InputOffset())
	}
	obj, ok := v.(map[string]any)
	if !ok {
		return nil, invalidInput("the request body must be a JSON object",
			registry.FieldError{Field: "body", Message: fmt.Sprintf("must be a JSON object, not %s", registry.TypeName(v))})
	}
	if err := checkDuplicateKeys(raw); err != nil {
		return nil, err
	}
	return obj, nil
}

func malformed(err error) *httpError {
	var se *json.SyntaxError
	switch {
	case errors.As(err, &se):
		return errorf(http.StatusBadRequest, "malformed JSON at byte %d: %v", se.Offset, se)
	case errors.Is(err, io.ErrUnexpectedEOF):
		return errorf(http.StatusBadRequest, "malformed JSON: unexpected end of input")
	}
	return errorf(http.StatusBadRequest, "malformed JSON: %v", err)
}

// checkDuplicateKeys walks the tokens of an already validated JSON value
// and reports the first object key given twice. It keeps an explicit stack
// rather than recursing, so deep nesting cannot grow the goroutine stack.
func checkDuplicateKeys(raw []byte) error {
	type frame struct {
		object    bool
		path      string
		keys      map[string]bool
		expectKey bool
		key       string // the key whose value is being read (objects)
		index     int    // the index of the element being read (arrays)
	}
	childPath := func(f *frame) string {
		if f == nil {
			return ""
		}
		if f.object {
			if f.path == "" {
				return f.key
			}
			return f.path + "." + f.key
		}
		return f.path + "[" + strconv.Itoa(f.index) + "]"
	}
	valueDone := func(f *frame) {
		if f == nil {
			return
		}
		if f.object {
			f.expectKey = true
		} else {
			f.index++
		}
	}
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	var stack []*frame
	top := func() *frame {
		if len(stack) == 0 {
			return nil
		}
		return stack[len(stack)-1]
	}
	for {
		tok, err := dec.Token()
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return malformed(err)
		}
		f := top()
		if f != nil && f.object && f.expectKey {
			if d, ok := tok.(json.Delim); ok && d == '}' {
				stack = stack[:len(stack)-1]
				valueDone(top())
				continue
			}
			key, _ := tok.(string)
			if f.keys[key] {
				where := "the top-level object"
				if f.path != "" {
					where = "object " + f.path
				}
				return errorf(http.StatusBadRequest, "malformed JSON: key %q appears more than once in %s", key, where)
			}
			f.keys[key] = true
			f.key = key
			f.expectKey = false
			continue
		}
		switch tok {
		case json.Delim('{'):
			stack = append(stack, &frame{object: true, path: childPath(f), keys: map[string]bool{}, expectKey: true})
		case json.Delim('['):
			stack = append(stack, &frame{path: childPath(f)})
		case json.Delim(']'):
			stack = stack[:len(stack)-1]
			valueDone(top())
		default:
			valueDone(f)
		}
	}
}
