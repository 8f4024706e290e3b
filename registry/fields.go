package registry

// The field tables below are the registry's schema as data: validation,
// reference checks, memdb indexes, filters and partial updates are all
// driven by them, so adding a field is one line here.

type fieldType int

const (
	ftString      fieldType = iota // any string
	ftText                         // a non-blank string
	ftBool                         // true or false
	ftEnum                         // one of field.enum
	ftSize                         // "512MB"
	ftResources                    // {"cpu": int > 0, "ram": size}
	ftMetadata                     // map of string to string
	ftDuration                     // Go duration >= 0
	ftHostPort                     // host:port
	ftRef                          // the id of a field.target entity
	ftRefList                      // ids of field.target entities
	ftPermissions                  // the permission grammar of SPEC §1
	ftPolicy                       // a security policy id, or an embedded policy object
	ftStorageRef                   // a storage id, or an embedded storage object
	ftChildren                     // derived list of contained ids; an assertion on input
	ftServerTime                   // set by the server; ignored on input
	ftIgnored                      // accepted and dropped (policy_id of old clients)
	ftTimestamp                    // an RFC 3339 time given by the client
)

type field struct {
	name     string
	typ      fieldType
	required bool
	enum     []string
	def      any  // default applied when a created entity lacks the field
	target   Kind // for ftRef, ftRefList, ftPolicy, ftStorageRef, ftChildren
	// contains marks a ref to the entity's container (a microservice's
	// service, a function's microservice) or a history entity's owner.
	contains bool
}

type kindSchema struct {
	kind   Kind
	fields []field
	// owner is the field naming the owner of a history entity.
	owner string
	// parent is the ref field naming a non-history entity's container;
	// children is the ftChildren field of the container listing them.
	parent string
}

const (
	defaultWorkloadAddress = "127.0.0.1:8080"
	defaultTimeout         = "60s"
)

// schemas are built once; they are read-only lookup data.
var schemas = func() map[Kind]*kindSchema {
	m := map[Kind]*kindSchema{}
	for _, k := range allKinds() {
		m[k] = buildSchema(k)
	}
	return m
}()

func schemaOf(k Kind) *kindSchema { return schemas[k] }

func buildSchema(k Kind) *kindSchema {
	switch k {
	case KindRole:
		return &kindSchema{kind: k, fields: []field{
			{name: "name", typ: ftText, required: true},
			{name: "description", typ: ftString},
			{name: "permissions", typ: ftPermissions, def: []any{}},
			{name: "created_at", typ: ftServerTime},
		}}
	case KindSecurityPolicy:
		return &kindSchema{kind: k, fields: []field{
			{name: "roles", typ: ftRefList, target: KindRole, def: []any{}},
			{name: "requires_authentication", typ: ftBool, required: true},
			{name: "mode", typ: ftEnum, enum: []string{"enforce", "audit"}, def: "enforce"},
			{name: "created_at", typ: ftServerTime},
		}}
	case KindStorage:
		return &kindSchema{kind: k, fields: []field{
			{name: "capacity", typ: ftSize, required: true},
			{name: "source_path", typ: ftText, required: true},
			{name: "sink_path", typ: ftText, required: true},
			{name: "created_at", typ: ftServerTime},
		}}
	case KindEndpoint:
		return &kindSchema{kind: k, fields: []field{
			{name: "name", typ: ftString},
			{name: "image", typ: ftString},
			{name: "resources", typ: ftResources},
			{name: "security_policy", typ: ftPolicy, target: KindSecurityPolicy, required: true},
			{name: "address", typ: ftHostPort},
			{name: "workload_address", typ: ftHostPort, def: defaultWorkloadAddress},
			{name: "role", typ: ftRef, target: KindRole},
			{name: "protocol", typ: ftEnum, enum: []string{"http", "grpc"}, def: "http"},
			{name: "created_at", typ: ftServerTime},
		}}
	case KindEndpointState:
		return &kindSchema{kind: k, owner: "endpoint_id", fields: []field{
			{name: "endpoint_id", typ: ftRef, target: KindEndpoint, required: true, contains: true},
			{name: "state", typ: ftEnum, enum: []string{"cold", "starting", "warm", "unhealthy", "draining"}, required: true},
			{name: "metadata", typ: ftMetadata, def: map[string]any{}},
			{name: "timestamp", typ: ftServerTime},
		}}
	case KindService:
		return &kindSchema{kind: k, fields: []field{
			{name: "security_policy", typ: ftPolicy, target: KindSecurityPolicy, required: true},
			{name: "microservices", typ: ftChildren, target: KindMicroservice},
			{name: "resources", typ: ftResources},
			{name: "created_at", typ: ftServerTime},
		}}
	case KindMicroservice:
		return &kindSchema{kind: k, parent: "service_id", fields: []field{
			{name: "service_id", typ: ftRef, target: KindService, contains: true},
			{name: "functions", typ: ftChildren, target: KindFunction},
			{name: "resources", typ: ftResources},
			{name: "created_at", typ: ftServerTime},
		}}
	case KindFunction:
		return &kindSchema{kind: k, parent: "microservice_id", fields: []field{
			{name: "microservice_id", typ: ftRef, target: KindMicroservice, contains: true},
			{name: "image", typ: ftString},
			{name: "resources", typ: ftResources},
			{name: "storage", typ: ftStorageRef, target: KindStorage},
			{name: "endpoint_id", typ: ftRef, target: KindEndpoint},
			{name: "deployment_status", typ: ftEnum, enum: []string{"pending", "initiated", "deployed", "completed", "failed"}, def: "pending"},
			{name: "timeout", typ: ftDuration, def: defaultTimeout},
			{name: "created_at", typ: ftServerTime},
		}}
	case KindFunctionState:
		return &kindSchema{kind: k, owner: "function_id", fields: []field{
			{name: "function_id", typ: ftRef, target: KindFunction, required: true, contains: true},
			{name: "state", typ: ftEnum, enum: []string{"pending", "running", "completed", "failed"}, required: true},
			{name: "metadata", typ: ftMetadata, def: map[string]any{}},
			{name: "timestamp", typ: ftServerTime},
		}}
	case KindFunctionResult:
		return &kindSchema{kind: k, owner: "function_id", fields: []field{
			{name: "function_id", typ: ftRef, target: KindFunction, required: true, contains: true},
			{name: "metadata", typ: ftMetadata, def: map[string]any{}},
			{name: "timestamp", typ: ftServerTime},
		}}
	case KindJoinToken:
		// Bindings are names, not references: a token outlives neither
		// its expiry nor a revocation, and must not block deleting the
		// endpoint or role it names.
		return &kindSchema{kind: k, fields: []field{
			{name: "node", typ: ftText, required: true},
			{name: "endpoint", typ: ftString},
			{name: "role", typ: ftString},
			{name: "issued_at", typ: ftTimestamp, required: true},
			{name: "expires_at", typ: ftTimestamp, required: true},
			{name: "revoked", typ: ftBool},
		}}
	}
	return nil
}

// refFields lists the fields of k that reference other entities, with
// their target kinds. Embedded policy and storage objects are references
// once resolved.
func (s *kindSchema) refFields() []field {
	var out []field
	for _, f := range s.fields {
		switch f.typ {
		case ftRef, ftRefList, ftPolicy, ftStorageRef:
			out = append(out, f)
		}
	}
	return out
}

func (s *kindSchema) field(name string) (field, bool) {
	for _, f := range s.fields {
		if f.name == name {
			return f, true
		}
	}
	return field{}, false
}

// FilterFields lists the query parameters GET /<kind> filters by: its
// reference fields.
func FilterFields(k Kind) []string {
	s := schemaOf(k)
	if s == nil {
		return nil
	}
	var out []string
	for _, f := range s.refFields() {
		out = append(out, f.name)
	}
	return out
}

// referrer is a (kind, field) pair that points at some target kind.
type referrer struct {
	kind  Kind
	field field
}

// referrersOf lists every (kind, field) that references kind target.
func referrersOf(target Kind) []referrer {
	var out []referrer
	for _, k := range Kinds() {
		for _, f := range schemaOf(k).refFields() {
			if f.target == target {
				out = append(out, referrer{kind: k, field: f})
			}
		}
	}
	return out
}
