package idreg

import (
	"fmt"

	"github.com/cryptomesh/cryptomesh/identity"
	"github.com/cryptomesh/cryptomesh/registry"
)

// Builtin is the identity stack of a control plane with the built-in CA:
// the CA in a directory, its serving SVID, the join-token records in the
// registry, the token authority and the node authenticator, wired as the
// API and the xDS server use them.
type Builtin struct {
	Dir     string
	CA      *identity.CA
	Serving *identity.ServingSource
	Records *Store
	Tokens  *identity.TokenAuthority
	Nodes   *identity.Authenticator
}

// NewBuiltin loads or creates the CA in dir and builds the stack over
// reg. sans are the serving certificate's DNS names and IPs (nil for the
// defaults); opts go to every identity constructor.
func NewBuiltin(reg *registry.Registry, dir string, sans []string, opts ...identity.Option) (*Builtin, error) {
	records, err := New(reg)
	if err != nil {
		return nil, err
	}
	ca, err := identity.LoadOrCreateCA(dir, opts...)
	if err != nil {
		return nil, fmt.Errorf("CA in %s: %w", dir, err)
	}
	serving, err := ca.ServingSource(sans)
	if err != nil {
		return nil, fmt.Errorf("serving SVID: %w", err)
	}
	tokens, err := identity.NewTokenAuthority(dir, records, opts...)
	if err != nil {
		return nil, fmt.Errorf("join-token key in %s: %w", dir, err)
	}
	nodes, err := identity.NewAuthenticator(tokens, ca, records, opts...)
	if err != nil {
		return nil, fmt.Errorf("node authenticator: %w", err)
	}
	return &Builtin{Dir: dir, CA: ca, Serving: serving, Records: records, Tokens: tokens, Nodes: nodes}, nil
}
