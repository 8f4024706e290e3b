package api

import (
	"net/http"
	"net/url"
	"strconv"

	"github.com/cryptomesh/cryptomesh/registry"
)

// The entity handlers of SPEC §2, one set per kind. Each passes the
// request's context to the registry, so a client that goes away stops
// waiting on the store.

// listEntities serves GET /<kind>: one page in id order (history kinds in
// commit order), filtered by reference fields, with the total number of
// matches in X-Total-Count.
func (s *Server) listEntities(k registry.Kind) handlerFunc {
	return func(w http.ResponseWriter, r *http.Request) error {
		opts, err := parseListQuery(r, k)
		if err != nil {
			return err
		}
		items, total, err := s.reg.View().List(k, opts)
		if err != nil {
			return err
		}
		w.Header().Set("X-Total-Count", strconv.Itoa(total))
		return writeJSON(w, http.StatusOK, items)
	}
}

// createEntity serves POST /<kind>: 201 with the stored entity and its
// URL in Location.
func (s *Server) createEntity(k registry.Kind) handlerFunc {
	return func(w http.ResponseWriter, r *http.Request) error {
		if _, err := queryOf(r); err != nil {
			return err
		}
		body, err := s.readObject(w, r)
		if err != nil {
			return err
		}
		res, err := s.reg.Do(r.Context(), registry.Op{Type: registry.OpCreate, Kind: k, Body: body})
		if err != nil {
			return err
		}
		w.Header().Set("Location", apiPrefix+"/"+k.Route()+"/"+url.PathEscape(res[0].ID))
		return writeJSON(w, http.StatusCreated, res[0].Value)
	}
}

// getEntity serves GET /<kind>/{id}.
func (s *Server) getEntity(k registry.Kind) handlerFunc {
	return func(w http.ResponseWriter, r *http.Request) error {
		if _, err := queryOf(r); err != nil {
			return err
		}
		v, err := s.reg.View().Get(k, r.PathValue("id"))
		if err != nil {
			return err
		}
		return writeJSON(w, http.StatusOK, v)
	}
}

// updateEntity serves PUT /<kind>/{id}, a partial update: given fields
// replace stored ones, resources merge field by field, null leaves a
// field as it is.
func (s *Server) updateEntity(k registry.Kind) handlerFunc {
	return func(w http.ResponseWriter, r *http.Request) error {
		if _, err := queryOf(r); err != nil {
			return err
		}
		id := r.PathValue("id")
		// An id that cannot exist is answered before the body is read, so
		// a PUT to a mistyped URL says so rather than complain about the body.
		if _, err := s.reg.View().Get(k, id); err != nil {
			return err
		}
		body, err := s.readObject(w, r)
		if err != nil {
			return err
		}
		res, err := s.reg.Do(r.Context(), registry.Op{Type: registry.OpUpdate, Kind: k, ID: id, Body: body})
		if err != nil {
			return err
		}
		return writeJSON(w, http.StatusOK, res[0].Value)
	}
}

// deleteEntity serves DELETE /<kind>/{id}[?cascade=true]: 204 with an
// empty body, or 409 listing the entities that still refer to it.
func (s *Server) deleteEntity(k registry.Kind) handlerFunc {
	return func(w http.ResponseWriter, r *http.Request) error {
		cascade, err := parseCascade(r)
		if err != nil {
			return err
		}
		_, err = s.reg.Do(r.Context(), registry.Op{Type: registry.OpDelete, Kind: k, ID: r.PathValue("id"), Cascade: cascade})
		if err != nil {
			return err
		}
		w.WriteHeader(http.StatusNoContent)
		return nil
	}
}

// latestState serves GET /endpoints/{id}/state and /functions/{id}/state:
// the last committed state of an existing owner. A missing owner and an
// owner without any state yet are both 404, with different messages.
func (s *Server) latestState(owner, history registry.Kind) handlerFunc {
	return func(w http.ResponseWriter, r *http.Request) error {
		if _, err := queryOf(r); err != nil {
			return err
		}
		id := r.PathValue("id")
		view := s.reg.View()
		if _, err := view.Get(owner, id); err != nil {
			return err
		}
		v, err := view.Latest(history, id)
		if err != nil {
			return err
		}
		return writeJSON(w, http.StatusOK, v)
	}
}
