package api

import (
	"fmt"
	"net/http"
	"net/url"
	"strings"
)

// corsMaxAge is how long browsers may cache a preflight answer (seconds).
const corsMaxAge = "600"

// checkOrigins validates the configured CORS origins. Only exact origins
// are accepted: a wildcard would let any web page drive the API with a
// token it got hold of, and a typo such as a trailing slash would never
// match and only confuse.
func checkOrigins(origins []string) (map[string]bool, error) {
	out := make(map[string]bool, len(origins))
	for _, o := range origins {
		u, err := url.Parse(o)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" ||
			u.Path != "" || u.RawQuery != "" || u.Fragment != "" || u.User != nil {
			return nil, fmt.Errorf("CORS origin %q must be scheme://host[:port], e.g. https://ui.example.com", o)
		}
		out[o] = true
	}
	return out, nil
}

// cors refuses requests from browser origins that are not configured
// (SPEC §2) and marks answers to configured ones as readable by them.
// Requests without an Origin header (curl, proxies, the CLI) are not
// affected.
func (s *Server) cors(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		origin := r.Header.Get("Origin")
		h := w.Header()
		if len(s.origins) > 0 {
			// Answers differ by Origin, so no cache may hand one origin's
			// answer (or a non-browser's) to another.
			h.Add("Vary", "Origin")
		}
		if origin == "" {
			next.ServeHTTP(w, r)
			return
		}
		if !s.origins[origin] {
			s.writeError(w, r, errorf(http.StatusForbidden, "origin %q is not allowed; see --cors-origins", origin))
			return
		}
		h.Set("Access-Control-Allow-Origin", origin)
		h.Set("Access-Control-Expose-Headers", "X-Total-Count, Location, X-Registry-Revision")
		next.ServeHTTP(w, r)
	})
}

// isPreflight reports whether r is a CORS preflight request. Preflights
// carry no credentials by design, so they are answered without
// authentication.
func isPreflight(r *http.Request) bool {
	return r.Method == http.MethodOptions && r.Header.Get("Origin") != "" &&
		r.Header.Get("Access-Control-Request-Method") != ""
}

// answerPreflight answers a preflight for a route that allows methods.
func answerPreflight(w http.ResponseWriter, methods []string) {
	h := w.Header()
	h.Set("Access-Control-Allow-Methods", strings.Join(methods, ", "))
	h.Set("Access-Control-Allow-Headers", "Authorization, Content-Type")
	h.Set("Access-Control-Max-Age", corsMaxAge)
	w.WriteHeader(http.StatusNoContent)
}
