package identity

import (
	"crypto/x509"
	"strings"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
)

// TestMTLSHandshakes runs real TLS handshakes on loopback with go-spiffe's
// tlsconfig (which verifies at wall-clock time, so the CA's clock is placed
// around the real now). The server is endpoint e1's sidecar admitting role
// "ml"; the client checks that it reached endpoint e1.
func TestMTLSHandshakes(t *testing.T) {
	realNow := time.Now().Truncate(time.Second)
	start := realNow.Add(-9 * time.Hour)
	clock := newFakeClock(start)
	// 12 h roots rotated at half-life: root A is prepared out at +6 h, root
	// B signs from +7 h, and A leaves the bundle at +8 h, still an hour
	// before the real now, while A itself remains unexpired.
	ca := newTestCA(t, clock, WithRootLifetime(12*time.Hour), WithRotateAt(0.5))
	rootA, keyA := ca.roots[0].cert, ca.roots[0].key

	clock.Set(start.Add(6*time.Hour + time.Minute))
	if b, _ := ca.Bundle(); len(b.X509Authorities()) != 2 {
		t.Fatal("successor root not prepared")
	}
	clock.Set(start.Add(7*time.Hour + 2*time.Minute))
	expired, _ := issueSVID(t, ca.CA, roleID(t, "ml")) // expires an hour before the real now
	clock.Set(realNow)
	if b, _ := ca.Bundle(); len(b.X509Authorities()) != 1 || b.HasX509Authority(rootA) {
		t.Fatal("root A not removed from the bundle")
	}

	other := newTestCA(t, newFakeClock(realNow), WithTrustDomain(spiffeid.RequireTrustDomainFromString("other.local")))
	foreignML := spiffeid.RequireFromString("spiffe://other.local/role/ml")
	fromRemovedRoot := signedBy(t, rootA, keyA, roleID(t, "ml"), realNow.Add(-time.Hour), realNow.Add(time.Hour))
	// The removed root's certificate is otherwise perfect: a bundle that
	// still had root A would accept it.
	if _, _, err := x509svid.Verify(fromRemovedRoot.Certificates, x509bundle.FromX509Authorities(testTD, []*x509.Certificate{rootA}), x509svid.WithTime(realNow)); err != nil {
		t.Fatalf("control: certificate from root A invalid even with A trusted: %v", err)
	}

	serverE1, _ := issueSVID(t, ca.CA, endpointID(t, "e1", "svc"))
	serverE2, _ := issueSVID(t, ca.CA, endpointID(t, "e2", "svc"))
	svid := func(id spiffeid.ID) *x509svid.SVID { s, _ := issueSVID(t, ca.CA, id); return s }
	otherSVID, _ := issueSVID(t, other.CA, foreignML)

	tests := []struct {
		name   string
		client *x509svid.SVID
		server *x509svid.SVID
		// refusedBy is "" for an accepted handshake, else the side that
		// must refuse and a fragment of its reason.
		refusedBy, reason string
	}{
		{"role client", svid(roleID(t, "ml")), serverE1, "", ""},
		{"endpoint acting in the role", svid(endpointID(t, "e9", "ml")), serverE1, "", ""},
		{"wrong role", svid(roleID(t, "admin")), serverE1, "server", "does not act in role ml"},
		{"role name prefix", svid(roleID(t, "ml2")), serverE1, "server", "does not act in role ml"},
		{"endpoint without the role", svid(endpointID(t, "e9", "")), serverE1, "server", "does not act in role ml"},
		{"expired SVID", expired, serverE1, "server", "expired"},
		{"other trust domain", otherSVID, serverE1, "server", "other.local"},
		{"self-signed with forged SAN", selfSigned(t, roleID(t, "ml"), realNow.Add(-time.Hour), realNow.Add(time.Hour)), serverE1, "server", "unknown authority"},
		{"certificate from a removed root", fromRemovedRoot, serverE1, "server", "unknown authority"},
		{"wrong server endpoint", svid(roleID(t, "ml")), serverE2, "client", "is not endpoint e1"},
		{"forged server", svid(roleID(t, "ml")), selfSigned(t, endpointID(t, "e1", "svc"), realNow.Add(-time.Hour), realNow.Add(time.Hour)), "client", "unknown authority"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srvCfg := tlsconfig.MTLSServerConfig(tt.server, ca, tlsconfig.AdaptMatcher(RoleMatcher(testTD, "ml")))
			cliCfg := tlsconfig.MTLSClientConfig(tt.client, ca, tlsconfig.AdaptMatcher(EndpointMatcher(testTD, "e1")))
			serr, cerr := handshake(t, srvCfg, cliCfg)
			switch tt.refusedBy {
			case "":
				if serr != nil || cerr != nil {
					t.Fatalf("handshake refused: server %v, client %v", serr, cerr)
				}
			case "server":
				if serr == nil || !strings.Contains(serr.Error(), tt.reason) {
					t.Fatalf("server error %v, want one mentioning %q", serr, tt.reason)
				}
				if cerr == nil {
					t.Fatal("client completed an exchange the server refused")
				}
			case "client":
				if cerr == nil || !strings.Contains(cerr.Error(), tt.reason) {
					t.Fatalf("client error %v, want one mentioning %q", cerr, tt.reason)
				}
			}
		})
	}
}
