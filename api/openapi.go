package api

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"reflect"
	"strconv"
	"strings"

	"github.com/cryptomesh/cryptomesh/registry"
)

// GET /api/v1/openapi.json describes every route of the API as an OpenAPI
// 3.1 document. Paths and operations are written out here, next to each
// other, rather than derived from the route table, so that a route added
// without its description fails TestOpenAPICoversEveryRoute instead of
// appearing undocumented. The entity schemas are generated from the
// registry's Go types and the field table of openapi_fields.go.

// openAPIVersion is the OpenAPI version of the document.
const openAPIVersion = "3.1.0"

// Regular expressions of the value rules of SPEC §1, in the ECMA-262
// dialect JSON Schema uses.
const (
	idPattern         = `^[A-Za-z0-9][A-Za-z0-9._-]*$`
	optionalIDPattern = `^$|^[A-Za-z0-9][A-Za-z0-9._-]*$`
	sizePattern       = `^[0-9]+(\.[0-9]+)?\s*[KkMmGgTt][Bb]$`
	durationPattern   = `^\+?(0|(([0-9]+(\.[0-9]*)?|\.[0-9]+)(ns|us|µs|μs|ms|s|m|h))+)$`
	hostPortPattern   = `^(.+:[0-9]{1,5})?$`
	permissionPattern = `^(execute|read|write|\*)(:.+)?$`
	textPattern       = `\S`
)

// openAPIHandler serves the document, built once when the routes are.
func (s *Server) openAPIHandler() handlerFunc {
	raw, buildErr := s.openAPIDocument()
	return func(w http.ResponseWriter, r *http.Request) error {
		if _, err := queryOf(r); err != nil {
			return err
		}
		if buildErr != nil {
			return buildErr
		}
		h := w.Header()
		h.Set("Content-Type", "application/json")
		h.Set("Content-Length", strconv.Itoa(len(raw)))
		h.Set("X-Content-Type-Options", "nosniff")
		w.WriteHeader(http.StatusOK)
		_, _ = w.Write(raw)
		return nil
	}
}

// openAPIDocument returns the encoded document of this server (its body
// limits appear in it).
func (s *Server) openAPIDocument() ([]byte, error) {
	doc, err := buildOpenAPI(s.maxBody, s.maxApply, s.identity != nil)
	if err != nil {
		return nil, fmt.Errorf("build the OpenAPI document: %w", err)
	}
	raw, err := json.Marshal(doc)
	if err != nil {
		return nil, fmt.Errorf("encode the OpenAPI document: %w", err)
	}
	return append(raw, '\n'), nil
}

// obj is a JSON object of the document.
type obj = map[string]any

func schemaRef(name string) obj { return obj{"$ref": "#/components/schemas/" + name} }

func responseRef(name string) obj { return obj{"$ref": "#/components/responses/" + name} }

func paramRef(name string) obj { return obj{"$ref": "#/components/parameters/" + name} }

// orNull lets a schema also be null.
func orNull(s obj) obj { return obj{"anyOf": []any{s, obj{"type": "null"}}} }

// openAPIBuilder collects the document.
type openAPIBuilder struct {
	maxBody, maxApply int64
	// identity: the server has the identity routes (WithIdentity).
	identity bool
	schemas  obj
	paths    obj
}

func buildOpenAPI(maxBody, maxApply int64, identity bool) (obj, error) {
	b := &openAPIBuilder{maxBody: maxBody, maxApply: maxApply, identity: identity, schemas: obj{}, paths: obj{}}
	if err := b.commonSchemas(); err != nil {
		return nil, err
	}
	var errs []error
	for _, k := range registry.Kinds() {
		if err := b.entitySchemas(k); err != nil {
			errs = append(errs, err)
			continue
		}
		b.kindPaths(k)
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	b.meshSchemas()
	b.reportSchemas()
	b.otherPaths()
	b.proxiesSchemas()
	b.proxiesPaths()
	if identity {
		b.identitySchemas()
		b.identityPaths()
	}
	return obj{
		"openapi": openAPIVersion,
		"info": obj{
			"title":   "CryptoMesh control plane",
			"version": "v1",
			"description": "The REST API of the CryptoMesh control plane: the registry of an ML system " +
				"(services, microservices, functions, endpoints, security policies, roles, storage, " +
				"and the states and results flowing back), mesh documents, reports from proxies and " +
				"operational endpoints. Every path also answers with a trailing slash, without a redirect. " +
				"Credentials are bearer tokens: an admin token may call everything but the node-only routes; node " +
				"credentials (join tokens, or SVIDs as TLS client certificates) only what x-cryptomesh-access says.",
		},
		"servers":    []any{obj{"url": "/"}},
		"security":   []any{obj{"bearer": []any{}}},
		"tags":       b.tags(),
		"paths":      b.paths,
		"components": b.components(),
	}, nil
}

func (b *openAPIBuilder) tags() []any {
	var out []any
	for _, k := range registry.Kinds() {
		out = append(out, obj{"name": k.Route(), "description": "Entities of kind " + k.Singular() + "."})
	}
	out = append(out,
		obj{"name": "mesh", "description": "Mesh documents: the whole ML system as one YAML or JSON document."},
		obj{"name": "reports", "description": "Observations sent back by proxies."},
		obj{"name": "operations", "description": "Health, readiness, metrics and this document."},
		obj{"name": "xds", "description": "The xDS server's connected nodes."},
	)
	if b.identity {
		out = append(out, obj{"name": "identity", "description": "SPIFFE identity: the trust bundle, node SVIDs and join tokens."})
	}
	return out
}

func (b *openAPIBuilder) components() obj {
	errResp := func(desc string) obj {
		return obj{"description": desc, "content": obj{"application/json": obj{"schema": schemaRef("Error")}}}
	}
	unauthorized := errResp("No credential, or one that is not accepted.")
	unauthorized["headers"] = obj{"WWW-Authenticate": obj{"schema": obj{"type": "string"}, "description": `Bearer realm="cryptomesh"`}}
	return obj{
		"securitySchemes": obj{"bearer": obj{
			"type": "http", "scheme": "bearer",
			"description": "An admin token (`--api-token-file`, or `<data-dir>/admin-token` created at first start), or a node's join token where x-cryptomesh-access is node or node-only. Over TLS a node may present its X.509-SVID as client certificate instead of a join token.",
		}},
		"schemas": b.schemas,
		"responses": obj{
			"BadRequest":           errResp("The body or query cannot be parsed (malformed JSON or YAML, duplicate keys, an empty body)."),
			"Unauthorized":         unauthorized,
			"Forbidden":            errResp("The credential is valid but may not call this."),
			"NotFound":             errResp("No such entity: `Resource '<id>' not found`."),
			"Conflict":             errResp("A duplicate id, an entity still referenced, or a conflict with stored state."),
			"PayloadTooLarge":      errResp("The body exceeds the limit."),
			"UnsupportedMediaType": errResp("The Content-Type is not one this route reads."),
			"Unprocessable":        errResp("A value breaks a rule; `errors` names every offending field or query parameter."),
			"Unavailable":          errResp("The store failed or authentication could not be decided; nothing was changed."),
			"NotImplemented":       errResp("This control plane does not offer this (SVIDs in SPIRE mode come from the SPIRE agent)."),
		},
		"parameters": obj{
			"Id": obj{"name": "id", "in": "path", "required": true, "description": "The entity's id.",
				"schema": obj{"type": "string", "pattern": idPattern, "maxLength": 128}},
			"Limit": obj{"name": "limit", "in": "query", "description": "Page size.",
				"schema": obj{"type": "integer", "minimum": 1, "maximum": registry.MaxListLimit, "default": registry.DefaultListLimit}},
			"After": obj{"name": "after", "in": "query", "description": "The id after which the page starts: the last id of the previous page (id order; commit order for states and results).",
				"schema": obj{"type": "string", "minLength": 1}},
			"Cascade": obj{"name": "cascade", "in": "query", "description": "Also delete what the entity contains (service → microservices → functions → their states and results); never what it merely references.",
				"schema": obj{"type": "boolean", "default": false}},
			"DryRun": obj{"name": "dry_run", "in": "query", "description": "Plan only: answer what would be created, updated or unchanged, and change nothing.",
				"schema": obj{"type": "boolean", "default": false}},
		},
	}
}

// commonSchemas are the error shape of SPEC §2, resources and health.
func (b *openAPIBuilder) commonSchemas() error {
	b.schemas["Error"] = obj{
		"type": "object", "required": []any{"detail"},
		"properties": obj{"detail": schemaRef("ErrorDetail")},
	}
	b.schemas["ErrorDetail"] = obj{
		"type": "object", "required": []any{"message", "code"}, "additionalProperties": false,
		"properties": obj{
			"message": obj{"type": "string"},
			"code":    obj{"type": "integer", "description": "The HTTP status."},
			"errors":  obj{"type": "array", "items": schemaRef("FieldError"), "description": "Every offending field; always present on 422."},
		},
	}
	b.schemas["FieldError"] = obj{
		"type": "object", "required": []any{"field", "message"}, "additionalProperties": false,
		"properties": obj{
			"field":   obj{"type": "string", "description": "The field's path from the body's root (`resources.cpu`), the query parameter, or in a mesh document the document path (`functions.load_data.resources.cpu`)."},
			"line":    obj{"type": "integer", "minimum": 1, "description": "The line in a YAML mesh document."},
			"message": obj{"type": "string"},
		},
	}
	// The Go type of resources must still be {cpu int, ram string}.
	rt := reflect.TypeFor[registry.Resources]()
	var names []string
	for i := range rt.NumField() {
		names = append(names, jsonName(rt.Field(i)))
	}
	if strings.Join(names, ",") != "cpu,ram" {
		return fmt.Errorf("registry.Resources has fields %v; the schema documents cpu and ram", names)
	}
	cpu := obj{"type": "integer", "minimum": 1, "maximum": 1<<31 - 1, "description": "CPUs."}
	ram := obj{"type": "string", "pattern": sizePattern, "description": "Memory: a positive number and a unit KB, MB, GB or TB, e.g. 512MB."}
	b.schemas["Resources"] = obj{
		"type": "object", "required": []any{"cpu", "ram"}, "additionalProperties": false,
		"properties": obj{"cpu": cpu, "ram": ram},
	}
	b.schemas["ResourcesPatch"] = obj{
		"type": "object", "additionalProperties": false,
		"description": "A partial update of resources: given fields replace the stored ones, the others stay.",
		"properties":  obj{"cpu": orNull(cpu), "ram": orNull(ram)},
	}
	b.schemas["Health"] = obj{
		"type": "object", "required": []any{"status"}, "additionalProperties": false,
		"properties": obj{
			"status":     obj{"type": "string", "enum": []any{"ok", "unavailable"}},
			"components": obj{"type": "object", "additionalProperties": obj{"type": "string"}, "description": "Each component checked: ok, or what is wrong."},
		},
	}
	return nil
}

// schemaName is the component name of a kind's entity schema.
func schemaName(k registry.Kind) string { return entityType(k).Name() }

func jsonName(f reflect.StructField) string {
	name, _, _ := strings.Cut(f.Tag.Get("json"), ",")
	return name
}

// entitySchemas adds <Entity> (as answered), <Entity>Input (create, and
// the values of mesh documents) and <Entity>Update (partial update).
func (b *openAPIBuilder) entitySchemas(k registry.Kind) error {
	t := entityType(k)
	docs := entityFields(k)
	if t == nil || docs == nil {
		return fmt.Errorf("kind %s has no Go type or field table for the OpenAPI document", k)
	}
	name := t.Name()
	out, in, upd := obj{}, obj{}, obj{}
	var outReq, inReq []any
	seen := map[string]bool{}
	var errs []error
	for i := range t.NumField() {
		f := t.Field(i)
		jn := jsonName(f)
		d, ok := docs[jn]
		if !ok || jn == "" || jn == "-" {
			errs = append(errs, fmt.Errorf("registry.%s.%s (json %q) is not in the field table of the OpenAPI document", name, f.Name, jn))
			continue
		}
		seen[jn] = true
		isID := jn == k.IDField()
		o, err := outputSchema(f.Type, d)
		if err != nil {
			errs = append(errs, fmt.Errorf("registry.%s.%s: %w", name, f.Name, err))
			continue
		}
		out[jn] = o
		outReq = append(outReq, jn)
		if d.server {
			continue
		}
		in[jn] = inputSchema(f.Type, d, isID, false)
		upd[jn] = inputSchema(f.Type, d, isID, true)
		if d.required {
			inReq = append(inReq, jn)
		}
	}
	for _, jn := range sortedKeys(docs) {
		if !seen[jn] {
			errs = append(errs, fmt.Errorf("the field table documents %s.%s, which registry.%s does not have", k, jn, name))
		}
	}
	if len(errs) > 0 {
		return errors.Join(errs...)
	}
	legacy := obj{"type": []any{"string", "null"}, "deprecated": true, "description": "Sent by clients of the original CryptoMesh; accepted and ignored."}
	in["policy_id"], upd["policy_id"] = legacy, legacy
	b.schemas[name] = obj{
		"type": "object", "required": outReq, "properties": out,
		"description": fmt.Sprintf("A %s as the server answers it: every field present, derived fields filled in.", k.Singular()),
	}
	input := obj{
		"type": "object", "properties": in, "additionalProperties": false,
		"description": fmt.Sprintf("A %s to create, or the value of an entry of a mesh document (whose key is the id). null means absent; absent fields take their defaults. Unknown fields are refused (422).", k.Singular()),
	}
	if len(inReq) > 0 {
		input["required"] = inReq
	}
	for key, rule := range entityRules(k) {
		input[key] = rule
	}
	b.schemas[name+"Input"] = input
	b.schemas[name+"Update"] = obj{
		"type": "object", "properties": upd, "additionalProperties": false,
		"description": fmt.Sprintf("A partial update of a %s: only given fields change; resources merge field by field; lists and maps are replaced; null leaves a field as it is.", k.Singular()),
	}
	return nil
}

// baseSchema is the schema of a Go field type with the value rules of d.
func baseSchema(t reflect.Type, d fieldDoc) (obj, error) {
	s := obj{}
	switch t.Kind() {
	case reflect.String:
		s["type"] = "string"
		addStringRules(s, d)
	case reflect.Bool:
		s["type"] = "boolean"
	case reflect.Int, reflect.Int64:
		s["type"] = "integer"
	case reflect.Slice:
		if t.Elem().Kind() != reflect.String {
			return nil, fmt.Errorf("unsupported list type %s", t)
		}
		item := obj{"type": "string"}
		addStringRules(item, d)
		if d.ref != "" {
			item["pattern"] = idPattern // "" clears a single reference, never a list item
		}
		s["type"], s["items"] = "array", item
		if d.ref != "" {
			s["uniqueItems"] = true
		}
	case reflect.Map:
		if t.Key().Kind() != reflect.String || t.Elem().Kind() != reflect.String {
			return nil, fmt.Errorf("unsupported map type %s", t)
		}
		s["type"], s["additionalProperties"] = "object", obj{"type": "string"}
	case reflect.Pointer:
		if t.Elem() != reflect.TypeFor[registry.Resources]() {
			return nil, fmt.Errorf("unsupported pointer type %s", t)
		}
		return schemaRef("Resources"), nil
	default:
		return nil, fmt.Errorf("unsupported type %s", t)
	}
	return s, nil
}

func addStringRules(s obj, d fieldDoc) {
	switch {
	case len(d.enum) > 0:
		enum := make([]any, len(d.enum))
		for i, e := range d.enum {
			enum[i] = e
		}
		s["enum"] = enum
	case d.ref != "":
		s["pattern"], s["maxLength"] = optionalIDPattern, 128
	}
	switch d.format {
	case formatID:
		s["pattern"], s["minLength"], s["maxLength"] = idPattern, 1, 128
	case formatText:
		s["pattern"], s["minLength"] = textPattern, 1
	case formatSize:
		s["pattern"] = sizePattern
	case formatDuration:
		s["pattern"] = durationPattern
	case formatHostPort:
		s["pattern"] = hostPortPattern
	case formatPermission:
		s["pattern"] = permissionPattern
	case formatTimestamp:
		s["format"] = "date-time"
	}
}

func describe(s obj, d fieldDoc) obj {
	desc := d.description
	if d.ref != "" {
		desc += fmt.Sprintf(" Holds %s ids (%s).", d.ref.Singular(), "/api/v1/"+d.ref.Route())
		s["x-cryptomesh-references"] = d.ref.Route()
	}
	if desc != "" {
		s["description"] = strings.TrimSpace(desc)
	}
	return s
}

// outputSchema is a field as answered: always present; optional objects
// are null when unset.
func outputSchema(t reflect.Type, d fieldDoc) (obj, error) {
	s, err := baseSchema(t, d)
	if err != nil {
		return nil, err
	}
	if t.Kind() == reflect.Pointer {
		s = orNull(s)
	}
	if d.server {
		s["readOnly"] = true
	}
	return describe(s, d), nil
}

// inputSchema is a field of a create (or, with patch, an update) body.
func inputSchema(t reflect.Type, d fieldDoc, isID, patch bool) obj {
	s, _ := baseSchema(t, d) // outputSchema checked the type first
	if t.Kind() == reflect.Pointer && patch {
		s = schemaRef("ResourcesPatch")
	}
	if isID {
		// Absent, null or "" all mean: the server assigns a UUID.
		s["pattern"] = optionalIDPattern
		delete(s, "minLength")
	}
	if d.embeds {
		embedded := schemaRef(entityType(d.ref).Name() + "Input")
		s = obj{"oneOf": []any{s, embedded}}
	}
	if d.def != nil && !patch {
		s["default"] = d.def
	}
	if d.example != nil {
		s["examples"] = []any{d.example}
	}
	if patch || !d.required {
		s = orNull(s)
	}
	extra := ""
	if d.embeds {
		extra = fmt.Sprintf(" Compatibility input: an embedded %s object becomes an entity with its own id, or `<owner id>.%s` when it has none; if that id exists with different content the request is 409.",
			d.ref.Singular(), map[registry.Kind]string{registry.KindSecurityPolicy: "policy", registry.KindStorage: "storage"}[d.ref])
	}
	if isID && patch {
		extra = " Must be the id in the path, or absent."
	}
	dd := d
	dd.description += extra
	return describe(s, dd)
}

// meshSchemas describe mesh documents (SPEC §3) and apply reports.
func (b *openAPIBuilder) meshSchemas() {
	props := obj{"cryptomesh": obj{"type": "string", "enum": []any{"v1"}, "description": "The document version; optional."}}
	var sections []any
	for _, k := range registry.Kinds() {
		if k.History() {
			continue
		}
		sections = append(sections, string(k))
		props[string(k)] = orNull(obj{
			"type":                 "object",
			"description":          fmt.Sprintf("%s keyed by id; an id field in a value, if given, must equal its key.", k.Route()),
			"propertyNames":        obj{"pattern": idPattern, "maxLength": 128},
			"additionalProperties": orNull(schemaRef(schemaName(k) + "Input")),
		})
	}
	b.schemas["MeshDocument"] = obj{
		"type": "object", "additionalProperties": false, "properties": props,
		"description": "The whole ML system, keyed by kind and id. Documents of the original CryptoMesh (only endpoints, services, microservices and functions, with embedded policies and storage and an ignored policy_id) apply as they are. Roles that are named but not defined are created with no permissions and reported as implied.",
	}
	b.schemas["ApplyItem"] = obj{
		"type": "object", "required": []any{"kind", "id", "outcome"}, "additionalProperties": false,
		"properties": obj{
			"kind":     obj{"type": "string", "enum": sections, "description": "The document section."},
			"id":       obj{"type": "string"},
			"outcome":  obj{"type": "string", "enum": []any{"created", "updated", "unchanged"}},
			"implied":  obj{"type": "boolean", "description": "A role the document named but did not define, created with no permissions."},
			"embedded": obj{"type": "boolean", "description": "A policy or storage created from an embedded object."},
		},
	}
	b.schemas["ApplyReport"] = obj{
		"type": "object", "required": []any{"dry_run", "items", "warnings", "created", "updated", "unchanged"}, "additionalProperties": false,
		"properties": obj{
			"dry_run":   obj{"type": "boolean"},
			"items":     obj{"type": "array", "items": schemaRef("ApplyItem"), "description": "Every entity of the document, implied roles and embedded entities in apply order."},
			"warnings":  obj{"type": "array", "items": obj{"type": "string"}},
			"created":   obj{"type": "integer", "minimum": 0},
			"updated":   obj{"type": "integer", "minimum": 0},
			"unchanged": obj{"type": "integer", "minimum": 0},
		},
	}
}

// reportSchemas describe POST /reports (see reports.go).
func (b *openAPIBuilder) reportSchemas() {
	var variants []any
	for _, name := range []string{"function_state", "function_result", "endpoint_state"} {
		k, _ := reportKind(name)
		variants = append(variants, obj{
			"type": "object", "required": []any{"kind", "data"}, "additionalProperties": false,
			"properties": obj{"kind": obj{"const": name}, "data": schemaRef(schemaName(k) + "Input")},
		})
	}
	b.schemas["ReportItem"] = obj{"oneOf": variants}
	b.schemas["ReportBatch"] = obj{
		"type": "object", "required": []any{"items"}, "additionalProperties": false,
		"properties": obj{"items": obj{"type": "array", "maxItems": maxReportItems, "items": schemaRef("ReportItem")}},
	}
	b.schemas["ReportAnswer"] = obj{
		"type": "object", "required": []any{"status"}, "additionalProperties": false,
		"properties": obj{
			"status": obj{"type": "integer", "description": "201, or the status the matching POST /<kind> would answer (409, 422), or 403 for an item the node may not report."},
			"data":   obj{"type": "object", "description": "The stored entity (201)."},
			"detail": schemaRef("ErrorDetail"),
		},
	}
	b.schemas["ReportAnswers"] = obj{
		"type": "object", "required": []any{"items"}, "additionalProperties": false,
		"properties": obj{"items": obj{"type": "array", "items": schemaRef("ReportAnswer"), "description": "One answer per item, in request order."}},
	}
}

// operation starts an operation: who may call it and the answers every
// call may get.
func operation(id, summary string, a access, tags ...string) obj {
	op := obj{"operationId": id, "summary": summary, "tags": tags, "responses": obj{}}
	switch a {
	case accessPublic:
		op["security"] = []any{}
		op["x-cryptomesh-access"] = "public"
	case accessAdmin:
		op["x-cryptomesh-access"] = "admin"
		addResponses(op, "401", "403", "503")
	case accessNode:
		op["x-cryptomesh-access"] = "node"
		addResponses(op, "401", "403", "503")
	case accessNodeOnly:
		op["x-cryptomesh-access"] = "node-only"
		addResponses(op, "401", "403", "503")
	}
	return op
}

func addResponses(op obj, codes ...string) {
	names := map[string]string{
		"400": "BadRequest", "401": "Unauthorized", "403": "Forbidden", "404": "NotFound", "409": "Conflict",
		"413": "PayloadTooLarge", "415": "UnsupportedMediaType", "422": "Unprocessable", "501": "NotImplemented", "503": "Unavailable",
	}
	rs := op["responses"].(obj)
	for _, c := range codes {
		rs[c] = responseRef(names[c])
	}
}

func jsonBody(schema obj, desc string) obj {
	return obj{"required": true, "description": desc, "content": obj{"application/json": obj{"schema": schema}}}
}

func jsonAnswer(desc string, schema obj) obj {
	return obj{"description": desc, "content": obj{"application/json": obj{"schema": schema}}}
}

func (b *openAPIBuilder) path(pattern, method string, op obj) {
	p, ok := b.paths[pattern].(obj)
	if !ok {
		p = obj{}
		b.paths[pattern] = p
	}
	p[strings.ToLower(method)] = op
}

// plural is the operation-id noun of a kind's collection.
func plural(name string) string {
	switch {
	case name == "Storage":
		return name
	case strings.HasSuffix(name, "y"):
		return strings.TrimSuffix(name, "y") + "ies"
	}
	return name + "s"
}

// kindPaths describes the entity routes of one kind (handlers.go).
func (b *openAPIBuilder) kindPaths(k registry.Kind) {
	name := schemaName(k)
	base := apiPrefix + "/" + k.Route()
	item := base + "/{id}"
	tag := k.Route()
	bodyNote := fmt.Sprintf(" At most %d bytes.", b.maxBody)

	list := operation("list"+plural(name), fmt.Sprintf("List %s entities", k.Singular()), accessAdmin, tag)
	list["description"] = "One page in id order (states and results: commit order), filtered by reference fields. Follow `after` with the last id of a page until a page comes back shorter than `limit`."
	params := []any{paramRef("Limit"), paramRef("After")}
	for _, f := range registry.FilterFields(k) {
		params = append(params, obj{"name": f, "in": "query", "description": fmt.Sprintf("Only entities whose %s references this id.", f),
			"schema": obj{"type": "string", "pattern": idPattern, "maxLength": 128}})
	}
	list["parameters"] = params
	ok := jsonAnswer("The page.", obj{"type": "array", "items": schemaRef(name)})
	ok["headers"] = obj{"X-Total-Count": obj{"description": "How many entities match the filters in all.", "schema": obj{"type": "integer", "minimum": 0}}}
	list["responses"].(obj)["200"] = ok
	addResponses(list, "400", "422")
	b.path(base, http.MethodGet, list)

	create := operation("create"+name, fmt.Sprintf("Create a %s", k.Singular()), accessAdmin, tag)
	create["requestBody"] = jsonBody(schemaRef(name+"Input"), "The entity; the id is assigned when absent."+bodyNote)
	created := jsonAnswer("The stored entity.", schemaRef(name))
	created["headers"] = obj{"Location": obj{"description": "The entity's URL.", "schema": obj{"type": "string"}}}
	create["responses"].(obj)["201"] = created
	addResponses(create, "400", "409", "413", "415", "422")
	b.path(base, http.MethodPost, create)

	get := operation("get"+name, fmt.Sprintf("Get a %s", k.Singular()), accessAdmin, tag)
	get["parameters"] = []any{paramRef("Id")}
	get["responses"].(obj)["200"] = jsonAnswer("The entity.", schemaRef(name))
	addResponses(get, "400", "404", "422")
	b.path(item, http.MethodGet, get)

	update := operation("update"+name, fmt.Sprintf("Update a %s (partial)", k.Singular()), accessAdmin, tag)
	update["parameters"] = []any{paramRef("Id")}
	update["requestBody"] = jsonBody(schemaRef(name+"Update"), "The fields to change."+bodyNote)
	update["responses"].(obj)["200"] = jsonAnswer("The entity after the update.", schemaRef(name))
	addResponses(update, "400", "404", "409", "413", "415", "422")
	b.path(item, http.MethodPut, update)

	del := operation("delete"+name, fmt.Sprintf("Delete a %s", k.Singular()), accessAdmin, tag)
	del["description"] = "An entity that others still reference is 409, listing them. States and results always go with their owner."
	del["parameters"] = []any{paramRef("Id"), paramRef("Cascade")}
	del["responses"].(obj)["204"] = obj{"description": "Deleted; the body is empty."}
	addResponses(del, "400", "404", "409", "422")
	b.path(item, http.MethodDelete, del)

	var owned registry.Kind
	switch k {
	case registry.KindEndpoint:
		owned = registry.KindEndpointState
	case registry.KindFunction:
		owned = registry.KindFunctionState
	default:
		return
	}
	latest := operation("getLatest"+schemaName(owned), fmt.Sprintf("The latest state of a %s", k.Singular()), accessAdmin, tag)
	latest["description"] = "The last committed state (not the largest timestamp). 404 when the " + k.Singular() + " does not exist or has no state yet."
	latest["parameters"] = []any{paramRef("Id")}
	latest["responses"].(obj)["200"] = jsonAnswer("The latest state.", schemaRef(schemaName(owned)))
	addResponses(latest, "400", "404", "422")
	b.path(item+"/state", http.MethodGet, latest)
}

// otherPaths describes the routes that are not per kind.
func (b *openAPIBuilder) otherPaths() {
	reports := operation("postReports", "Report states and results", accessNode, "reports")
	reports["description"] = "A proxy's batch of function states, function results and endpoint states, committed in one durable write. Each item is answered in order; a node may only report for its own endpoint and the functions on it."
	reports["requestBody"] = jsonBody(schemaRef("ReportBatch"), fmt.Sprintf("At most %d items and %d bytes.", maxReportItems, b.maxBody))
	reports["responses"].(obj)["200"] = jsonAnswer("One answer per item.", schemaRef("ReportAnswers"))
	addResponses(reports, "400", "413", "415", "422")
	b.path(apiPrefix+"/reports", http.MethodPost, reports)

	apply := operation("applyMesh", "Apply a mesh document", accessAdmin, "mesh")
	apply["description"] = "All or nothing: either every entity of the document is written in one durable revision, or nothing is. Errors name the document path and, for YAML, the line. Re-applying an unchanged document changes nothing."
	apply["parameters"] = []any{paramRef("DryRun")}
	apply["requestBody"] = obj{
		"required":    true,
		"description": fmt.Sprintf("A mesh document, JSON or YAML (application/yaml, application/x-yaml or text/yaml). At most %d bytes.", b.maxApply),
		"content": obj{
			"application/json":   obj{"schema": schemaRef("MeshDocument")},
			"application/yaml":   obj{"schema": schemaRef("MeshDocument")},
			"application/x-yaml": obj{"schema": schemaRef("MeshDocument")},
			"text/yaml":          obj{"schema": schemaRef("MeshDocument")},
		},
	}
	apply["responses"].(obj)["200"] = jsonAnswer("What was (or, in a dry run, would be) created, updated or unchanged.", schemaRef("ApplyReport"))
	addResponses(apply, "400", "404", "409", "413", "415", "422")
	b.path(apiPrefix+"/apply", http.MethodPost, apply)

	export := operation("exportMesh", "Export the registry as a mesh document", accessAdmin, "mesh")
	export["description"] = "Sorted keys, no server-set or derived fields, no states or results; applying it to an empty registry rebuilds the same entities."
	export["responses"].(obj)["200"] = obj{
		"description": "The document.",
		"headers":     obj{"X-Registry-Revision": obj{"description": "The registry revision exported.", "schema": obj{"type": "integer", "minimum": 0}}},
		"content":     obj{"application/yaml": obj{"schema": schemaRef("MeshDocument")}},
	}
	addResponses(export, "400", "422")
	b.path(apiPrefix+"/export", http.MethodGet, export)

	oa := operation("getOpenAPI", "This document", accessAdmin, "operations")
	oa["responses"].(obj)["200"] = jsonAnswer("The OpenAPI document.", obj{"type": "object"})
	addResponses(oa, "400", "422")
	b.path(apiPrefix+"/openapi.json", http.MethodGet, oa)

	healthz := operation("healthz", "Liveness", accessPublic, "operations")
	healthz["responses"].(obj)["200"] = jsonAnswer("The process serves HTTP.", schemaRef("Health"))
	addResponses(healthz, "400", "422")
	b.path("/healthz", http.MethodGet, healthz)

	readyz := operation("readyz", "Readiness", accessPublic, "operations")
	readyz["description"] = "200 when the store is loaded and accepts writes and every enabled component serves; 503 naming what does not."
	readyz["responses"].(obj)["200"] = jsonAnswer("Ready.", schemaRef("Health"))
	readyz["responses"].(obj)["503"] = jsonAnswer("Not ready; components say why.", schemaRef("Health"))
	addResponses(readyz, "400", "422")
	b.path("/readyz", http.MethodGet, readyz)

	metrics := operation("metrics", "Prometheus metrics", accessPublic, "operations")
	metrics["responses"].(obj)["200"] = obj{"description": "The Prometheus text exposition format.",
		"content": obj{"text/plain": obj{"schema": obj{"type": "string"}}}}
	b.path("/metrics", http.MethodGet, metrics)
}
