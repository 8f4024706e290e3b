package identity

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
)

func TestFromCertificates(t *testing.T) {
	e := newTokenEnv(t)
	ctx := context.Background()
	clock := e.ca.clock
	other := newTestCA(t, clock, WithTrustDomain(spiffeid.RequireTrustDomainFromString("other.local")))

	svid := func(ca *CA, id spiffeid.ID) *x509svid.SVID { s, _ := issueSVID(t, ca, id); return s }
	cpSVID, err := e.ca.ServingSource(nil)
	if err != nil {
		t.Fatal(err)
	}
	cp, _ := cpSVID.GetX509SVID()

	tests := []struct {
		name    string
		svid    *x509svid.SVID
		advance time.Duration
		wantID  string
		wantErr error
	}{
		{"role", svid(e.ca.CA, roleID(t, "ml")), 0, "spiffe://cryptomesh.local/role/ml", nil},
		{"endpoint with role", svid(e.ca.CA, endpointID(t, "e1", "svc")), 0, "spiffe://cryptomesh.local/role/svc/endpoint/e1", nil},
		// The binding (endpoint e1) is what the node is; its ID follows
		// the endpoint's current role.
		{"endpoint whose role changed", svid(e.ca.CA, endpointID(t, "e1", "old")), 0, "spiffe://cryptomesh.local/role/svc/endpoint/e1", nil},
		{"endpoint now deleted", svid(e.ca.CA, endpointID(t, "gone", "")), 0, "", errors.New("any")},
		{"expired", svid(e.ca.CA, roleID(t, "ml")), 61 * time.Minute, "", ErrInvalidSVID},
		{"control plane is no node", cp, 0, "", ErrInvalidSVID},
		{"other trust domain", svid(other.CA, spiffeid.RequireFromString("spiffe://other.local/role/ml")), 0, "", ErrInvalidSVID},
		{"self-signed", selfSigned(t, roleID(t, "ml"), t0.Add(-time.Hour), t0.Add(time.Hour)), 0, "", ErrInvalidSVID},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			clock.Set(t0.Add(tt.advance))
			cred, err := e.auth.FromCertificates(ctx, tt.svid.Certificates)
			if tt.wantErr != nil {
				if err == nil {
					t.Fatalf("credential %+v, want error", cred)
				}
				if errors.Is(tt.wantErr, ErrInvalidSVID) && !errors.Is(err, ErrInvalidSVID) {
					t.Fatalf("error %v, want ErrInvalidSVID", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if cred.SPIFFEID.String() != tt.wantID || cred.Node != "" {
				t.Fatalf("credential %+v, want ID %s", cred, tt.wantID)
			}
			if !MayIssue(cred, cred.SPIFFEID) {
				t.Fatal("a node may not renew its own ID")
			}
		})
	}
}

func TestMayIssue(t *testing.T) {
	ml := NodeCredential{Node: "n", Binding: RoleBinding("ml"), SPIFFEID: roleID(t, "ml")}
	e1 := NodeCredential{Node: "n", Binding: EndpointBinding("e1", "svc"), SPIFFEID: endpointID(t, "e1", "svc")}
	cpCred := NodeCredential{SPIFFEID: ControlPlaneID(testTD)}
	tests := []struct {
		name string
		cred NodeCredential
		id   spiffeid.ID
		want bool
	}{
		{"own role ID", ml, roleID(t, "ml"), true},
		{"own endpoint ID", e1, endpointID(t, "e1", "svc"), true},
		{"another role", ml, roleID(t, "admin"), false},
		{"endpoint under own role", ml, endpointID(t, "e1", "ml"), false},
		{"endpoint without its role", e1, endpointID(t, "e1", ""), false},
		{"role of own endpoint", e1, roleID(t, "svc"), false},
		{"control plane", ml, ControlPlaneID(testTD), false},
		{"control plane even if it were the credential", cpCred, ControlPlaneID(testTD), false},
		{"same path in another trust domain", ml, spiffeid.RequireFromString("spiffe://other.local/role/ml"), false},
		{"empty credential", NodeCredential{}, spiffeid.ID{}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := MayIssue(tt.cred, tt.id); got != tt.want {
				t.Fatalf("MayIssue(%s, %s) = %v, want %v", tt.cred.SPIFFEID, tt.id, got, tt.want)
			}
		})
	}
}
