package client

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"net/http"
	"net/url"
	"slices"
	"strings"

	"github.com/cryptomesh/cryptomesh/registry"
	"github.com/cryptomesh/cryptomesh/registry/mesh"
)

// LatestEndpointState returns the last committed state of an endpoint.
// It is a 404 *Error when the endpoint does not exist or has no state yet.
func (c *Client) LatestEndpointState(ctx context.Context, endpointID string) (registry.EndpointState, error) {
	var out registry.EndpointState
	_, err := c.call(ctx, http.MethodGet, "/api/v1/endpoints/"+url.PathEscape(endpointID)+"/state", nil, nil, &out)
	return out, err
}

// LatestFunctionState returns the last committed state of a function.
func (c *Client) LatestFunctionState(ctx context.Context, functionID string) (registry.FunctionState, error) {
	var out registry.FunctionState
	_, err := c.call(ctx, http.MethodGet, "/api/v1/functions/"+url.PathEscape(functionID)+"/state", nil, nil, &out)
	return out, err
}

// The kinds of report items.
const (
	ReportFunctionState  = "function_state"
	ReportFunctionResult = "function_result"
	ReportEndpointState  = "endpoint_state"
)

// ReportItem is one observation of a report batch: Kind is one of the
// Report* constants, Data the entity body (a map or a registry type).
type ReportItem struct {
	Kind string `json:"kind"`
	Data any    `json:"data"`
}

// ReportAnswer is the answer to one item: 201 with the stored entity in
// Data, or the item's refusal in Err.
type ReportAnswer struct {
	Status int
	Data   json.RawMessage
	Err    *Error
}

// Report sends a batch of states and results, committed in one durable
// write; each item is answered in order.
func (c *Client) Report(ctx context.Context, items []ReportItem) ([]ReportAnswer, error) {
	batch := make([]ReportItem, len(items))
	for i, it := range items {
		raw, err := encodeBody(it.Data)
		if err != nil {
			return nil, fmt.Errorf("report item %d: %w", i, err)
		}
		batch[i] = ReportItem{Kind: it.Kind, Data: json.RawMessage(raw)}
	}
	var out struct {
		Items []struct {
			Status int             `json:"status"`
			Data   json.RawMessage `json:"data"`
			Detail *struct {
				Message string       `json:"message"`
				Errors  []FieldError `json:"errors"`
			} `json:"detail"`
		} `json:"items"`
	}
	if _, err := c.call(ctx, http.MethodPost, "/api/v1/reports", nil, map[string]any{"items": batch}, &out); err != nil {
		return nil, err
	}
	answers := make([]ReportAnswer, len(out.Items))
	for i, it := range out.Items {
		answers[i] = ReportAnswer{Status: it.Status, Data: it.Data}
		if it.Detail != nil {
			answers[i].Err = &Error{Status: it.Status, Message: it.Detail.Message, Fields: it.Detail.Errors}
		}
	}
	return answers, nil
}

// DocumentContentType guesses the Content-Type of a mesh document from
// its content: JSON when it starts with '{', else YAML.
func DocumentContentType(doc []byte) string {
	if t := bytes.TrimSpace(doc); len(t) > 0 && t[0] == '{' {
		return "application/json"
	}
	return "application/yaml"
}

// Apply applies a mesh document atomically (or, with dryRun, only plans
// it) and returns what happened to each entity. contentType is
// application/json or application/yaml; "" guesses it with
// DocumentContentType. A refused document is an *Error whose Fields name
// each problem's document path and YAML line.
func (c *Client) Apply(ctx context.Context, doc []byte, contentType string, dryRun bool) (*mesh.Report, error) {
	if contentType == "" {
		contentType = DocumentContentType(doc)
	}
	q := url.Values{}
	if dryRun {
		q.Set("dry_run", "true")
	}
	if doc == nil {
		doc = []byte{}
	}
	res, err := c.send(ctx, request{method: http.MethodPost, path: "/api/v1/apply", query: q, body: doc, ctype: contentType})
	if err != nil {
		return nil, err
	}
	defer res.Body.Close()
	var rep mesh.Report
	if err := json.NewDecoder(res.Body).Decode(&rep); err != nil {
		return nil, fmt.Errorf("decode the apply report: %w", err)
	}
	return &rep, nil
}

// Export returns the registry as a YAML mesh document.
func (c *Client) Export(ctx context.Context) ([]byte, error) {
	return c.raw(ctx, "/api/v1/export", "application/yaml")
}

// OpenAPI returns the server's OpenAPI document (JSON).
func (c *Client) OpenAPI(ctx context.Context) ([]byte, error) {
	return c.raw(ctx, "/api/v1/openapi.json", "application/json")
}

func (c *Client) raw(ctx context.Context, path, accept string) ([]byte, error) {
	res, err := c.send(ctx, request{method: http.MethodGet, path: path, accept: accept})
	if err != nil {
		return nil, err
	}
	defer res.Body.Close()
	out, err := io.ReadAll(res.Body)
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", path, err)
	}
	return out, nil
}

// Health is the answer of /healthz and /readyz.
type Health struct {
	Status string `json:"status"`
	// Components maps each component /readyz checked to "ok" or what is
	// wrong with it.
	Components map[string]string `json:"components,omitempty"`
}

// Health asks /healthz whether the server is alive.
func (c *Client) Health(ctx context.Context) (*Health, error) {
	var h Health
	if _, err := c.call(ctx, http.MethodGet, "/healthz", nil, nil, &h); err != nil {
		return nil, err
	}
	return &h, nil
}

// Ready asks /readyz whether the server is ready. A server that is not
// answers its components and a 503 *Error naming those that are not ok.
func (c *Client) Ready(ctx context.Context) (*Health, error) {
	// The 503 of /readyz carries a Health body, not an error body.
	res, err := c.send(ctx, request{method: http.MethodGet, path: "/readyz", pass: http.StatusServiceUnavailable})
	if err != nil {
		return nil, err
	}
	defer res.Body.Close()
	var h Health
	if err := json.NewDecoder(io.LimitReader(res.Body, maxErrorBody)).Decode(&h); err != nil {
		return nil, fmt.Errorf("decode /readyz: %w", err)
	}
	if res.StatusCode == http.StatusOK {
		return &h, nil
	}
	var bad []string
	for _, name := range slices.Sorted(maps.Keys(h.Components)) {
		if state := h.Components[name]; state != "ok" {
			bad = append(bad, name+": "+state)
		}
	}
	return &h, &Error{Status: res.StatusCode, Message: "not ready: " + strings.Join(bad, "; ")}
}
