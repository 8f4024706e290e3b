package api

import (
	"fmt"
	"net/http"
)

// identitySchemas describe the bodies of the identity routes (identity.go).
func (b *openAPIBuilder) identitySchemas() {
	b.schemas["WhoAmI"] = obj{
		"type": "object", "required": []any{"binding", "spiffe_id"}, "additionalProperties": false,
		"properties": obj{
			"node":      obj{"type": "string", "description": "The node name of the join token; absent when the caller authenticated with its SVID, which names a binding, not a node."},
			"binding":   obj{"type": "string", "pattern": `^(endpoint|role):[A-Za-z0-9][A-Za-z0-9._-]*$`, "description": "`endpoint:<E>` (the node is E's sidecar) or `role:<R>` (the node calls in role R)."},
			"spiffe_id": obj{"type": "string", "format": "uri", "description": "The one ID this node may be issued: the only SAN its CSR must carry. For an endpoint it follows the endpoint's current role."},
		},
	}
	b.schemas["SVIDRequest"] = obj{
		"type": "object", "required": []any{"csr"}, "additionalProperties": false,
		"properties": obj{
			"csr": obj{"type": "string", "minLength": 1, "description": "A PEM CERTIFICATE REQUEST whose only SAN is the caller's own SPIFFE ID (GET /api/v1/identity/whoami), with an ECDSA P-256/P-384 or RSA 2048-8192 key."},
		},
	}
	b.schemas["SVID"] = obj{
		"type": "object", "required": []any{"spiffe_id", "cert_chain", "bundle", "expires_at"}, "additionalProperties": false,
		"properties": obj{
			"spiffe_id":  obj{"type": "string", "format": "uri"},
			"cert_chain": obj{"type": "string", "description": "The X.509-SVID, PEM (roots sign SVIDs directly)."},
			"bundle":     obj{"type": "string", "description": "The trust bundle at signing time, PEM."},
			"expires_at": obj{"type": "string", "format": "date-time", "description": "Renew at half-life."},
		},
	}
	nameRule := obj{"type": "string", "pattern": idPattern, "maxLength": 128}
	b.schemas["TokenRequest"] = obj{
		"type": "object", "required": []any{"node"}, "additionalProperties": false,
		"description": "Give exactly one of endpoint and role; it must exist.",
		"properties": obj{
			"node":     withDescription(nameRule, "The node's name: its xDS node id and the token's sub."),
			"endpoint": orNull(withDescription(nameRule, "Bind the node to this endpoint: it holds the endpoint's SPIFFE ID.")),
			"role":     orNull(withDescription(nameRule, "Bind the node to this role: it holds the role's SPIFFE ID.")),
			"ttl": orNull(obj{"type": "string", "pattern": durationPattern, "default": DefaultTokenTTL.String(),
				"description": fmt.Sprintf("How long the token is valid, a Go duration between %s and %s.", MinTokenTTL, MaxTokenTTL)}),
		},
	}
	b.schemas["Token"] = obj{
		"type": "object", "required": []any{"token", "jti", "expires_at"}, "additionalProperties": false,
		"properties": obj{
			"token":      obj{"type": "string", "description": "The join token (an ES256 JWT). Shown only here: it is never stored or listed."},
			"jti":        obj{"type": "string", "description": "The token's id, to revoke it."},
			"expires_at": obj{"type": "string", "format": "date-time"},
		},
	}
	b.schemas["TokenRecord"] = obj{
		"type": "object", "required": []any{"jti", "node", "issued_at", "expires_at", "revoked"}, "additionalProperties": false,
		"properties": obj{
			"jti":        obj{"type": "string"},
			"node":       obj{"type": "string"},
			"endpoint":   obj{"type": "string", "description": "Set for an endpoint binding."},
			"role":       obj{"type": "string", "description": "Set for a role binding."},
			"issued_at":  obj{"type": "string", "format": "date-time"},
			"expires_at": obj{"type": "string", "format": "date-time"},
			"revoked":    obj{"type": "boolean"},
		},
	}
}

func withDescription(s obj, desc string) obj {
	out := obj{"description": desc}
	for k, v := range s {
		out[k] = v
	}
	return out
}

// identityPaths describes the identity routes (identity.go).
func (b *openAPIBuilder) identityPaths() {
	base := apiPrefix + "/identity"
	bodyNote := fmt.Sprintf(" At most %d bytes.", b.maxBody)

	bundle := operation("getTrustBundle", "The trust bundle", accessPublic, "identity")
	bundle["description"] = "Every root a peer must trust now, as PEM certificates: roots that will soon sign are already in it, retiring roots still are."
	bundle["responses"].(obj)["200"] = obj{"description": "The bundle.",
		// A file of PEM blocks, served as is: "binary" in OpenAPI's terms.
		"content": obj{pemContentType: obj{"schema": obj{"type": "string", "format": "binary"}}}}
	addResponses(bundle, "400", "422", "503")
	b.path(base+"/bundle", http.MethodGet, bundle)

	who := operation("whoAmI", "The caller's node identity", accessNodeOnly, "identity")
	who["description"] = "The binding of the caller's credential and the SPIFFE ID it may be issued. A node bound to an endpoint cannot know this ID itself (it depends on the endpoint's current role), and its CSR must name it."
	who["responses"].(obj)["200"] = jsonAnswer("The caller's identity.", schemaRef("WhoAmI"))
	addResponses(who, "400", "422")
	b.path(base+"/whoami", http.MethodGet, who)

	svids := operation("signSVID", "Have a CSR signed as the caller's X.509-SVID", accessNodeOnly, "identity")
	svids["description"] = "Signs a CSR whose only SAN is the caller's own SPIFFE ID; any other ID (and the control plane's, always) is 403. Administrators have no node identity and get 403 too: they mint a join token for the node. In SPIRE mode the control plane issues no SVIDs (501)."
	svids["requestBody"] = jsonBody(schemaRef("SVIDRequest"), "The CSR."+bodyNote)
	svids["responses"].(obj)["200"] = jsonAnswer("The SVID and the bundle to install with it.", schemaRef("SVID"))
	addResponses(svids, "400", "413", "415", "422", "501")
	b.path(base+"/svids", http.MethodPost, svids)

	create := operation("createJoinToken", "Mint a join token", accessAdmin, "identity")
	create["description"] = "A join token authenticates one node, bound to an endpoint or a role, until it expires or is revoked; it may be reused (nodes reconnect)."
	create["requestBody"] = jsonBody(schemaRef("TokenRequest"), "The node and its binding."+bodyNote)
	create["responses"].(obj)["201"] = jsonAnswer("The token, shown only this once.", schemaRef("Token"))
	addResponses(create, "400", "413", "415", "422")
	b.path(base+"/tokens", http.MethodPost, create)

	list := operation("listJoinTokens", "List join-token records", accessAdmin, "identity")
	list["description"] = "Every token minted and not yet swept (records are deleted once the token has expired), oldest first. Never the tokens themselves."
	ok := jsonAnswer("The records.", obj{"type": "array", "items": schemaRef("TokenRecord")})
	ok["headers"] = obj{"X-Total-Count": obj{"description": "How many records there are.", "schema": obj{"type": "integer", "minimum": 0}}}
	list["responses"].(obj)["200"] = ok
	addResponses(list, "400", "422")
	b.path(base+"/tokens", http.MethodGet, list)

	revoke := operation("revokeJoinToken", "Revoke a join token", accessAdmin, "identity")
	revoke["description"] = "Every later use of the token is refused. Revoking a revoked token is 204 again."
	revoke["parameters"] = []any{obj{"name": "jti", "in": "path", "required": true, "description": "The token's jti.",
		"schema": obj{"type": "string", "minLength": 1}}}
	revoke["responses"].(obj)["204"] = obj{"description": "Revoked; the body is empty."}
	addResponses(revoke, "400", "404", "422")
	b.path(base+"/tokens/{jti}", http.MethodDelete, revoke)
}
