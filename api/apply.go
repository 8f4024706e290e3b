package api

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"strconv"
	"strings"

	"github.com/cryptomesh/cryptomesh/registry"
	"github.com/cryptomesh/cryptomesh/registry/mesh"
)

// POST /api/v1/apply and GET /api/v1/export (SPEC §2, §3): the whole ML
// system as one mesh document. Apply is all or nothing: the document is
// parsed, every entity checked and resolved in one registry write, and
// either all of it commits in one durable record or nothing does. The
// document rules (sections, paths, lines, implied roles) live in package
// mesh; this file only speaks HTTP.

// DefaultMaxApplyBytes is the body limit of POST /api/v1/apply (SPEC §2).
const DefaultMaxApplyBytes = 64 << 20

// documentFormat maps a request's Content-Type to a document format: JSON
// or YAML (under any of the names YAML goes by). Anything else is 415.
func documentFormat(ct string) (mesh.Format, error) {
	const want = "send application/json or application/yaml"
	if ct == "" {
		return 0, errorf(http.StatusUnsupportedMediaType, "missing Content-Type; %s", want)
	}
	mt, params, err := mime.ParseMediaType(ct)
	if err != nil {
		return 0, errorf(http.StatusUnsupportedMediaType, "malformed Content-Type %q; %s", ct, want)
	}
	if cs, ok := params["charset"]; ok && !strings.EqualFold(cs, "utf-8") {
		return 0, errorf(http.StatusUnsupportedMediaType, "unsupported charset %q; mesh documents are UTF-8", cs)
	}
	switch mt {
	case "application/json":
		return mesh.JSON, nil
	case "application/yaml", "application/x-yaml", "text/yaml":
		return mesh.YAML, nil
	}
	return 0, errorf(http.StatusUnsupportedMediaType, "unsupported Content-Type %q; %s", mt, want)
}

// parseBool reads a boolean query parameter; absent is false.
func parseBool(q map[string]string, name string) (bool, error) {
	s, ok := q[name]
	if !ok {
		return false, nil
	}
	if b, err := strconv.ParseBool(s); err == nil && s != "" {
		return b, nil
	}
	return false, invalidInput("invalid query parameters",
		registry.FieldError{Field: name, Message: fmt.Sprintf("%q is not true or false", s)})
}

// postApply serves POST /api/v1/apply[?dry_run=true]: 200 with the
// report of every entity (created, updated, unchanged; implied roles with
// their warnings), or the document's errors, each at its path and line.
func (s *Server) postApply(w http.ResponseWriter, r *http.Request) error {
	q, err := queryOf(r, "dry_run")
	if err != nil {
		return err
	}
	dryRun, err := parseBool(q, "dry_run")
	if err != nil {
		return err
	}
	format, err := documentFormat(r.Header.Get("Content-Type"))
	if err != nil {
		return err
	}
	raw, err := s.readLimited(w, r, s.maxApply)
	if err != nil {
		return err
	}
	if len(bytes.TrimSpace(raw)) == 0 {
		return errorf(http.StatusBadRequest, "the request body is empty; send a mesh document")
	}
	doc, err := mesh.Parse(raw, format)
	if err != nil {
		return err
	}
	rep, err := mesh.Apply(r.Context(), s.reg, doc, dryRun)
	if err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, rep)
}

// readLimited reads a whole body of at most limit bytes: 413 beyond it,
// whether the client declared the length or streams the body chunked.
func (s *Server) readLimited(w http.ResponseWriter, r *http.Request, limit int64) ([]byte, error) {
	if r.ContentLength > limit {
		return nil, tooLarge(limit)
	}
	raw, err := io.ReadAll(http.MaxBytesReader(w, r.Body, limit))
	if err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			return nil, tooLarge(limit)
		}
		return nil, &httpError{status: http.StatusBadRequest, message: "the request body could not be read", cause: err}
	}
	return raw, nil
}

// getExport serves GET /api/v1/export: the registry as a YAML mesh
// document (sorted keys, no server-set fields, no history) that applies
// back to the same state. X-Registry-Revision names the revision it shows.
func (s *Server) getExport(w http.ResponseWriter, r *http.Request) error {
	if _, err := queryOf(r); err != nil {
		return err
	}
	view := s.reg.View()
	out, err := mesh.Export(view)
	if err != nil {
		return fmt.Errorf("export revision %d: %w", view.Revision(), err)
	}
	h := w.Header()
	h.Set("Content-Type", "application/yaml")
	h.Set("Content-Length", strconv.Itoa(len(out)))
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("X-Registry-Revision", strconv.FormatUint(view.Revision(), 10))
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write(out)
	return nil
}
