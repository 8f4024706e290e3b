package client

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"iter"
	"net/http"
	"net/url"
	"reflect"
	"strconv"

	"github.com/cryptomesh/cryptomesh/registry"
)

// Collection is the entity routes of one kind, answering values of type
// T: the registry's entity type (registry.Role, registry.Function, ...),
// or map[string]any or json.RawMessage for kind-independent code.
type Collection[T any] struct {
	c    *Client
	kind registry.Kind
}

// For returns the routes of kind k, decoded as T.
func For[T any](c *Client, k registry.Kind) *Collection[T] {
	return &Collection[T]{c: c, kind: k}
}

// Typed collections of every kind.
func (c *Client) Roles() *Collection[registry.Role] { return For[registry.Role](c, registry.KindRole) }

func (c *Client) SecurityPolicies() *Collection[registry.SecurityPolicy] {
	return For[registry.SecurityPolicy](c, registry.KindSecurityPolicy)
}

func (c *Client) Storage() *Collection[registry.Storage] {
	return For[registry.Storage](c, registry.KindStorage)
}

func (c *Client) Endpoints() *Collection[registry.Endpoint] {
	return For[registry.Endpoint](c, registry.KindEndpoint)
}

func (c *Client) EndpointStates() *Collection[registry.EndpointState] {
	return For[registry.EndpointState](c, registry.KindEndpointState)
}

func (c *Client) Services() *Collection[registry.Service] {
	return For[registry.Service](c, registry.KindService)
}

func (c *Client) Microservices() *Collection[registry.Microservice] {
	return For[registry.Microservice](c, registry.KindMicroservice)
}

func (c *Client) Functions() *Collection[registry.Function] {
	return For[registry.Function](c, registry.KindFunction)
}

func (c *Client) FunctionStates() *Collection[registry.FunctionState] {
	return For[registry.FunctionState](c, registry.KindFunctionState)
}

func (c *Client) FunctionResults() *Collection[registry.FunctionResult] {
	return For[registry.FunctionResult](c, registry.KindFunctionResult)
}

// Kind is the kind of the collection.
func (col *Collection[T]) Kind() registry.Kind { return col.kind }

func (col *Collection[T]) base() string { return "/api/v1/" + col.kind.Route() }

func (col *Collection[T]) item(id string) string { return col.base() + "/" + url.PathEscape(id) }

// Create stores a new entity and returns it as stored (201). body is
// encoded as JSON. When it is a struct, such as T itself, its empty
// strings and null values are left out, so that the server assigns the id
// and fills in defaults, as the registry's Go types cannot say "absent";
// maps and json.RawMessage are sent as they are.
func (col *Collection[T]) Create(ctx context.Context, body any) (T, error) {
	var out T
	_, err := col.c.call(ctx, http.MethodPost, col.base(), nil, body, &out)
	return out, err
}

// Get returns one entity.
func (col *Collection[T]) Get(ctx context.Context, id string) (T, error) {
	var out T
	_, err := col.c.call(ctx, http.MethodGet, col.item(id), nil, nil, &out)
	return out, err
}

// Update changes the given fields of an entity (a partial update: nested
// resources merge field by field, lists and maps are replaced) and
// returns it. patch is encoded as Create encodes its body: a struct only
// sends its non-empty fields; use a map to set a field to "".
func (col *Collection[T]) Update(ctx context.Context, id string, patch any) (T, error) {
	var out T
	_, err := col.c.call(ctx, http.MethodPut, col.item(id), nil, patch, &out)
	return out, err
}

// DeleteOptions modify a delete.
type DeleteOptions struct {
	// Cascade also deletes what the entity contains: a service's
	// microservices, their functions, and the states and results of
	// those. References (roles, policies, storage, endpoints in use) still
	// block the delete (409).
	Cascade bool
}

// Delete removes an entity (204).
func (col *Collection[T]) Delete(ctx context.Context, id string, opts DeleteOptions) error {
	q := url.Values{}
	if opts.Cascade {
		q.Set("cascade", "true")
	}
	_, err := col.c.call(ctx, http.MethodDelete, col.item(id), q, nil, nil)
	return err
}

// ListOptions select and page a list.
type ListOptions struct {
	// Filters maps reference fields to the id they must reference, e.g.
	// {"microservice_id": "m1"} for functions.
	Filters map[string]string
	// After is the id after which the page starts: the Next of the
	// previous page.
	After string
	// Limit is the page size; 0 means the server's default (1000).
	Limit int
}

// Page is one page of a list.
type Page[T any] struct {
	Items []T
	// Total is how many entities match the filters in all.
	Total int
	// Next is the After of the following page; "" when this page is the
	// last one.
	Next string
}

// List returns one page.
func (col *Collection[T]) List(ctx context.Context, opts ListOptions) (*Page[T], error) {
	q := url.Values{}
	for k, v := range opts.Filters {
		q.Set(k, v)
	}
	if opts.After != "" {
		q.Set("after", opts.After)
	}
	limit := opts.Limit
	if limit == 0 {
		limit = registry.DefaultListLimit
	}
	q.Set("limit", strconv.Itoa(limit))
	var raw []json.RawMessage
	h, err := col.c.call(ctx, http.MethodGet, col.base(), q, nil, &raw)
	if err != nil {
		return nil, err
	}
	page := &Page[T]{Items: make([]T, 0, len(raw))}
	if page.Total, err = strconv.Atoi(h.Get("X-Total-Count")); err != nil {
		return nil, fmt.Errorf("list %s: X-Total-Count %q: %w", col.kind.Route(), h.Get("X-Total-Count"), err)
	}
	for i, r := range raw {
		var v T
		if err := json.Unmarshal(r, &v); err != nil {
			return nil, fmt.Errorf("list %s: decode item %d: %w", col.kind.Route(), i, err)
		}
		page.Items = append(page.Items, v)
	}
	if len(raw) == limit && len(raw) > 0 {
		var ids map[string]json.RawMessage
		var id string
		if err := json.Unmarshal(raw[len(raw)-1], &ids); err != nil {
			return nil, fmt.Errorf("list %s: read the last id: %w", col.kind.Route(), err)
		}
		if err := json.Unmarshal(ids[col.kind.IDField()], &id); err != nil || id == "" {
			return nil, fmt.Errorf("list %s: the last item has no %s", col.kind.Route(), col.kind.IDField())
		}
		page.Next = id
	}
	return page, nil
}

// All yields every entity that matches opts, page by page (following
// Next until a page is the last), stopping at the first error.
func (col *Collection[T]) All(ctx context.Context, opts ListOptions) iter.Seq2[T, error] {
	return func(yield func(T, error) bool) {
		for {
			page, err := col.List(ctx, opts)
			if err != nil {
				var zero T
				yield(zero, err)
				return
			}
			for _, v := range page.Items {
				if !yield(v, nil) {
					return
				}
			}
			if page.Next == "" {
				return
			}
			opts.After = page.Next
		}
	}
}

// ListAll returns every entity that matches opts.
func (col *Collection[T]) ListAll(ctx context.Context, opts ListOptions) ([]T, error) {
	var out []T
	for v, err := range col.All(ctx, opts) {
		if err != nil {
			return nil, err
		}
		out = append(out, v)
	}
	return out, nil
}

// encodeBody encodes a request body; see Collection.Create.
func encodeBody(v any) ([]byte, error) {
	switch b := v.(type) {
	case json.RawMessage:
		return b, nil
	case []byte:
		return b, nil
	}
	raw, err := json.Marshal(v)
	if err != nil {
		return nil, fmt.Errorf("encode the request body: %w", err)
	}
	t := reflect.TypeOf(v)
	for t != nil && t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	if t == nil || t.Kind() != reflect.Struct {
		return raw, nil
	}
	var fields map[string]json.RawMessage
	if err := json.Unmarshal(raw, &fields); err != nil {
		return nil, fmt.Errorf("encode the request body: %w", err)
	}
	for k, f := range fields {
		if bytes.Equal(f, []byte(`""`)) || bytes.Equal(f, []byte(`null`)) {
			delete(fields, k)
		}
	}
	return json.Marshal(fields)
}
