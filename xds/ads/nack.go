package ads

import "time"

// Nack is a response a node refused.
type Nack struct {
	// Version is the rejected version (a NACK's version_info is the last
	// accepted one; the rejected one is known from the nonce).
	Version string
	Error   string
	At      time.Time
}

// nackMemory bounds how many rejected versions are remembered per node and
// type: a node rejects the versions of successive changes, and only recent
// ones can come back.
const nackMemory = 16

// nodeState is what the server keeps about a node while it has streams:
// the versions it rejected, so that none is sent to it again on any of its
// streams (go-control-plane's cache would re-send it at once, forever).
type nodeState struct {
	streams int
	nacked  map[string][]string // type URL → rejected versions, oldest first
}

func (s *Server) nodeJoined(st *stream, ni *nodeIdentity) {
	s.metrics.streams.WithLabelValues(ni.kind.String()).Inc()
	s.mu.Lock()
	defer s.mu.Unlock()
	ns := s.nodes[ni.id]
	if ns == nil {
		ns = &nodeState{nacked: map[string][]string{}}
		s.nodes[ni.id] = ns
	}
	ns.streams++
}

// nodeLeft forgets a node's rejections with its last stream: a node that
// comes back may have been fixed, and would reject a bad version once more
// at most, never in a loop.
func (s *Server) nodeLeft(st *stream, ni *nodeIdentity) {
	s.metrics.streams.WithLabelValues(ni.kind.String()).Dec()
	s.mu.Lock()
	defer s.mu.Unlock()
	if ns := s.nodes[ni.id]; ns != nil {
		ns.streams--
		if ns.streams <= 0 {
			delete(s.nodes, ni.id)
		}
	}
}

func (s *Server) recordNack(node, typeURL string, n *Nack) {
	s.mu.Lock()
	defer s.mu.Unlock()
	ns := s.nodes[node]
	if ns == nil {
		return
	}
	list := ns.nacked[typeURL]
	for _, v := range list {
		if v == n.Version {
			return
		}
	}
	list = append(list, n.Version)
	if len(list) > nackMemory {
		list = list[len(list)-nackMemory:]
	}
	ns.nacked[typeURL] = list
}

func (s *Server) isNacked(node, typeURL, version string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	ns := s.nodes[node]
	if ns == nil {
		return false
	}
	for _, v := range ns.nacked[typeURL] {
		if v == version {
			return true
		}
	}
	return false
}
