package api

import "net/http"

// proxiesSchemas describe GET /api/v1/proxies (proxies.go).
func (b *openAPIBuilder) proxiesSchemas() {
	version := obj{"type": "string", "description": "A content hash; empty when there is none."}
	b.schemas["ProxyNack"] = obj{
		"type": "object", "required": []any{"version", "error", "at"}, "additionalProperties": false,
		"properties": obj{
			"version": obj{"type": "string", "description": "The rejected version; it is never sent to this node again."},
			"error":   obj{"type": "string", "description": "The node's error_detail message."},
			"at":      obj{"type": "string", "format": "date-time"},
		},
	}
	b.schemas["ProxyType"] = obj{
		"type": "object", "additionalProperties": false,
		"required": []any{"type", "type_url", "wildcard", "names", "requests", "sent_version", "acked_version", "acked_at", "nacks", "last_nack"},
		"properties": obj{
			"type":          obj{"type": "string", "enum": []any{"secret", "cluster", "endpoint", "listener", "route"}},
			"type_url":      obj{"type": "string"},
			"wildcard":      obj{"type": "boolean", "description": "The node asked for every resource of the type its kind and binding entitle it to."},
			"names":         obj{"type": "array", "items": obj{"type": "string"}, "description": "The names subscribed to, when not a wildcard."},
			"requests":      obj{"type": "integer", "minimum": 0},
			"sent_version":  withDescription(version, "The latest version sent."),
			"acked_version": withDescription(version, "The latest version the node accepted."),
			"acked_at":      orNull(obj{"type": "string", "format": "date-time"}),
			"nacks":         obj{"type": "integer", "minimum": 0, "description": "Responses the node refused on this stream."},
			"last_nack":     orNull(schemaRef("ProxyNack")),
		},
	}
	b.schemas["Proxy"] = obj{
		"type": "object", "additionalProperties": false,
		"required": []any{"node", "binding", "spiffe_id", "kind", "credential", "peer", "connected_since", "types"},
		"properties": obj{
			"node":            obj{"type": "string", "description": "The xDS node id; empty until the stream's first request."},
			"binding":         obj{"type": "string", "description": "`endpoint:<E>` or `role:<R>`: what the node's credential binds it to, which decides its configuration."},
			"spiffe_id":       obj{"type": "string", "format": "uri"},
			"kind":            obj{"type": "string", "enum": []any{"envoy", "proxy", "grpc", ""}, "description": "From node.user_agent_name; empty until the first request."},
			"credential":      obj{"type": "string", "enum": []any{"join_token", "svid"}},
			"peer":            obj{"type": "string", "description": "The stream's remote address."},
			"connected_since": obj{"type": "string", "format": "date-time"},
			"types":           obj{"type": "array", "items": schemaRef("ProxyType")},
		},
	}
}

// proxiesPaths describes GET /api/v1/proxies.
func (b *openAPIBuilder) proxiesPaths() {
	op := operation("listProxies", "Connected xDS streams", accessAdmin, "xds")
	op["description"] = "Every open ADS stream of this control-plane replica: node, binding, SPIFFE ID, client kind, connection time and, per resource type, the subscription, the versions sent and ACKed and the last NACK. A node with several streams is listed once per stream."
	ok := jsonAnswer("The streams, by node and connection time.", obj{"type": "array", "items": schemaRef("Proxy")})
	ok["headers"] = obj{"X-Total-Count": obj{"description": "How many streams there are.", "schema": obj{"type": "integer", "minimum": 0}}}
	op["responses"].(obj)["200"] = ok
	addResponses(op, "400", "422")
	b.path(apiPrefix+"/proxies", http.MethodGet, op)
}
