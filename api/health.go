package api

import (
	"net/http"

	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// readinessCheck is one component /readyz asks.
type readinessCheck struct {
	name  string
	check func() error
}

type healthBody struct {
	Status string `json:"status"`
	// Components maps each checked component to "ok" or what is wrong.
	Components map[string]string `json:"components,omitempty"`
}

// healthz answers as long as the process serves HTTP at all.
func (s *Server) healthz(w http.ResponseWriter, r *http.Request) error {
	if _, err := queryOf(r); err != nil {
		return err
	}
	return writeJSON(w, http.StatusOK, healthBody{Status: "ok"})
}

// readyz answers 200 when the registry accepts writes and every component
// registered with WithReadiness is serving, else 503 naming what is not.
// The registry exists only once its store has been loaded, so "loaded" is
// implied; a failed store is what can still go wrong.
func (s *Server) readyz(w http.ResponseWriter, r *http.Request) error {
	if _, err := queryOf(r); err != nil {
		return err
	}
	body := healthBody{Status: "ok", Components: map[string]string{"registry": "ok"}}
	if err := s.reg.Err(); err != nil {
		body.Components["registry"] = err.Error()
		body.Status = "unavailable"
	}
	for _, c := range s.readiness {
		body.Components[c.name] = "ok"
		if err := c.check(); err != nil {
			body.Components[c.name] = err.Error()
			body.Status = "unavailable"
		}
	}
	status := http.StatusOK
	if body.Status != "ok" {
		status = http.StatusServiceUnavailable
	}
	return writeJSON(w, status, body)
}

// metricsHandler serves the injected Gatherer, never the global registry.
func (s *Server) metricsHandler() func(http.ResponseWriter, *http.Request) error {
	h := promhttp.HandlerFor(s.gatherer, promhttp.HandlerOpts{
		ErrorHandling: promhttp.ContinueOnError,
		ErrorLog:      promLogger{s},
	})
	return func(w http.ResponseWriter, r *http.Request) error {
		h.ServeHTTP(w, r)
		return nil
	}
}

// promLogger sends promhttp's collection errors to the server's logger.
type promLogger struct{ s *Server }

func (l promLogger) Println(v ...any) {
	l.s.log.Error("collect metrics", "error", v)
}
