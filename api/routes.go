package api

import (
	"net/http"
	"slices"
	"strings"

	"github.com/cryptomesh/cryptomesh/registry"
)

// apiPrefix is the base path of the REST API.
const apiPrefix = "/api/v1"

// handlerFunc serves one method of one route. A returned error is
// answered by the server in the error shape of SPEC §2.
type handlerFunc func(w http.ResponseWriter, r *http.Request) error

// method is one method of a route: who may call it and what serves it.
type method struct {
	access access
	serve  handlerFunc
}

// route is one path pattern and its methods. The pattern is also the
// `route` label of the metrics.
type route struct {
	pattern string
	methods map[string]method
}

// routes lists every route of the API.
func (s *Server) routes() []route {
	rs := []route{
		{"/healthz", map[string]method{http.MethodGet: {accessPublic, s.healthz}}},
		{"/readyz", map[string]method{http.MethodGet: {accessPublic, s.readyz}}},
		{"/metrics", map[string]method{http.MethodGet: {accessPublic, s.metricsHandler()}}},
		{apiPrefix + "/reports", map[string]method{http.MethodPost: {accessNode, s.postReports}}},
		{apiPrefix + "/apply", map[string]method{http.MethodPost: {accessAdmin, s.postApply}}},
		{apiPrefix + "/export", map[string]method{http.MethodGet: {accessAdmin, s.getExport}}},
		// Admin only: node ids, bindings and versions map the mesh.
		{apiPrefix + "/proxies", map[string]method{http.MethodGet: {accessAdmin, s.getProxies}}},
		// Admin only: SPEC §2 names every route open without a credential,
		// and this is not one of them.
		{apiPrefix + "/openapi.json", map[string]method{http.MethodGet: {accessAdmin, s.openAPIHandler()}}},
	}
	for _, k := range registry.Kinds() {
		base := apiPrefix + "/" + k.Route()
		rs = append(rs,
			route{base, map[string]method{
				http.MethodGet:  {accessAdmin, s.listEntities(k)},
				http.MethodPost: {accessAdmin, s.createEntity(k)},
			}},
			route{base + "/{id}", map[string]method{
				http.MethodGet:    {accessAdmin, s.getEntity(k)},
				http.MethodPut:    {accessAdmin, s.updateEntity(k)},
				http.MethodDelete: {accessAdmin, s.deleteEntity(k)},
			}},
		)
	}
	rs = append(rs,
		route{apiPrefix + "/" + registry.KindEndpoint.Route() + "/{id}/state", map[string]method{
			http.MethodGet: {accessAdmin, s.latestState(registry.KindEndpoint, registry.KindEndpointState)},
		}},
		route{apiPrefix + "/" + registry.KindFunction.Route() + "/{id}/state", map[string]method{
			http.MethodGet: {accessAdmin, s.latestState(registry.KindFunction, registry.KindFunctionState)},
		}},
	)
	return append(rs, s.identityRoutes()...)
}

// buildMux registers every route with and without a trailing slash (SPEC
// §2: both answer, neither redirects) and a catch-all that answers 404.
func (s *Server) buildMux() *http.ServeMux {
	mux := http.NewServeMux()
	for _, rt := range s.routes() {
		h := s.serveRoute(rt)
		mux.Handle(rt.pattern, h)
		mux.Handle(rt.pattern+"/{$}", h)
	}
	mux.HandleFunc("/", s.notFound)
	return mux
}

// serveRoute dispatches a route by method: 405 with Allow for a method
// the route lacks, CORS preflights and OPTIONS without credentials, then
// authentication and authorization, then the handler.
func (s *Server) serveRoute(rt route) http.Handler {
	allow := allowedMethods(rt)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		info := infoOf(r.Context())
		info.route = rt.pattern
		if r.Method == http.MethodOptions {
			if isPreflight(r) {
				answerPreflight(w, allow)
				return
			}
			w.Header().Set("Allow", strings.Join(allow, ", "))
			w.WriteHeader(http.StatusNoContent)
			return
		}
		m, ok := rt.methods[r.Method]
		if !ok && r.Method == http.MethodHead {
			m, ok = rt.methods[http.MethodGet]
		}
		if !ok {
			w.Header().Set("Allow", strings.Join(allow, ", "))
			s.writeError(w, r, errorf(http.StatusMethodNotAllowed, "method %s is not allowed on %s; allowed: %s",
				r.Method, rt.pattern, strings.Join(allow, ", ")))
			return
		}
		p, err := s.authorize(r, m.access)
		info.principal = p.Name
		if err != nil {
			s.writeError(w, r, err)
			return
		}
		r = r.WithContext(withPrincipal(r.Context(), p))
		if err := m.serve(w, r); err != nil {
			s.writeError(w, r, err)
		}
	})
}

// allowedMethods lists a route's methods for Allow headers: its own, HEAD
// where GET is served, and OPTIONS.
func allowedMethods(rt route) []string {
	var out []string
	for m := range rt.methods {
		out = append(out, m)
	}
	if _, ok := rt.methods[http.MethodGet]; ok {
		out = append(out, http.MethodHead)
	}
	out = append(out, http.MethodOptions)
	slices.Sort(out)
	return out
}

// notFound answers every path that no route matches.
func (s *Server) notFound(w http.ResponseWriter, r *http.Request) {
	s.writeError(w, r, errorf(http.StatusNotFound, "no route for %s %s", r.Method, r.URL.Path))
}
