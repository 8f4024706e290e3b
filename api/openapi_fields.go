package api

import (
	"reflect"

	"github.com/cryptomesh/cryptomesh/registry"
)

// The OpenAPI schemas of the entities are generated from the registry's Go
// entity types (their json tags give the wire names and types) plus the
// table below, which says what the types cannot: required fields, enums,
// defaults, formats, references and examples. The registry keeps its own
// field tables unexported, so this table restates their rules; the tests
// (openapi_test.go) post the examples, leave out each required field, try
// each enum and compare stored entities with the schemas against a real
// registry, so the two cannot drift apart unnoticed.

// entityType is the Go type of each kind's entities.
func entityType(k registry.Kind) reflect.Type {
	switch k {
	case registry.KindRole:
		return reflect.TypeFor[registry.Role]()
	case registry.KindSecurityPolicy:
		return reflect.TypeFor[registry.SecurityPolicy]()
	case registry.KindStorage:
		return reflect.TypeFor[registry.Storage]()
	case registry.KindEndpoint:
		return reflect.TypeFor[registry.Endpoint]()
	case registry.KindEndpointState:
		return reflect.TypeFor[registry.EndpointState]()
	case registry.KindService:
		return reflect.TypeFor[registry.Service]()
	case registry.KindMicroservice:
		return reflect.TypeFor[registry.Microservice]()
	case registry.KindFunction:
		return reflect.TypeFor[registry.Function]()
	case registry.KindFunctionState:
		return reflect.TypeFor[registry.FunctionState]()
	case registry.KindFunctionResult:
		return reflect.TypeFor[registry.FunctionResult]()
	}
	return nil
}

// fieldFormat names the value rules of a string field beyond its type.
type fieldFormat int

const (
	formatNone       fieldFormat = iota
	formatID                     // an entity id (SPEC §1)
	formatText                   // a non-blank string
	formatSize                   // "512MB"
	formatDuration               // a Go duration >= 0
	formatHostPort               // host:port, or "" for unset
	formatPermission             // ACTION[:GLOB]
	formatTimestamp              // RFC 3339, set by the server
)

// fieldDoc is what the Go type of one entity field does not say.
type fieldDoc struct {
	description string
	required    bool // on create and in mesh documents
	enum        []string
	def         any // filled in on create when absent
	format      fieldFormat
	// ref is the kind whose ids the field (or its items) holds.
	ref registry.Kind
	// embeds marks the compatibility input of SPEC §1: an id of ref, or an
	// embedded object that becomes an entity of that kind.
	embeds bool
	// derived marks a list of children computed from their parent field;
	// on input it is an assertion only.
	derived bool
	// server marks a field only the server sets.
	server bool
	// example is a valid input value; the examples of all kinds form one
	// small mesh that applies in registry.Kinds() order.
	example any
}

// entityFields documents every field of every kind, the id field included.
func entityFields(k registry.Kind) map[string]fieldDoc {
	created := fieldDoc{description: "When the entity was created; set by the server.", format: formatTimestamp, server: true}
	stamp := fieldDoc{description: "When the server stored the observation; set by the server.", format: formatTimestamp, server: true}
	resources := fieldDoc{description: "CPUs and memory it needs.", example: map[string]any{"cpu": 4, "ram": "16GB"}}
	metadata := fieldDoc{description: "Free-form string labels.", def: map[string]any{}, example: map[string]any{"run": "2024-06-01"}}
	switch k {
	case registry.KindRole:
		return map[string]fieldDoc{
			"role_id":     {description: "The role's id; assigned (a UUID) when absent.", format: formatID, example: "ml-engineer"},
			"name":        {description: "A human name.", required: true, format: formatText, example: "ML engineer"},
			"description": {description: "What the role is for.", example: "Trains and promotes models."},
			"permissions": {description: "What callers acting in the role may do: execute, read, write or *, each optionally scoped to functions as ACTION:GLOB (Go path.Match over function ids).", format: formatPermission, def: []any{}, example: []any{"execute:train_*", "read"}},
			"created_at":  created,
		}
	case registry.KindSecurityPolicy:
		return map[string]fieldDoc{
			"sp_id":                   {description: "The policy's id; assigned (a UUID) when absent.", format: formatID, example: "training-policy"},
			"roles":                   {description: "Roles whose callers the policy admits; at least one when authentication is required.", ref: registry.KindRole, def: []any{}, example: []any{"ml-engineer"}},
			"requires_authentication": {description: "Whether callers must present an identity.", required: true, example: true},
			"mode":                    {description: "enforce denies what the roles do not grant; audit only counts and logs it.", enum: []string{"enforce", "audit"}, def: "enforce", example: "enforce"},
			"created_at":              created,
		}
	case registry.KindStorage:
		return map[string]fieldDoc{
			"storage_id":  {description: "The storage's id; assigned (a UUID) when absent.", format: formatID, example: "model-artifacts"},
			"capacity":    {description: "Its size.", required: true, format: formatSize, example: "200GB"},
			"source_path": {description: "Where functions read from.", required: true, format: formatText, example: "/mnt/features"},
			"sink_path":   {description: "Where functions write to.", required: true, format: formatText, example: "/mnt/models"},
			"created_at":  created,
		}
	case registry.KindEndpoint:
		return map[string]fieldDoc{
			"endpoint_id":      {description: "The endpoint's id; assigned (a UUID) when absent.", format: formatID, example: "gpu-trainer"},
			"name":             {description: "A human name.", example: "GPU training node"},
			"image":            {description: "The workload's container image.", example: "registry.example/ml/trainer:3.1.0"},
			"resources":        resources,
			"security_policy":  {description: "The policy guarding calls into the endpoint.", required: true, ref: registry.KindSecurityPolicy, embeds: true, example: "training-policy"},
			"address":          {description: "host:port where its inbound listener is reached (its port is the inbound port); \"\" for none.", format: formatHostPort, example: "127.0.0.1:17003"},
			"workload_address": {description: "host:port where its workload listens.", format: formatHostPort, def: "127.0.0.1:8080", example: "127.0.0.1:18103"},
			"role":             {description: "The role its workload acts in when it calls other functions.", ref: registry.KindRole, example: "ml-engineer"},
			"protocol":         {description: "What its workload speaks.", enum: []string{"http", "grpc"}, def: "http", example: "http"},
			"created_at":       created,
		}
	case registry.KindEndpointState:
		return map[string]fieldDoc{
			"state_id":    {description: "The observation's id; assigned (a UUID) when absent.", format: formatID, example: "gpu-trainer-0001"},
			"endpoint_id": {description: "The endpoint observed.", required: true, ref: registry.KindEndpoint, example: "gpu-trainer"},
			"state":       {description: "The endpoint's health.", required: true, enum: []string{"cold", "starting", "warm", "unhealthy", "draining"}, example: "warm"},
			"metadata":    metadata,
			"timestamp":   stamp,
		}
	case registry.KindService:
		return map[string]fieldDoc{
			"service_id":      {description: "The service's id; assigned (a UUID) when absent.", format: formatID, example: "model-training"},
			"security_policy": {description: "The policy guarding the service.", required: true, ref: registry.KindSecurityPolicy, embeds: true, example: "training-policy"},
			"microservices":   {description: "Its microservices, derived from their service_id. On input an assertion: a listed id under another service is 409, one that does not exist yet is allowed and not stored.", ref: registry.KindMicroservice, derived: true, example: []any{"trainer"}},
			"resources":       resources,
			"created_at":      created,
		}
	case registry.KindMicroservice:
		return map[string]fieldDoc{
			"microservice_id": {description: "The microservice's id; assigned (a UUID) when absent.", format: formatID, example: "trainer"},
			"service_id":      {description: "The service containing it.", ref: registry.KindService, example: "model-training"},
			"functions":       {description: "Its functions, derived from their microservice_id. On input an assertion, as for a service's microservices.", ref: registry.KindFunction, derived: true, example: []any{"train_model"}},
			"resources":       resources,
			"created_at":      created,
		}
	case registry.KindFunction:
		return map[string]fieldDoc{
			"function_id":       {description: "The function's id; assigned (a UUID) when absent.", format: formatID, example: "train_model"},
			"microservice_id":   {description: "The microservice containing it.", ref: registry.KindMicroservice, example: "trainer"},
			"image":             {description: "The function's container image.", example: "registry.example/ml/trainer:3.1.0"},
			"resources":         resources,
			"storage":           {description: "The storage it reads and writes.", ref: registry.KindStorage, embeds: true, example: "model-artifacts"},
			"endpoint_id":       {description: "The endpoint it is deployed on.", ref: registry.KindEndpoint, example: "gpu-trainer"},
			"deployment_status": {description: "How far its deployment got.", enum: []string{"pending", "initiated", "deployed", "completed", "failed"}, def: "pending", example: "deployed"},
			"timeout":           {description: "How long one call may take, as a Go duration; \"0\" means none (streams).", format: formatDuration, def: "60s", example: "30m"},
			"created_at":        created,
		}
	case registry.KindFunctionState:
		return map[string]fieldDoc{
			"state_id":    {description: "The observation's id; assigned (a UUID) when absent.", format: formatID, example: "train_model-run-1"},
			"function_id": {description: "The function observed.", required: true, ref: registry.KindFunction, example: "train_model"},
			"state":       {description: "Where the execution is.", required: true, enum: []string{"pending", "running", "completed", "failed"}, example: "running"},
			"metadata":    metadata,
			"timestamp":   stamp,
		}
	case registry.KindFunctionResult:
		return map[string]fieldDoc{
			"state_id":    {description: "The result's id; assigned (a UUID) when absent. When a function state has the same id it must belong to the same function.", format: formatID, example: "train_model-run-1"},
			"function_id": {description: "The function that ran.", required: true, ref: registry.KindFunction, example: "train_model"},
			"metadata":    metadata,
			"timestamp":   stamp,
		}
	}
	return nil
}

// entityRules are rules across fields of a kind's create body, as JSON
// Schema keywords added to its Input schema.
func entityRules(k registry.Kind) map[string]any {
	if k == registry.KindSecurityPolicy {
		// A policy that requires authentication names at least one role.
		return map[string]any{
			"if": map[string]any{
				"required":   []any{"requires_authentication"},
				"properties": map[string]any{"requires_authentication": map[string]any{"const": true}},
			},
			"then": map[string]any{
				"required":   []any{"roles"},
				"properties": map[string]any{"roles": map[string]any{"type": "array", "minItems": 1}},
			},
		}
	}
	return nil
}
