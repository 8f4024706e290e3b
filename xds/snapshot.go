package xds

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"slices"
	"strings"
	"sync"

	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
)

// Resource is one validated xDS resource, marshalled once. It is immutable:
// the same *Resource is handed to every node whose configuration contains
// it, so an ADS server can put Bytes on the wire for all of them (Any
// returns the wire form) and key a cross-revision cache by TypeURL, Name and
// Version. Neither Message nor Bytes may be modified.
type Resource struct {
	TypeURL string
	Name    string
	Message proto.Message
	// Bytes is the deterministic marshalling of Message.
	Bytes []byte
	// Version is a content hash of Bytes: equal content, equal version,
	// whichever node or revision built it.
	Version string

	// refs are the resources this one names (RDS route configurations,
	// EDS clusters, SDS secrets, clusters of routes), recorded by the
	// builder for the snapshot's reference check.
	refs []ref
}

type ref struct{ typeURL, name string }

// Any is the resource as it travels in a DiscoveryResponse, without
// marshalling it again.
func (r *Resource) Any() *anypb.Any { return &anypb.Any{TypeUrl: r.TypeURL, Value: r.Bytes} }

// deterministic is the only marshalling the package uses, both for
// resources and for messages packed in an Any: map order (RBAC policies,
// per-filter configs) must not change a resource's bytes, or its version
// would change with every build.
func deterministic() proto.MarshalOptions { return proto.MarshalOptions{Deterministic: true} }

// newResource validates m (and everything packed in it), marshals it once
// and hashes it. A resource that fails validation is an error naming it and
// is never returned.
func (c *checker) newResource(typeURL, name string, m proto.Message, refs ...ref) (*Resource, error) {
	b, err := c.marshalValid(m)
	if err != nil {
		return nil, fmt.Errorf("%s %q is invalid: %w", shortType(typeURL), name, err)
	}
	return assembledResource(typeURL, name, m, b, refs...), nil
}

// assembledResource is a resource whose validation and encoding the caller
// has done (by parts, for the outbound route configuration).
func assembledResource(typeURL, name string, m proto.Message, b []byte, refs ...ref) *Resource {
	return &Resource{TypeURL: typeURL, Name: name, Message: m, Bytes: b, Version: hashHex(b), refs: refs}
}

func hashHex(b []byte) string {
	sum := sha256.Sum256(b)
	// 128 bits: collisions are out of reach and versions stay short in
	// logs and in every DiscoveryResponse.
	return hex.EncodeToString(sum[:16])
}

func shortType(typeURL string) string {
	return typeURL[strings.LastIndexByte(typeURL, '.')+1:]
}

// TypeURLs lists the resource types a snapshot can hold, in the order in
// which Envoy wants them pushed (clusters and their endpoints before the
// listeners and routes that use them, secrets first of all).
func TypeURLs() []string {
	return []string{
		resourcev3.SecretType,
		resourcev3.ClusterType,
		resourcev3.EndpointType,
		resourcev3.ListenerType,
		resourcev3.RouteType,
	}
}

// Snapshot is the complete configuration of one node. Resources that nodes
// share are the same *Resource values in each of their snapshots.
type Snapshot struct {
	byType map[string][]*Resource // each sorted by name
}

// Resources returns the node's resources of one type, sorted by name.
func (s *Snapshot) Resources(typeURL string) []*Resource { return slices.Clone(s.byType[typeURL]) }

// Get returns the named resource, or nil.
func (s *Snapshot) Get(typeURL, name string) *Resource {
	list := s.byType[typeURL]
	i, ok := slices.BinarySearchFunc(list, name, func(r *Resource, n string) int { return strings.Compare(r.Name, n) })
	if !ok {
		return nil
	}
	return list[i]
}

// Version is the version of the node's set of resources of one type (state
// of the world): a hash of their names and versions, so it changes exactly
// when one of them changes, appears or goes.
func (s *Snapshot) Version(typeURL string) string {
	h := sha256.New()
	for _, r := range s.byType[typeURL] {
		h.Write([]byte(r.Name))
		h.Write([]byte{0})
		h.Write([]byte(r.Version))
		h.Write([]byte{0})
	}
	return hex.EncodeToString(h.Sum(nil)[:16])
}

// snapshotBuilder collects a node's resources, dropping repeats (the same
// cluster reached through several functions).
type snapshotBuilder struct {
	byType map[string]map[string]*Resource
}

func newSnapshotBuilder() *snapshotBuilder {
	return &snapshotBuilder{byType: map[string]map[string]*Resource{}}
}

func (b *snapshotBuilder) add(rs ...*Resource) error {
	for _, r := range rs {
		byName := b.byType[r.TypeURL]
		if byName == nil {
			byName = map[string]*Resource{}
			b.byType[r.TypeURL] = byName
		}
		if prev, ok := byName[r.Name]; ok && prev.Version != r.Version {
			return fmt.Errorf("two different %s resources named %q", shortType(r.TypeURL), r.Name)
		}
		byName[r.Name] = r
	}
	return nil
}

// build sorts the resources and checks that every name a resource refers
// to is in the snapshot. go-control-plane's Consistent() cannot be used for
// this: it does not follow the RDS names inside gRPC API listeners.
// skipSecrets leaves SDS references unchecked when the secrets come from
// elsewhere (a SPIRE agent, or credentials the caller did not pass).
func (b *snapshotBuilder) build(skipSecrets bool) (*Snapshot, error) {
	s := &Snapshot{byType: map[string][]*Resource{}}
	for typeURL, byName := range b.byType {
		list := make([]*Resource, 0, len(byName))
		for _, r := range byName {
			list = append(list, r)
		}
		slices.SortFunc(list, func(x, y *Resource) int { return strings.Compare(x.Name, y.Name) })
		s.byType[typeURL] = list
	}
	for _, typeURL := range TypeURLs() {
		for _, r := range s.byType[typeURL] {
			for _, rf := range r.refs {
				if skipSecrets && rf.typeURL == resourcev3.SecretType {
					continue
				}
				if _, ok := b.byType[rf.typeURL][rf.name]; !ok {
					return nil, fmt.Errorf("%s %q refers to %s %q, which is not in the snapshot", shortType(r.TypeURL), r.Name, shortType(rf.typeURL), rf.name)
				}
			}
		}
	}
	return s, nil
}

// memo builds each shared value once per Translator, however many nodes
// and goroutines ask for it. Entries are filled under their own sync.Once,
// so distinct resources are built concurrently.
type memo[V any] struct {
	mu      sync.Mutex
	entries map[string]*memoEntry[V]
}

type memoEntry[V any] struct {
	once sync.Once
	val  V
	err  error
}

func (m *memo[V]) get(key string, build func() (V, error)) (V, error) {
	m.mu.Lock()
	if m.entries == nil {
		m.entries = map[string]*memoEntry[V]{}
	}
	e := m.entries[key]
	if e == nil {
		e = &memoEntry[V]{}
		m.entries[key] = e
	}
	m.mu.Unlock()
	e.once.Do(func() { e.val, e.err = build() })
	return e.val, e.err
}
