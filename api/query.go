package api

import (
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"

	"github.com/cryptomesh/cryptomesh/registry"
)

// queryOf parses r's query string and returns its parameters, each given
// at most once and each one of allowed. A misspelt parameter
// (`?microservice=m1`) would otherwise silently widen a list or skip a
// cascade, so unknown parameters are 422, naming them. A query string that
// cannot be decoded is 400.
func queryOf(r *http.Request, allowed ...string) (map[string]string, error) {
	values, err := url.ParseQuery(r.URL.RawQuery)
	if err != nil {
		return nil, errorf(http.StatusBadRequest, "malformed query string: %v", err)
	}
	out := make(map[string]string, len(values))
	var errs []registry.FieldError
	for _, name := range sortedKeys(values) {
		switch {
		case !slices.Contains(allowed, name):
			msg := "unknown query parameter"
			if len(allowed) > 0 {
				msg += "; allowed: " + strings.Join(allowed, ", ")
			} else {
				msg += "; this route takes none"
			}
			errs = append(errs, registry.FieldError{Field: name, Message: msg})
		case len(values[name]) > 1:
			errs = append(errs, registry.FieldError{Field: name, Message: "given more than once"})
		default:
			out[name] = values[name][0]
		}
	}
	if len(errs) > 0 {
		return nil, invalidInput("invalid query parameters", errs...)
	}
	return out, nil
}

// parseListQuery reads ?limit, ?after and the kind's reference filters.
// A bad limit is 422, like every other value that parses but breaks a rule.
func parseListQuery(r *http.Request, k registry.Kind) (registry.ListOptions, error) {
	filters := registry.FilterFields(k)
	q, err := queryOf(r, append([]string{"limit", "after"}, filters...)...)
	if err != nil {
		return registry.ListOptions{}, err
	}
	opts := registry.ListOptions{Limit: registry.DefaultListLimit, After: q["after"]}
	var errs []registry.FieldError
	if s, ok := q["limit"]; ok {
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 || n > registry.MaxListLimit {
			errs = append(errs, registry.FieldError{Field: "limit",
				Message: fmt.Sprintf("%q is not a whole number between 1 and %d", s, registry.MaxListLimit)})
		} else {
			opts.Limit = n
		}
	}
	if a, ok := q["after"]; ok && a == "" {
		errs = append(errs, registry.FieldError{Field: "after", Message: "must be an id; leave it out for the first page"})
	}
	for _, name := range filters {
		v, ok := q[name]
		if !ok {
			continue
		}
		if !registry.ValidID(v) {
			errs = append(errs, registry.FieldError{Field: name, Message: fmt.Sprintf("%q is not a valid id", v)})
			continue
		}
		if opts.Filters == nil {
			opts.Filters = map[string]string{}
		}
		opts.Filters[name] = v
	}
	if len(errs) > 0 {
		return registry.ListOptions{}, invalidInput("invalid query parameters", errs...)
	}
	return opts, nil
}

// parseCascade reads ?cascade= of DELETE.
func parseCascade(r *http.Request) (bool, error) {
	q, err := queryOf(r, "cascade")
	if err != nil {
		return false, err
	}
	s, ok := q["cascade"]
	if !ok {
		return false, nil
	}
	switch strings.ToLower(s) {
	case "true", "1":
		return true, nil
	case "false", "0":
		return false, nil
	}
	return false, invalidInput("invalid query parameters",
		registry.FieldError{Field: "cascade", Message: fmt.Sprintf("%q is not true or false", s)})
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}
