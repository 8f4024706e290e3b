package api

import (
	"errors"
	"net/http"
	"strconv"
	"time"
)

// Proxy is one connected xDS stream as GET /api/v1/proxies lists it (SPEC
// §6). A node with several streams (grpc-go opens one per target, and one
// more for a server) appears once per stream.
type Proxy struct {
	Node           string      `json:"node"`
	Binding        string      `json:"binding"`
	SPIFFEID       string      `json:"spiffe_id"`
	Kind           string      `json:"kind"`
	Credential     string      `json:"credential"`
	Peer           string      `json:"peer"`
	ConnectedSince time.Time   `json:"connected_since"`
	Types          []ProxyType `json:"types"`
}

// ProxyType is a stream's state for one resource type.
type ProxyType struct {
	Type         string     `json:"type"`
	TypeURL      string     `json:"type_url"`
	Wildcard     bool       `json:"wildcard"`
	Names        []string   `json:"names"`
	Requests     int        `json:"requests"`
	SentVersion  string     `json:"sent_version"`
	AckedVersion string     `json:"acked_version"`
	AckedAt      *time.Time `json:"acked_at"`
	Nacks        int        `json:"nacks"`
	LastNack     *ProxyNack `json:"last_nack"`
}

// ProxyNack is the last response a stream refused.
type ProxyNack struct {
	Version string    `json:"version"`
	Error   string    `json:"error"`
	At      time.Time `json:"at"`
}

// ProxySource lists the connected xDS streams (the ADS server).
type ProxySource interface {
	Proxies() []Proxy
}

// WithProxies sets what GET /api/v1/proxies lists; without it the list is
// empty (no xDS server in this process).
func WithProxies(src ProxySource) Option {
	return func(c *config) {
		if src == nil {
			c.errs = append(c.errs, errors.New("WithProxies: nil source"))
			return
		}
		c.proxies = src
	}
}

// getProxies lists the connected xDS streams.
func (s *Server) getProxies(w http.ResponseWriter, r *http.Request) error {
	if _, err := queryOf(r); err != nil {
		return err
	}
	list := []Proxy{}
	if s.proxies != nil {
		list = append(list, s.proxies.Proxies()...)
	}
	for i := range list {
		if list[i].Types == nil {
			list[i].Types = []ProxyType{}
		}
		for j := range list[i].Types {
			if list[i].Types[j].Names == nil {
				list[i].Types[j].Names = []string{}
			}
		}
	}
	w.Header().Set("X-Total-Count", strconv.Itoa(len(list)))
	return writeJSON(w, http.StatusOK, list)
}
