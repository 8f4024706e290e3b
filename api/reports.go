package api

import (
	"fmt"
	"net/http"

	"github.com/cryptomesh/cryptomesh/registry"
)

// POST /api/v1/reports takes a batch of observations from a proxy (SPEC
// §2, §7) and commits every acceptable one in a single durable write.
//
// Request:
//
//	{"items": [
//	  {"kind": "function_state",  "data": {<FunctionState body>}},
//	  {"kind": "function_result", "data": {<FunctionResult body>}},
//	  {"kind": "endpoint_state",  "data": {<EndpointState body>}}
//	]}
//
// Response, 200 whenever the batch itself is well-formed, with one answer
// per item in request order:
//
//	{"items": [
//	  {"status": 201, "data": {<stored entity>}},
//	  {"status": 422, "detail": {"message": "...", "code": 422, "errors": [{"field": "state", "message": "..."}]}},
//	  {"status": 403, "detail": {"message": "...", "code": 403}}
//	]}
//
// Item statuses are those of the matching POST /<kind>: 201, 409, 422,
// and 403 for an item a node may not report (a function or endpoint other
// than its own). The batch itself is refused (400, 413, 415, 422) only
// when it cannot be read as a list of items; then nothing is written.
//
// A node's item is checked against the function's endpoint as of the
// request's start; a function moved to another endpoint concurrently may
// still receive that one report.

// maxReportItems bounds one batch so that a single request cannot hold
// the registry's writer lock for long.
const maxReportItems = 1000

// reportKind maps the item kinds of a report to registry kinds.
func reportKind(name string) (registry.Kind, bool) {
	switch name {
	case "function_state":
		return registry.KindFunctionState, true
	case "function_result":
		return registry.KindFunctionResult, true
	case "endpoint_state":
		return registry.KindEndpointState, true
	}
	return "", false
}

type reportAnswer struct {
	Status int          `json:"status"`
	Data   any          `json:"data,omitempty"`
	Detail *errorDetail `json:"detail,omitempty"`
}

type reportResponse struct {
	Items []reportAnswer `json:"items"`
}

func (s *Server) postReports(w http.ResponseWriter, r *http.Request) error {
	if _, err := queryOf(r); err != nil {
		return err
	}
	body, err := s.readObject(w, r)
	if err != nil {
		return err
	}
	items, err := reportItems(body)
	if err != nil {
		return err
	}
	p := principalOf(r.Context())
	view := s.reg.View()
	answers := make([]reportAnswer, len(items))
	var ops []registry.Op
	var opItem []int // index of the item each op came from
	for i, raw := range items {
		k, data, err := reportItem(raw)
		if err == nil {
			err = mayReport(p, view, k, data)
		}
		if err != nil {
			answers[i] = errorAnswer(err)
			continue
		}
		ops = append(ops, registry.Op{Type: registry.OpCreate, Kind: k, Body: data})
		opItem = append(opItem, i)
	}
	if len(ops) > 0 {
		results, err := s.reg.DoEach(r.Context(), ops...)
		if err != nil {
			return err
		}
		for j, res := range results {
			if res.Err != nil {
				answers[opItem[j]] = errorAnswer(res.Err)
				continue
			}
			answers[opItem[j]] = reportAnswer{Status: http.StatusCreated, Data: res.Value}
		}
	}
	return writeJSON(w, http.StatusOK, reportResponse{Items: answers})
}

func errorAnswer(err error) reportAnswer {
	he := toHTTP(err)
	d := he.detail()
	return reportAnswer{Status: he.status, Detail: &d}
}

// reportItems checks the envelope of a batch.
func reportItems(body map[string]any) ([]any, error) {
	var errs []registry.FieldError
	for _, key := range sortedKeys(body) {
		if key != "items" {
			errs = append(errs, registry.FieldError{Field: key, Message: fmt.Sprintf("unknown field %q in a report batch", key)})
		}
	}
	raw, given := body["items"]
	items, isList := raw.([]any)
	switch {
	case !given || raw == nil:
		errs = append(errs, registry.FieldError{Field: "items", Message: "is required"})
	case !isList:
		errs = append(errs, registry.FieldError{Field: "items", Message: fmt.Sprintf("must be an array, not %s", registry.TypeName(raw))})
	case len(items) > maxReportItems:
		errs = append(errs, registry.FieldError{Field: "items", Message: fmt.Sprintf("holds %d items; at most %d are allowed per batch", len(items), maxReportItems)})
	}
	if len(errs) > 0 {
		return nil, invalidInput("invalid report batch", errs...)
	}
	return items, nil
}

// reportItem checks one item's envelope: {"kind": ..., "data": {...}}.
func reportItem(raw any) (registry.Kind, map[string]any, error) {
	item, ok := raw.(map[string]any)
	if !ok {
		return "", nil, invalidInput("invalid report item",
			registry.FieldError{Field: "", Message: fmt.Sprintf("an item must be an object {\"kind\", \"data\"}, not %s", registry.TypeName(raw))})
	}
	var errs []registry.FieldError
	for _, key := range sortedKeys(item) {
		if key != "kind" && key != "data" {
			errs = append(errs, registry.FieldError{Field: key, Message: fmt.Sprintf("unknown field %q in a report item", key)})
		}
	}
	name, _ := item["kind"].(string)
	k, known := reportKind(name)
	if !known {
		errs = append(errs, registry.FieldError{Field: "kind", Message: "must be one of function_state, function_result, endpoint_state"})
	}
	data, isObject := item["data"].(map[string]any)
	if !isObject {
		errs = append(errs, registry.FieldError{Field: "data", Message: fmt.Sprintf("must be an object, not %s", registry.TypeName(item["data"]))})
	}
	if len(errs) > 0 {
		return "", nil, invalidInput("invalid report item", errs...)
	}
	return k, data, nil
}

// mayReport is the per-item authorization: a node reports only for its
// own endpoint and the functions deployed on it. A function that does not
// exist is refused the same way, so a node cannot probe for ids.
func mayReport(p Principal, view *registry.View, k registry.Kind, data map[string]any) error {
	if p.Kind == PrincipalAdmin {
		return nil
	}
	switch k {
	case registry.KindEndpointState:
		ep, _ := data["endpoint_id"].(string)
		if !p.mayReportOn(ep) {
			return errorf(http.StatusForbidden, "%s may not report the state of endpoint '%s'", p.describe(), ep)
		}
	default:
		fn, _ := data["function_id"].(string)
		ep := ""
		if o := view.Object(registry.KindFunction, fn); o != nil {
			if f, ok := o.Value.(*registry.Function); ok {
				ep = f.EndpointID
			}
		}
		if !p.mayReportOn(ep) {
			return errorf(http.StatusForbidden, "%s may not report for function '%s': it is not on the node's endpoint", p.describe(), fn)
		}
	}
	return nil
}
