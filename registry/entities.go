package registry

// The entity types of SPEC §1. Field order and JSON names are the wire
// format. Optional scalar fields are plain values ("" or false when unset);
// optional objects are pointers so that an absent value reads as null.

// Resources is what a function, endpoint, service or microservice needs.
type Resources struct {
	CPU int    `json:"cpu"`
	RAM string `json:"ram"`
}

// Role is a set of permissions that callers act in.
type Role struct {
	RoleID      string   `json:"role_id"`
	Name        string   `json:"name"`
	Description string   `json:"description"`
	Permissions []string `json:"permissions"`
	CreatedAt   string   `json:"created_at,omitempty"`
}

// SecurityPolicy names the roles that may call what it guards.
type SecurityPolicy struct {
	SPID                   string   `json:"sp_id"`
	Roles                  []string `json:"roles"`
	RequiresAuthentication bool     `json:"requires_authentication"`
	Mode                   string   `json:"mode"`
	CreatedAt              string   `json:"created_at,omitempty"`
}

// Storage is a volume a function reads from and writes to.
type Storage struct {
	StorageID  string `json:"storage_id"`
	Capacity   string `json:"capacity"`
	SourcePath string `json:"source_path"`
	SinkPath   string `json:"sink_path"`
	CreatedAt  string `json:"created_at,omitempty"`
}

// Endpoint is a place functions are deployed on: a workload and its sidecar.
type Endpoint struct {
	EndpointID      string     `json:"endpoint_id"`
	Name            string     `json:"name"`
	Image           string     `json:"image"`
	Resources       *Resources `json:"resources"`
	SecurityPolicy  string     `json:"security_policy"`
	Address         string     `json:"address"`
	WorkloadAddress string     `json:"workload_address"`
	Role            string     `json:"role"`
	Protocol        string     `json:"protocol"`
	CreatedAt       string     `json:"created_at,omitempty"`
}

// EndpointState is one observation of an endpoint's health.
type EndpointState struct {
	StateID    string            `json:"state_id"`
	EndpointID string            `json:"endpoint_id"`
	State      string            `json:"state"`
	Metadata   map[string]string `json:"metadata"`
	Timestamp  string            `json:"timestamp,omitempty"`
}

// Service is the top of the containment tree.
type Service struct {
	ServiceID      string     `json:"service_id"`
	SecurityPolicy string     `json:"security_policy"`
	Microservices  []string   `json:"microservices"`
	Resources      *Resources `json:"resources"`
	CreatedAt      string     `json:"created_at,omitempty"`
}

// Microservice groups functions within a service.
type Microservice struct {
	MicroserviceID string     `json:"microservice_id"`
	ServiceID      string     `json:"service_id"`
	Functions      []string   `json:"functions"`
	Resources      *Resources `json:"resources"`
	CreatedAt      string     `json:"created_at,omitempty"`
}

// Function is one callable unit of an ML system.
type Function struct {
	FunctionID       string     `json:"function_id"`
	MicroserviceID   string     `json:"microservice_id"`
	Image            string     `json:"image"`
	Resources        *Resources `json:"resources"`
	Storage          string     `json:"storage"`
	EndpointID       string     `json:"endpoint_id"`
	DeploymentStatus string     `json:"deployment_status"`
	Timeout          string     `json:"timeout"`
	CreatedAt        string     `json:"created_at,omitempty"`
}

// FunctionState is one observation of a function execution's state.
type FunctionState struct {
	StateID    string            `json:"state_id"`
	FunctionID string            `json:"function_id"`
	State      string            `json:"state"`
	Metadata   map[string]string `json:"metadata"`
	Timestamp  string            `json:"timestamp,omitempty"`
}

// FunctionResult is the outcome of one function execution.
type FunctionResult struct {
	StateID    string            `json:"state_id"`
	FunctionID string            `json:"function_id"`
	Metadata   map[string]string `json:"metadata"`
	Timestamp  string            `json:"timestamp,omitempty"`
}

// JoinToken is the record of one minted join token: what it binds and
// whether it was revoked. The token itself is never stored.
type JoinToken struct {
	JTI       string `json:"jti"`
	Node      string `json:"node"`
	Endpoint  string `json:"endpoint,omitempty"`
	Role      string `json:"role,omitempty"`
	IssuedAt  string `json:"issued_at"`
	ExpiresAt string `json:"expires_at"`
	Revoked   bool   `json:"revoked"`
}
