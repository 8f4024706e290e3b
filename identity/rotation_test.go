package identity

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
)

// mtlsAt builds mutual-TLS configs like go-spiffe's tlsconfig.MTLS*Config but
// verifying at the fake clock's time: tlsconfig always verifies at wall-clock
// time, and a simulated year cannot be lived at wall-clock time. Everything
// else is tlsconfig's own (certificate callbacks, x509svid verification,
// Authorizer).
func mtlsAt(now func() time.Time, svid x509svid.Source, bundle x509bundle.Source, authorizer tlsconfig.Authorizer) (server, client *tls.Config) {
	verify := func(raw [][]byte, _ [][]*x509.Certificate) error {
		id, chains, err := x509svid.ParseAndVerify(raw, bundle, x509svid.WithTime(now()))
		if err != nil {
			return err
		}
		return authorizer(id, chains)
	}
	server = &tls.Config{
		MinVersion:            tls.VersionTLS12,
		ClientAuth:            tls.RequireAnyClientCert,
		GetCertificate:        tlsconfig.GetCertificate(svid),
		VerifyPeerCertificate: verify,
	}
	client = &tls.Config{
		MinVersion:            tls.VersionTLS12,
		InsecureSkipVerify:    true, // SPIFFE authentication replaces hostname checks; verify does the chain
		GetClientCertificate:  tlsconfig.GetClientCertificate(svid),
		VerifyPeerCertificate: verify,
	}
	return server, client
}

// simNode is a node renewing at every step, with its history of SVIDs and
// bundles, so that stale combinations can be replayed.
type simNode struct {
	id      spiffeid.ID
	svids   []*x509svid.SVID
	bundles []*x509bundle.Bundle
}

func rootName(c *x509.Certificate) string { return hex.EncodeToString(c.AuthorityKeyId) }

// TestRotationSimulation lives 14 months of a CA whose roots last 60 days
// (rotated at 2/3, so about ten rotations) with 48 h SVIDs renewed at
// half-life, served by two replicas sharing one CA directory, with a restart
// in the middle. At every step it checks the rules of SPEC §4 and replays the
// stale combinations a real mesh has between renewals: a fresh SVID against
// a bundle up to one TTL old, and a half-life-old SVID against the newest
// bundle, both by x509svid verification and by a real TLS handshake.
func TestRotationSimulation(t *testing.T) {
	const (
		ttl      = 48 * time.Hour
		lifetime = 60 * 24 * time.Hour
		days     = 420
	)
	step := ttl / 2
	clock := newFakeClock(t0)
	opts := []Option{WithClock(clock.Now), WithRootLifetime(lifetime), WithSVIDTTL(ttl), WithRotateAt(2.0 / 3)}
	ca1 := newTestCA(t, clock, opts[1:]...)
	ca2, err := LoadOrCreateCA(ca1.dir, opts...)
	if err != nil {
		t.Fatal(err)
	}
	replicas := []*CA{ca1.CA, ca2}

	client := &simNode{id: roleID(t, "ml")}
	server := &simNode{id: endpointID(t, "e1", "svc")}
	nodes := []*simNode{client, server}

	firstInBundle := map[string]time.Time{} // root -> when it entered the bundle
	signedUntil := map[string]time.Time{}   // root -> latest NotAfter it signed
	retired := map[string]bool{}            // roots that left the bundle
	signers := map[string]bool{}            // roots that signed something
	var prevRoots map[string]bool
	initialRoot := hex.EncodeToString(ca1.roots[0].cert.SubjectKeyId)
	handshakes := 0
	edgeSigns, probes, edgeProbes := map[time.Time]bool{}, map[time.Time]bool{}, 0
	// live holds every SVID issued and not yet expired.
	var live []*x509.Certificate
	checkLive := func(k int, at time.Time) {
		t.Helper()
		b, _ := replicas[k%2].Bundle()
		kept := live[:0]
		for _, c := range live {
			if at.After(c.NotAfter) {
				continue
			}
			kept = append(kept, c)
			if _, _, err := x509svid.Verify([]*x509.Certificate{c}, b, x509svid.WithTime(at)); err != nil {
				t.Fatalf("step %d (%s): live SVID valid until %s refused by the current bundle: %v", k, at, c.NotAfter, err)
			}
		}
		live = kept
	}
	var lastPEM []byte
	var lastSigner string
	hot := 0

	steps := int(days * 24 * time.Hour / step)
	for k := 0; k < steps; k++ {
		now := t0.Add(time.Duration(k) * step)
		clock.Set(now)
		if k == steps/2 {
			// Restart one replica from the directory: it must resume the
			// rotation state exactly.
			_, before := replicas[0].Bundle()
			restarted, err := LoadOrCreateCA(ca1.dir, opts...)
			if err != nil {
				t.Fatalf("restart at %s: %v", now, err)
			}
			replicas[0] = restarted
			if _, after := restarted.Bundle(); !bytes.Equal(before, after) {
				t.Fatalf("bundle changed across restart at %s", now)
			}
		}
		// Renew every node at half-life, each through another replica.
		for i, n := range nodes {
			if len(n.svids) > 0 && !NeedsRenewal(n.svids[len(n.svids)-1].Certificates[0], now) {
				t.Fatalf("step %d: SVID of %s not due for renewal at its half-life", k, n.id)
			}
			svid, issued := issueSVID(t, replicas[(k+i)%2], n.id)
			b, err := x509bundle.Parse(testTD, issued.BundlePEM)
			if err != nil {
				t.Fatal(err)
			}
			live = append(live, svid.Certificates[0])
			n.svids = append(n.svids, svid)
			n.bundles = append(n.bundles, b)
			leaf := svid.Certificates[0]
			r := rootName(leaf)
			signers[r] = true
			if leaf.NotAfter.After(signedUntil[r]) {
				signedUntil[r] = leaf.NotAfter
			}
		}
		checkLive(k, now)
		_, pem0 := replicas[0].Bundle()
		_, pem1 := replicas[1].Bundle()
		if !bytes.Equal(pem0, pem1) {
			t.Fatalf("step %d (%s): replicas disagree on the bundle", k, now)
		}

		// Bundle bookkeeping: entries, exits, and the lead and overlap rules.
		bundle := server.bundles[k]
		roots := map[string]bool{}
		for _, c := range bundle.X509Authorities() {
			n := hex.EncodeToString(c.SubjectKeyId)
			roots[n] = true
			if retired[n] {
				t.Fatalf("step %d: retired root %s is back in the bundle", k, n)
			}
			if _, ok := firstInBundle[n]; !ok {
				firstInBundle[n] = now
			}
		}
		if len(roots) > 2 {
			t.Fatalf("step %d: %d roots in the bundle, want at most 2", k, len(roots))
		}
		for n := range prevRoots {
			if !roots[n] {
				retired[n] = true
				if signedUntil[n].After(now) {
					t.Fatalf("step %d: root %s left the bundle at %s but signed an SVID valid until %s", k, n, now, signedUntil[n])
				}
			}
		}
		prevRoots = roots
		for _, n := range nodes {
			r := rootName(n.svids[k].Certificates[0])
			if r != initialRoot && firstInBundle[r].After(now.Add(-ttl)) {
				t.Fatalf("step %d: root %s signs at %s but entered the bundle only at %s (< one TTL)", k, r, now, firstInBundle[r])
			}
		}

		// Stale combinations that the rules promise to work.
		for _, n := range nodes {
			fresh := n.svids[k]
			for age := 1; age <= 2 && k-age >= 0; age++ { // bundles T/2 and T old
				peer := nodes[0]
				if peer == n {
					peer = nodes[1]
				}
				if _, _, err := x509svid.Verify(fresh.Certificates, peer.bundles[k-age], x509svid.WithTime(now)); err != nil {
					t.Fatalf("step %d: fresh SVID of %s refused by a %s-old bundle: %v", k, n.id, time.Duration(age)*step, err)
				}
			}
			// Every SVID still valid (including one expiring this very
			// second) must verify against the newest bundle.
			for age := 1; age <= 2 && k-age >= 0; age++ {
				old := n.svids[k-age]
				if now.After(old.Certificates[0].NotAfter) {
					continue
				}
				if _, _, err := x509svid.Verify(old.Certificates, server.bundles[k], x509svid.WithTime(now)); err != nil {
					t.Fatalf("step %d: %s-old SVID of %s refused by the newest bundle: %v", k, time.Duration(age)*step, n.id, err)
				}
			}
		}
		// Real handshakes around every change of bundle or signer (and once
		// a simulated fortnight besides, to keep the race detector's cost in
		// bounds); alternately the client or the server has not renewed yet
		// and holds last step's SVID and bundle.
		if changed := !bytes.Equal(pem0, lastPEM) || rootName(server.svids[k].Certificates[0]) != lastSigner; changed {
			hot = 3
		}
		lastPEM, lastSigner = pem0, rootName(server.svids[k].Certificates[0])
		if hot--; k >= 1 && (hot >= 0 || k%28 == 0) {
			ci, si := k, k-1
			if k%2 == 0 {
				ci, si = k-1, k
			}
			srvCfg, _ := mtlsAt(clock.Now, server.svids[si], server.bundles[si], tlsconfig.AdaptMatcher(RoleMatcher(testTD, "ml")))
			_, cliCfg := mtlsAt(clock.Now, client.svids[ci], client.bundles[ci], tlsconfig.AdaptMatcher(EndpointMatcher(testTD, "e1")))
			if serr, cerr := handshake(t, srvCfg, cliCfg); serr != nil || cerr != nil {
				t.Fatalf("step %d (%s): handshake failed: server %v, client %v", k, now, serr, cerr)
			}
			handshakes++
		}
		// Worst case for the overlap: an SVID signed one second before a
		// new root takes over, checked again at the second it expires.
		var instants []time.Time
		for _, r := range replicas[0].roots {
			if edge := r.activateAt.Add(-time.Second); edge.After(now) && edge.Before(now.Add(step)) {
				edgeSigns[edge] = true
				instants = append(instants, edge)
			}
		}
		for p := range probes {
			if p.After(now) && p.Before(now.Add(step)) {
				instants = append(instants, p)
				delete(probes, p)
			}
		}
		slices.SortFunc(instants, time.Time.Compare)
		for _, at := range instants {
			clock.Set(at)
			if edgeSigns[at] {
				_, issued := issueSVID(t, replicas[k%2], roleID(t, "edge"))
				leaf := parseCertPEM(t, issued.CertChainPEM)
				if r := rootName(leaf); leaf.NotAfter.After(signedUntil[r]) {
					signedUntil[r] = leaf.NotAfter
				}
				live = append(live, leaf)
				probes[leaf.NotAfter] = true
				edgeProbes++
			}
			checkLive(k, at)
		}

		// A node out of phase renews one second before the next step, and
		// at that instant too every live SVID must verify against the
		// current bundle: this pins the overlap to the second, for SVIDs
		// signed just before a new root takes over.
		late := now.Add(step - time.Second)
		clock.Set(late)
		_, issued := issueSVID(t, replicas[k%2], roleID(t, "late"))
		leaf := parseCertPEM(t, issued.CertChainPEM)
		if r := rootName(leaf); leaf.NotAfter.After(signedUntil[r]) {
			signedUntil[r] = leaf.NotAfter
		}
		live = append(live, leaf)
		checkLive(k, late)
	}
	if len(signers) < 8 {
		t.Fatalf("only %d roots signed in %d days, want a rotation every 40 days", len(signers), days)
	}
	if len(retired) < len(signers)-2 {
		t.Fatalf("%d roots retired of %d, want all but the last ones", len(retired), len(signers))
	}
	if edgeProbes < len(signers)-2 {
		t.Fatalf("only %d SVIDs signed just before a root switch, want one per switch", edgeProbes)
	}
	t.Logf("%d steps, %d roots, %d retired, %d handshakes, %d edge SVIDs", steps, len(signers), len(retired), handshakes, edgeProbes)
}

// TestRotationDefaults checks the event times with the default settings
// (1-year root, 1 h SVIDs, rotation at 2/3): prepared at 2/3 of the year, in
// the bundle but not signing for one TTL, the old root gone one TTL after the
// switch, each step persisted.
func TestRotationDefaults(t *testing.T) {
	clock := newFakeClock(t0)
	ca := newTestCA(t, clock)
	first := ca.roots[0].cert
	rotateAt := first.NotBefore.Add(first.NotAfter.Sub(first.NotBefore) * 2 / 3)
	id := roleID(t, "ml")
	bundleSize := func() int { b, _ := ca.Bundle(); return len(b.X509Authorities()) }
	signer := func() *x509.Certificate {
		svid, _ := issueSVID(t, ca.CA, id)
		for _, r := range ca.roots {
			if bytes.Equal(r.cert.SubjectKeyId, svid.Certificates[0].AuthorityKeyId) {
				return r.cert
			}
		}
		t.Fatal("SVID signed by no known root")
		return nil
	}
	reload := func() {
		t.Helper()
		again, err := LoadOrCreateCA(ca.dir, WithClock(clock.Now), WithMetrics(ca.metrics))
		if err != nil {
			t.Fatal(err)
		}
		ca.CA = again
	}

	clock.Set(rotateAt.Add(-time.Second))
	if bundleSize() != 1 || signer() != first {
		t.Fatal("rotated before 2/3 of the root's life")
	}
	clock.Set(rotateAt)
	if bundleSize() != 2 {
		t.Fatalf("bundle has %d roots at the rotation point, want 2", bundleSize())
	}
	reload()
	if got := signer(); !bytes.Equal(got.Raw, first.Raw) {
		t.Fatal("new root signs before its lead time")
	}
	clock.Set(rotateAt.Add(time.Hour - time.Second))
	if got := signer(); !bytes.Equal(got.Raw, first.Raw) {
		t.Fatal("new root signs before one TTL in the bundle")
	}
	clock.Set(rotateAt.Add(time.Hour))
	second := signer()
	if bytes.Equal(second.Raw, first.Raw) {
		t.Fatal("new root does not sign after its lead time")
	}
	reload()
	clock.Set(rotateAt.Add(2*time.Hour - time.Second))
	if bundleSize() != 2 {
		t.Fatal("old root left the bundle while its SVIDs were valid")
	}
	clock.Set(rotateAt.Add(2 * time.Hour))
	if bundleSize() != 1 {
		t.Fatalf("old root still in the bundle one TTL after the switch (%d roots)", bundleSize())
	}
	reload()
	if bundleSize() != 1 || len(ca.roots) != 1 || !bytes.Equal(ca.roots[0].cert.Raw, second.Raw) {
		t.Fatal("retirement not persisted")
	}
}

// TestConcurrentSigningAcrossRotation signs from several goroutines while the
// clock crosses a preparation, an activation and a retirement, so the race
// detector sees the lazy refresh under contention; every SVID must verify
// against the bundle of its moment.
func TestConcurrentSigningAcrossRotation(t *testing.T) {
	clock := newFakeClock(t0)
	ca := newTestCA(t, clock, WithRootLifetime(30*24*time.Hour), WithRotateAt(0.5))
	id := roleID(t, "ml")
	csr := csrPEM(t, newP256(t), x509.CertificateRequest{}, id)
	prepare := t0.Add(15 * 24 * time.Hour)
	instants := []time.Time{prepare.Add(-time.Minute), prepare, prepare.Add(time.Hour), prepare.Add(2 * time.Hour), prepare.Add(3 * time.Hour)}
	for _, at := range instants {
		clock.Set(at)
		var wg sync.WaitGroup
		errs := make(chan error, 8)
		for range 4 {
			wg.Go(func() {
				for range 5 {
					issued, err := ca.SignCSR(context.Background(), csr, id)
					if err != nil {
						errs <- err
						return
					}
					b, err := x509bundle.Parse(testTD, issued.BundlePEM)
					if err != nil {
						errs <- err
						return
					}
					cert, err := x509.ParseCertificate(mustDER(issued.CertChainPEM))
					if err != nil {
						errs <- err
						return
					}
					if _, _, err := x509svid.Verify([]*x509.Certificate{cert}, b, x509svid.WithTime(at)); err != nil {
						errs <- err
						return
					}
					_, _ = ca.Bundle()
				}
			})
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Fatalf("at %s: %v", at, err)
		}
	}
	if b, _ := ca.Bundle(); len(b.X509Authorities()) != 1 || len(ca.roots) != 1 {
		t.Fatalf("after the retirement: %d roots in the bundle, %d kept", len(b.X509Authorities()), len(ca.roots))
	}
	if got := ca.issuedCount(); got != float64(len(instants)*4*5) {
		t.Fatalf("issued counter %v, want %d", got, len(instants)*4*5)
	}
}

func mustDER(p []byte) []byte {
	block, _ := pem.Decode(p)
	if block == nil {
		return nil
	}
	return block.Bytes
}
