package ads

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io"
	"log/slog"
	"slices"
	"strconv"
	"sync"
	"time"

	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/cryptomesh/cryptomesh/xds"
)

// stream is one ADS stream. Its goroutine alone changes it; the mutex is
// for the status readers.
type stream struct {
	srv    *Server
	id     uint64
	cancel context.CancelCauseFunc
	cred   credential
	peer   string
	since  time.Time
	log    *slog.Logger

	mu    sync.Mutex
	node  *nodeIdentity // nil until the first request
	types map[string]*typeState
	nonce uint64
	creds *issued // Envoy and proxy nodes with a signer: the stream's own SVID

	// snap caches the snapshot of the generation snapGen for this stream.
	snap    *xds.Snapshot
	snapGen *generation
	snapFor *issued
}

// typeState is a stream's subscription to one resource type.
type typeState struct {
	wildcard bool
	names    []string // sorted; empty when wildcard
	requests int
	last     *sent // the latest response; requests naming an older nonce are stale
	acked    *sent
	ackedAt  time.Time
	nacks    int
	lastNack *Nack
}

// sent is a response as the stream remembers it.
type sent struct {
	nonce   string
	version string
	gen     *generation
	// push: sent because the registry changed, not because the node
	// asked; its ACK ends a convergence.
	push bool
	// answered: the node has ACKed or NACKed it.
	answered bool
}

// StreamAggregatedResources serves one SotW ADS stream.
func (s *Server) StreamAggregatedResources(ss discoveryv3.AggregatedDiscoveryService_StreamAggregatedResourcesServer) error {
	cred, err := s.authenticate(ss.Context())
	if err != nil {
		s.log.Info("xDS: stream refused", "peer", peerAddr(ss.Context()), "error", err)
		return err
	}
	ctx, cancel := context.WithCancelCause(ss.Context())
	defer cancel(nil)
	st := &stream{
		srv: s, cancel: cancel, cred: cred, peer: peerAddr(ss.Context()), since: s.now(),
		types: map[string]*typeState{},
	}
	st.log = s.log.With("binding", cred.Binding.String(), "peer", st.peer)
	if !s.add(st) {
		return status.Error(codes.Unavailable, "the control plane is shutting down")
	}
	defer s.remove(st)

	reqs := make(chan *discoveryv3.DiscoveryRequest)
	go func() {
		for {
			req, err := ss.Recv()
			if err != nil {
				cancel(err)
				return
			}
			select {
			case reqs <- req:
			case <-ctx.Done():
				return
			}
		}
	}()

	select {
	case <-s.started:
	case <-ctx.Done():
		return endOf(ctx)
	}
	g := s.gen.Load()
	renew := time.NewTimer(time.Hour)
	renew.Stop()
	defer renew.Stop()
	for {
		var err error
		select {
		case <-ctx.Done():
			return endOf(ctx)
		case req := <-reqs:
			err = st.handle(ss, g, req)
		case <-g.next:
			g = s.gen.Load()
			err = st.pushAll(ss, g)
		case <-renew.C:
			err = st.pushAll(ss, g)
		}
		if err != nil {
			st.log.Info("xDS: stream ended", "error", err)
			return err
		}
		if at := st.renewAt(); !at.IsZero() {
			renew.Reset(time.Until(at))
		}
	}
}

// endOf is what a stream whose context ended returns: nil when the node
// closed it, the cause otherwise.
func endOf(ctx context.Context) error {
	cause := context.Cause(ctx)
	switch {
	case errors.Is(cause, io.EOF):
		return nil
	case status.Code(cause) != codes.Unknown:
		return cause
	}
	return status.FromContextError(ctx.Err()).Err()
}

func peerAddr(ctx context.Context) string {
	if p, ok := peer.FromContext(ctx); ok && p.Addr != nil {
		return p.Addr.String()
	}
	return ""
}

// handle processes one request: the node check, then ACK or NACK of the
// response it names, then the subscription, and answers if the node lacks
// what it asked for.
func (st *stream) handle(ss discoveryv3.AggregatedDiscoveryService_StreamAggregatedResourcesServer, g *generation, req *discoveryv3.DiscoveryRequest) error {
	first := st.node == nil
	ni, err := checkNode(st.cred, st.node, req.GetNode())
	if err != nil {
		return err
	}
	if first {
		st.mu.Lock()
		st.node = ni
		st.mu.Unlock()
		st.log = st.log.With("node", ni.id, "kind", ni.kind.String())
		st.srv.nodeJoined(st, ni)
		st.log.Info("xDS: stream open", "credential", st.cred.via, "spiffe_id", st.cred.SPIFFEID.String())
	}
	typeURL := req.GetTypeUrl()
	if !slices.Contains(xds.TypeURLs(), typeURL) {
		st.log.Debug("xDS: request for a type that is not served", "type_url", typeURL)
		return nil
	}
	st.mu.Lock()
	ts := st.types[typeURL]
	if ts == nil {
		ts = &typeState{}
		st.types[typeURL] = ts
	}
	ts.requests++
	st.mu.Unlock()

	if nonce := req.GetResponseNonce(); nonce != "" {
		if ts.last == nil || nonce != ts.last.nonce {
			// The xDS protocol: a request naming an older response is
			// stale and ignored; the node will answer the newer one.
			st.log.Debug("xDS: stale nonce ignored", "type_url", typeURL, "nonce", nonce)
			return nil
		}
		switch detail := req.GetErrorDetail(); {
		case ts.last.answered:
			// A further request about the same response (a new
			// subscription, or a client repeating itself): the response
			// was accepted or rejected once, and is not counted again.
		case detail != nil:
			st.nack(typeURL, ts, detail.GetMessage())
		default:
			st.ack(typeURL, ts)
		}
	}
	changed := st.subscribe(typeURL, ts, req.GetResourceNames())
	version, res, ok := st.view(g, typeURL, ts)
	if !ok {
		return nil
	}
	if st.srv.isNacked(st.node.id, typeURL, version) {
		return nil
	}
	if ts.last != nil && ts.last.version == version && !changed {
		return nil // the node has it: an ACK, or a NACK of an older version
	}
	return st.send(ss, g, typeURL, ts, version, res, false)
}

// pushAll sends every subscribed type whose content changed, in the order
// Envoy wants (secrets, clusters, endpoints, listeners, routes).
func (st *stream) pushAll(ss discoveryv3.AggregatedDiscoveryService_StreamAggregatedResourcesServer, g *generation) error {
	if st.node == nil {
		return nil
	}
	for _, typeURL := range xds.TypeURLs() {
		ts := st.types[typeURL]
		if ts == nil {
			continue
		}
		version, res, ok := st.view(g, typeURL, ts)
		if !ok || (ts.last != nil && ts.last.version == version) || st.srv.isNacked(st.node.id, typeURL, version) {
			continue
		}
		if err := st.send(ss, g, typeURL, ts, version, res, true); err != nil {
			return err
		}
	}
	return nil
}

func (st *stream) ack(typeURL string, ts *typeState) {
	now := st.srv.now()
	st.mu.Lock()
	ts.acked, ts.ackedAt = ts.last, now
	ts.last.answered = true
	st.mu.Unlock()
	if ts.last.push && !ts.last.gen.changedAt.IsZero() {
		st.srv.metrics.convergence.Observe(time.Since(ts.last.gen.changedAt).Seconds())
		ts.last.push = false // one observation per response
	}
	st.log.Debug("xDS: ACK", "type_url", typeURL, "version", ts.last.version)
}

func (st *stream) nack(typeURL string, ts *typeState, msg string) {
	n := &Nack{Version: ts.last.version, Error: msg, At: st.srv.now()}
	st.mu.Lock()
	ts.nacks++
	ts.lastNack = n
	ts.last.answered = true
	st.mu.Unlock()
	st.srv.recordNack(st.node.id, typeURL, n)
	st.srv.metrics.rejects.WithLabelValues(typeLabel(typeURL)).Inc()
	st.log.Warn("xDS: NACK; the version is not sent to this node again", "type_url", typeURL, "version", n.Version, "error", msg)
}

// subscribe records the names a request asks for and reports whether the
// subscription changed. "*", and no name at all for listeners and
// clusters, is a wildcard (the xDS protocol's legacy rule, which Envoy
// relies on); no name for the other types is nothing.
func (st *stream) subscribe(typeURL string, ts *typeState, names []string) bool {
	wildcard := slices.Contains(names, "*") || (len(names) == 0 && (typeURL == resourcev3.ListenerType || typeURL == resourcev3.ClusterType))
	var sorted []string
	if !wildcard {
		sorted = slices.Clone(names)
		slices.Sort(sorted)
		sorted = slices.Compact(sorted)
	}
	st.mu.Lock()
	defer st.mu.Unlock()
	changed := ts.wildcard != wildcard || !slices.Equal(ts.names, sorted)
	ts.wildcard, ts.names = wildcard, sorted
	return changed
}

// view is what the stream's subscription to typeURL selects from its
// snapshot of g, and the version of that selection: a hash of the names
// and content hashes, so equal content is an equal version.
func (st *stream) view(g *generation, typeURL string, ts *typeState) (string, []*xds.Resource, bool) {
	snap, ok := st.snapshot(g)
	if !ok {
		return "", nil, false
	}
	all := snap.Resources(typeURL)
	var res []*xds.Resource
	if ts.wildcard {
		res = all
	} else {
		for _, name := range ts.names {
			if r := snap.Get(typeURL, name); r != nil {
				res = append(res, r)
			}
		}
	}
	if st.srv.hook != nil {
		n := st.translationNode()
		for i, r := range res {
			res[i] = st.srv.hook(n, r)
		}
	}
	h := sha256.New()
	for _, r := range res {
		h.Write([]byte(r.Name))
		h.Write([]byte{0})
		h.Write([]byte(r.Version))
		h.Write([]byte{0})
	}
	return hex.EncodeToString(h.Sum(nil)[:16]), res, true
}

// snapshot is the stream's configuration in generation g. A node that
// cannot be translated keeps what it has.
func (st *stream) snapshot(g *generation) (*xds.Snapshot, bool) {
	creds := st.credentials(g)
	if st.snapGen == g && st.snapFor == creds && st.snap != nil {
		return st.snap, true
	}
	n := st.translationNode()
	if creds != nil {
		n.Credentials = creds.creds
	}
	snap, err := g.snapshot(n)
	if err != nil {
		st.log.Error("xDS: node not translated; it keeps its configuration", "revision", g.rev, "error", err)
		return nil, false
	}
	st.snap, st.snapGen, st.snapFor = snap, g, creds
	return snap, true
}

// translationNode is the node as the translation sees it, without
// credentials.
func (st *stream) translationNode() xds.Node {
	return xds.Node{ID: st.node.id, Kind: st.node.kind, Binding: st.cred.binding(), OutboundAddress: st.node.outbound}
}

// sharedNode is the stream's node for warming shared snapshots; false for
// streams whose snapshots are their own or that have no node yet.
func (st *stream) sharedNode() (xds.Node, bool) {
	st.mu.Lock()
	defer st.mu.Unlock()
	if st.node == nil || (st.node.kind != xds.GRPC && st.srv.signer != nil) {
		return xds.Node{}, false
	}
	return xds.Node{ID: st.node.id, Kind: st.node.kind, Binding: st.cred.binding(), OutboundAddress: st.node.outbound}, true
}

func (st *stream) send(ss discoveryv3.AggregatedDiscoveryService_StreamAggregatedResourcesServer, g *generation, typeURL string, ts *typeState, version string, res []*xds.Resource, push bool) error {
	st.nonce++
	nonce := strconv.FormatUint(st.nonce, 10)
	anys := make([]*anypb.Any, len(res))
	for i, r := range res {
		anys[i] = r.Any() // the bytes marshalled once, shared by every node
	}
	if err := ss.Send(&discoveryv3.DiscoveryResponse{VersionInfo: version, Resources: anys, TypeUrl: typeURL, Nonce: nonce}); err != nil {
		return err
	}
	st.mu.Lock()
	ts.last = &sent{nonce: nonce, version: version, gen: g, push: push}
	st.mu.Unlock()
	st.srv.metrics.pushes.WithLabelValues(typeLabel(typeURL)).Inc()
	st.log.Debug("xDS: sent", "type_url", typeURL, "version", version, "resources", len(res), "nonce", nonce, "push", push)
	return nil
}

// add registers a stream; false once the server is closed.
func (s *Server) add(st *stream) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return false
	}
	s.nextID++
	st.id = s.nextID
	s.streams[st] = struct{}{}
	return true
}

func (s *Server) remove(st *stream) {
	s.mu.Lock()
	delete(s.streams, st)
	s.mu.Unlock()
	if st.node != nil {
		s.nodeLeft(st, st.node)
		st.log.Info("xDS: stream closed")
	}
}
