package registry

import "slices"

// Kind names one entity type. Its value is the go-memdb table name and the
// `kind` label of the registry metrics.
type Kind string

// The ten entity kinds of the registry.
const (
	KindRole           Kind = "roles"
	KindSecurityPolicy Kind = "security_policies"
	KindStorage        Kind = "storage"
	KindEndpoint       Kind = "endpoints"
	KindEndpointState  Kind = "endpoint_states"
	KindService        Kind = "services"
	KindMicroservice   Kind = "microservices"
	KindFunction       Kind = "functions"
	KindFunctionState  Kind = "function_states"
	KindFunctionResult Kind = "function_results"

	// KindJoinToken is internal: the durable record of each join token
	// minted (its revocation list), served only by the identity routes,
	// never by the generic entity routes or mesh documents.
	KindJoinToken Kind = "join_tokens"
)

// Kinds lists every kind in dependency order: a kind only references kinds
// listed before it. Mesh documents are applied in this order.
func Kinds() []Kind {
	return []Kind{
		KindRole, KindSecurityPolicy, KindStorage, KindEndpoint, KindEndpointState,
		KindService, KindMicroservice, KindFunction, KindFunctionState, KindFunctionResult,
	}
}

// allKinds is Kinds plus the internal kinds.
func allKinds() []Kind { return append(Kinds(), KindJoinToken) }

// Valid reports whether k is one of the registry's kinds, internal ones
// included.
func (k Kind) Valid() bool { return slices.Contains(allKinds(), k) }

// Internal reports whether k is kept by the registry for the control
// plane's own use rather than being part of the model (SPEC §1).
func (k Kind) Internal() bool { return k == KindJoinToken }

// History reports whether k is a history kind (states and results): owned by
// one entity, kept newest-first up to the history limit, listed in commit
// order.
func (k Kind) History() bool {
	switch k {
	case KindEndpointState, KindFunctionState, KindFunctionResult:
		return true
	}
	return false
}

// Route is the path segment of k under /api/v1.
func (k Kind) Route() string {
	switch k {
	case KindSecurityPolicy:
		return "security-policies"
	case KindEndpointState:
		return "endpoint-states"
	case KindFunctionState:
		return "function-states"
	case KindFunctionResult:
		return "function-results"
	}
	return string(k)
}

// IDField is the JSON name of k's id field.
func (k Kind) IDField() string {
	switch k {
	case KindRole:
		return "role_id"
	case KindSecurityPolicy:
		return "sp_id"
	case KindStorage:
		return "storage_id"
	case KindEndpoint:
		return "endpoint_id"
	case KindService:
		return "service_id"
	case KindMicroservice:
		return "microservice_id"
	case KindFunction:
		return "function_id"
	case KindEndpointState, KindFunctionState, KindFunctionResult:
		return "state_id"
	case KindJoinToken:
		return "jti"
	}
	return "id"
}

// Singular is a human name for one entity of kind k, used in messages.
func (k Kind) Singular() string {
	switch k {
	case KindRole:
		return "role"
	case KindSecurityPolicy:
		return "security policy"
	case KindStorage:
		return "storage"
	case KindEndpoint:
		return "endpoint"
	case KindEndpointState:
		return "endpoint state"
	case KindService:
		return "service"
	case KindMicroservice:
		return "microservice"
	case KindFunction:
		return "function"
	case KindFunctionState:
		return "function state"
	case KindFunctionResult:
		return "function result"
	case KindJoinToken:
		return "join token"
	}
	return string(k)
}
