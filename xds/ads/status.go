package ads

import (
	"cmp"
	"slices"
	"time"

	"github.com/cryptomesh/cryptomesh/xds"
)

// StreamStatus is one connected stream as GET /api/v1/proxies lists it.
type StreamStatus struct {
	Node        string // "" until the first request
	Binding     string // endpoint:E or role:R
	SPIFFEID    string
	Kind        string // envoy, proxy, grpc; "" until the first request
	Credential  string // CredentialJoinToken or CredentialSVID
	Peer        string
	ConnectedAt time.Time
	Types       []TypeStatus // in xds.TypeURLs() order
}

// TypeStatus is a stream's state for one resource type.
type TypeStatus struct {
	Type     string // listener, route, cluster, endpoint, secret
	TypeURL  string
	Wildcard bool
	Names    []string // subscribed names when not a wildcard
	Requests int
	// SentVersion is the latest version sent; AckedVersion the latest
	// the node accepted.
	SentVersion  string
	AckedVersion string
	AckedAt      time.Time
	Nacks        int
	LastNack     *Nack
}

// Streams lists the connected streams, by node then connection time.
func (s *Server) Streams() []StreamStatus {
	s.mu.Lock()
	streams := make([]*stream, 0, len(s.streams))
	for st := range s.streams {
		streams = append(streams, st)
	}
	s.mu.Unlock()
	out := make([]StreamStatus, 0, len(streams))
	for _, st := range streams {
		out = append(out, st.status())
	}
	slices.SortFunc(out, func(a, b StreamStatus) int {
		return cmp.Or(cmp.Compare(a.Node, b.Node), a.ConnectedAt.Compare(b.ConnectedAt), cmp.Compare(a.Peer, b.Peer))
	})
	return out
}

func (st *stream) status() StreamStatus {
	st.mu.Lock()
	defer st.mu.Unlock()
	ss := StreamStatus{
		Binding: st.cred.Binding.String(), SPIFFEID: st.cred.SPIFFEID.String(), Credential: st.cred.via,
		Peer: st.peer, ConnectedAt: st.since,
	}
	if st.node != nil {
		ss.Node, ss.Kind = st.node.id, st.node.kind.String()
	}
	for _, typeURL := range xds.TypeURLs() {
		ts := st.types[typeURL]
		if ts == nil {
			continue
		}
		t := TypeStatus{
			Type: typeLabel(typeURL), TypeURL: typeURL, Wildcard: ts.wildcard, Names: slices.Clone(ts.names),
			Requests: ts.requests, AckedAt: ts.ackedAt, Nacks: ts.nacks,
		}
		if ts.last != nil {
			t.SentVersion = ts.last.version
		}
		if ts.acked != nil {
			t.AckedVersion = ts.acked.version
		}
		if ts.lastNack != nil {
			n := *ts.lastNack
			t.LastNack = &n
		}
		ss.Types = append(ss.Types, t)
	}
	return ss
}
