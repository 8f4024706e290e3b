package api

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"
)

// writeJSON answers with v as JSON. The value is encoded before anything
// is written so that an encoding failure can still become a clean 500.
func writeJSON(w http.ResponseWriter, status int, v any) error {
	raw, err := json.Marshal(v)
	if err != nil {
		return fmt.Errorf("encode %T response: %w", v, err)
	}
	raw = append(raw, '\n')
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("Content-Length", strconv.Itoa(len(raw)))
	// Answers echo client input (ids, paths); never let a browser sniff
	// them into something executable.
	h.Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(status)
	// A failed write means the client went away; there is no one left to
	// tell, and the request log records the bytes that did go out.
	_, _ = w.Write(raw)
	return nil
}

// writeError answers with err in the error shape of SPEC §2. Server-side
// failures are logged with their cause, which the client never sees.
func (s *Server) writeError(w http.ResponseWriter, r *http.Request, err error) {
	he := toHTTP(err)
	if he.status >= 500 {
		s.log.ErrorContext(r.Context(), "request failed",
			"method", r.Method, "route", routeOf(r), "status", he.status, "error", err)
	}
	if he.status == http.StatusUnauthorized {
		w.Header().Set("WWW-Authenticate", `Bearer realm="cryptomesh"`)
	}
	if werr := writeJSON(w, he.status, errorBody{Detail: he.detail()}); werr != nil {
		// errorBody always encodes; this would be a bug worth seeing.
		s.log.ErrorContext(r.Context(), "encode error response", "error", werr)
		w.WriteHeader(http.StatusInternalServerError)
	}
}
