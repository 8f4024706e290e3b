package api

import (
	"context"
	"log/slog"
	"net/http"
	"path"
	"runtime/debug"
	"strings"
	"time"
)

// requestInfo is filled in while a request is served and read by the
// outermost middleware for the request log and metrics.
type requestInfo struct {
	route     string // the route pattern; "" until a route matched
	principal string // the caller's Principal.Name; never a credential
}

type requestInfoKey struct{}

func infoOf(ctx context.Context) *requestInfo {
	info, _ := ctx.Value(requestInfoKey{}).(*requestInfo)
	return info
}

// routeOf returns the pattern of the route serving r, for messages.
func routeOf(r *http.Request) string {
	if info := infoOf(r.Context()); info != nil && info.route != "" {
		return info.route
	}
	return unmatchedRoute
}

// statusWriter records what a handler wrote.
type statusWriter struct {
	http.ResponseWriter
	status int
	bytes  int64
}

func (w *statusWriter) WriteHeader(code int) {
	if w.status == 0 {
		w.status = code
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusWriter) Write(p []byte) (int, error) {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	n, err := w.ResponseWriter.Write(p)
	w.bytes += int64(n)
	return n, err
}

// Unwrap lets http.ResponseController reach the underlying writer.
func (w *statusWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// instrument is the outermost layer: it recovers panics into a 500,
// counts and times every request by route pattern, and writes the request
// log. Logs carry method, route, path, status, duration, bytes and the
// principal's name; never headers (Authorization) or bodies.
func (s *Server) instrument(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		info := &requestInfo{}
		r = r.WithContext(context.WithValue(r.Context(), requestInfoKey{}, info))
		sw := &statusWriter{ResponseWriter: w}
		defer func() {
			v := recover()
			if v == http.ErrAbortHandler {
				panic(v)
			}
			abort := false
			if v != nil {
				s.log.ErrorContext(r.Context(), "panic serving request",
					"method", r.Method, "route", routeOf(r), "panic", v, "stack", string(debug.Stack()))
				// A handler that had started its answer cannot be turned
				// into an error any more; the connection is cut below so
				// the client cannot take a truncated answer as complete.
				abort = sw.status != 0
				if !abort {
					s.writeError(sw, r, errorf(http.StatusInternalServerError, "internal server error"))
				}
			}
			status := sw.status
			switch {
			case v != nil:
				status = http.StatusInternalServerError
			case status == 0:
				status = http.StatusOK
			}
			route := routeOf(r)
			d := time.Since(start)
			s.metrics.observe(route, r.Method, status, d)
			level := slog.LevelInfo
			switch {
			case status >= 500:
				level = slog.LevelError
			case status < 400 && (route == "/healthz" || route == "/readyz" || route == "/metrics"):
				// Probes and scrapes arrive every few seconds forever.
				level = slog.LevelDebug
			}
			s.log.LogAttrs(r.Context(), level, "request",
				slog.String("method", r.Method),
				slog.String("route", route),
				slog.String("path", r.URL.Path),
				slog.Int("status", status),
				slog.Duration("duration", d),
				slog.Int64("bytes", sw.bytes),
				slog.String("principal", info.principal),
			)
			if abort {
				panic(http.ErrAbortHandler)
			}
		}()
		next.ServeHTTP(sw, r)
	})
}

// cleanPaths answers paths that ServeMux would redirect (`//`, `/./`,
// `/../`) with a 404 instead: the API never redirects (SPEC §2), and a
// redirect would also turn a POST into a GET in many clients.
func (s *Server) cleanPaths(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if p := r.URL.Path; p != cleanPath(p) {
			s.notFound(w, r)
			return
		}
		next.ServeHTTP(w, r)
	})
}

// cleanPath is the canonical form of p as ServeMux computes it: rooted,
// cleaned, with a trailing slash kept.
func cleanPath(p string) string {
	if p == "" {
		return "/"
	}
	if p[0] != '/' {
		p = "/" + p
	}
	np := path.Clean(p)
	if strings.HasSuffix(p, "/") && np != "/" {
		np += "/"
	}
	return np
}
