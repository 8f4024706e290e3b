package api

// RouteTable exposes the route table to the tests of package api_test:
// every route pattern with its methods and who may call each ("public",
// "admin", "node" or "node-only").
func RouteTable(s *Server) map[string]map[string]string {
	names := map[access]string{accessPublic: "public", accessAdmin: "admin", accessNode: "node", accessNodeOnly: "node-only"}
	out := map[string]map[string]string{}
	for _, rt := range s.routes() {
		ms := map[string]string{}
		for m, h := range rt.methods {
			ms[m] = names[h.access]
		}
		out[rt.pattern] = ms
	}
	return out
}
