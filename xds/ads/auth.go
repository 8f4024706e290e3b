package ads

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"net/netip"
	"strings"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"

	"github.com/cryptomesh/cryptomesh/identity"
	"github.com/cryptomesh/cryptomesh/xds"
)

// Ways a stream authenticated, as the proxies listing shows them.
const (
	CredentialJoinToken = "join_token"
	CredentialSVID      = "svid"
)

// User agents (node.user_agent_name) of the three client kinds.
const (
	UserAgentEnvoy = "envoy"
	UserAgentProxy = "cryptomesh-proxy"
	// grpc-go says "gRPC Go"; other gRPC languages say "gRPC <language>".
	userAgentGRPCPrefix = "gRPC "
)

// credential is an authenticated stream's node.
type credential struct {
	identity.NodeCredential
	via string
	// token is the join token the stream came in on ("" for an SVID), kept
	// to check it again when token records change.
	token string
}

// authenticate checks a new stream's credentials (SPEC §6): a join token
// as `authorization: Bearer` metadata, or the node's SVID as TLS client
// certificate. A token decides on its own — a refused token is not saved
// by a certificate — and when a certificate comes with a token it must be
// for the same binding.
func (s *Server) authenticate(ctx context.Context) (credential, error) {
	tok, hasToken, err := bearer(ctx)
	if err != nil {
		return credential{}, err
	}
	chain := peerCertificates(ctx)
	if hasToken {
		nc, err := s.auth.FromToken(ctx, tok)
		if err != nil {
			return credential{}, status.Errorf(codes.Unauthenticated, "join token refused: %v", err)
		}
		if len(chain) > 0 {
			byCert, err := s.auth.FromCertificates(ctx, chain)
			if err != nil {
				return credential{}, status.Errorf(codes.Unauthenticated, "client certificate refused: %v", err)
			}
			if byCert.Binding.Kind != nc.Binding.Kind || byCert.Binding.Name != nc.Binding.Name {
				return credential{}, status.Errorf(codes.PermissionDenied, "the client certificate is for %s, the join token for %s", byCert.Binding, nc.Binding)
			}
		}
		return credential{NodeCredential: nc, via: CredentialJoinToken, token: tok}, nil
	}
	if len(chain) > 0 {
		nc, err := s.auth.FromCertificates(ctx, chain)
		if err != nil {
			return credential{}, status.Errorf(codes.Unauthenticated, "client certificate refused: %v", err)
		}
		return credential{NodeCredential: nc, via: CredentialSVID}, nil
	}
	return credential{}, status.Error(codes.Unauthenticated, "no join token (authorization: Bearer) and no client certificate; a gRPC node needs GRPC_EXPERIMENTAL_XDS_BOOTSTRAP_CALL_CREDS=true for its bootstrap's call_creds to be sent")
}

// bearer returns the join token of the stream's metadata, if any.
func bearer(ctx context.Context) (string, bool, error) {
	md, _ := metadata.FromIncomingContext(ctx)
	vals := md.Get("authorization")
	switch len(vals) {
	case 0:
		return "", false, nil
	case 1:
	default:
		return "", false, status.Error(codes.Unauthenticated, "more than one authorization header")
	}
	scheme, tok, ok := strings.Cut(strings.TrimSpace(vals[0]), " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") || strings.TrimSpace(tok) == "" {
		return "", false, status.Error(codes.Unauthenticated, "authorization is not 'Bearer <join token>'")
	}
	return strings.TrimSpace(tok), true, nil
}

// peerCertificates is the verified client certificate chain, if the peer
// sent one (the TLS config verifies it as an SVID during the handshake).
func peerCertificates(ctx context.Context) []*x509.Certificate {
	p, ok := peer.FromContext(ctx)
	if !ok || p.AuthInfo == nil {
		return nil
	}
	info, ok := p.AuthInfo.(credentials.TLSInfo)
	if !ok {
		return nil
	}
	return info.State.PeerCertificates
}

// kindOf tells the client kind from node.user_agent_name.
func kindOf(ua string) (xds.ClientKind, bool) {
	switch {
	case ua == UserAgentEnvoy:
		return xds.Envoy, true
	case ua == UserAgentProxy:
		return xds.Proxy, true
	case strings.HasPrefix(ua, userAgentGRPCPrefix):
		return xds.GRPC, true
	}
	return 0, false
}

// nodeIdentity is what the first request of a stream pins: later requests
// may omit the node but never change it.
type nodeIdentity struct {
	id       string
	kind     xds.ClientKind
	ua       string
	outbound string
}

// errNodeMismatch marks a node that is not the credential's, or not the
// stream's.
var errNodeMismatch = errors.New("node does not match")

// checkNode validates a request's node against the credential (and, after
// the first request, against what that request pinned). pinned is nil on
// the first request.
func checkNode(cred credential, pinned *nodeIdentity, n *corev3.Node) (*nodeIdentity, error) {
	if n == nil {
		if pinned == nil {
			return nil, status.Error(codes.InvalidArgument, "the first request of a stream must carry the node")
		}
		return pinned, nil
	}
	if pinned != nil {
		if n.GetId() != pinned.id {
			return nil, status.Errorf(codes.PermissionDenied, "%v: node.id %q on a stream of node %q", errNodeMismatch, n.GetId(), pinned.id)
		}
		if n.GetUserAgentName() != pinned.ua {
			return nil, status.Errorf(codes.PermissionDenied, "%v: user agent %q on a stream opened by %q", errNodeMismatch, n.GetUserAgentName(), pinned.ua)
		}
		return pinned, nil
	}
	id := n.GetId()
	if cred.Node != "" && id != cred.Node {
		return nil, status.Errorf(codes.PermissionDenied, "%v: node.id %q, the join token is for node %q", errNodeMismatch, id, cred.Node)
	}
	if err := identity.ValidateName("node", id); err != nil {
		return nil, status.Errorf(codes.InvalidArgument, "node.id: %v", err)
	}
	kind, ok := kindOf(n.GetUserAgentName())
	if !ok {
		return nil, status.Errorf(codes.InvalidArgument, "node.user_agent_name %q is none of %q, %q or gRPC's", n.GetUserAgentName(), UserAgentEnvoy, UserAgentProxy)
	}
	ni := &nodeIdentity{id: id, kind: kind, ua: n.GetUserAgentName()}
	if kind != xds.GRPC {
		if f := n.GetMetadata().GetFields()[OutboundAddressKey]; f != nil {
			ni.outbound = f.GetStringValue()
			if _, err := netip.ParseAddrPort(ni.outbound); err != nil {
				return nil, status.Errorf(codes.InvalidArgument, "node.metadata.%s must be a string IP:port: %v", OutboundAddressKey, err)
			}
		}
	}
	return ni, nil
}

// OutboundAddressKey is the node metadata field by which an Envoy or proxy
// node asks for its outbound listener elsewhere than 127.0.0.1:15001.
const OutboundAddressKey = "outbound_address"

// binding is the translation's view of the credential's binding.
func (c credential) binding() xds.Binding {
	if c.Binding.Kind == identity.BindEndpoint {
		return xds.EndpointBinding(c.Binding.Name)
	}
	return xds.RoleBinding(c.Binding.Name)
}

func errTokenInvalid(err error) error {
	return status.Error(codes.Unauthenticated, fmt.Sprintf("join token no longer valid: %v", err))
}
