package api_test

import (
	"encoding/json"
	"net/http"
	"testing"
	"time"

	"github.com/cryptomesh/cryptomesh/api"
)

// fakeProxies is a ProxySource with a fixed list.
type fakeProxies []api.Proxy

func (f fakeProxies) Proxies() []api.Proxy { return f }

// TestProxies: GET /api/v1/proxies lists the xDS server's streams to
// administrators only, in the documented shape (empty lists as [], absent
// times and NACKs as null), and an empty list without an xDS server.
func TestProxies(t *testing.T) {
	since := time.Date(2026, 5, 1, 12, 0, 0, 0, time.UTC)
	acked := since.Add(time.Second)
	src := fakeProxies{{
		Node: "online-1", Binding: "endpoint:online-node", SPIFFEID: "spiffe://cryptomesh.local/endpoint/online-node",
		Kind: "grpc", Credential: "join_token", Peer: "127.0.0.1:5000", ConnectedSince: since,
		Types: []api.ProxyType{
			{Type: "listener", TypeURL: "type.googleapis.com/envoy.config.listener.v3.Listener", Names: []string{"grpc/server?xds.resource.listening_address=127.0.0.1:17005"},
				Requests: 3, SentVersion: "v2", AckedVersion: "v1", AckedAt: &acked, Nacks: 1,
				LastNack: &api.ProxyNack{Version: "v2", Error: "bad", At: acked}},
			{Type: "cluster", TypeURL: "type.googleapis.com/envoy.config.cluster.v3.Cluster", Wildcard: true, Requests: 1, SentVersion: "c1"},
		},
	}}
	e := newEnv(t, withIdentity(nil), withAPI(api.WithProxies(src)))
	e.seedIdentity()

	r := e.must(e.get("/api/v1/proxies"), http.StatusOK)
	if r.header.Get("X-Total-Count") != "1" {
		t.Fatalf("X-Total-Count %q", r.header.Get("X-Total-Count"))
	}
	var got []map[string]any
	if err := json.Unmarshal(r.body, &got); err != nil {
		t.Fatal(err)
	}
	if len(got) != 1 || got[0]["node"] != "online-1" || got[0]["binding"] != "endpoint:online-node" || got[0]["kind"] != "grpc" ||
		got[0]["connected_since"] != "2026-05-01T12:00:00Z" {
		t.Fatalf("proxies: %s", r.body)
	}
	types := got[0]["types"].([]any)
	lis, cl := types[0].(map[string]any), types[1].(map[string]any)
	if lis["acked_version"] != "v1" || lis["nacks"] != float64(1) || lis["last_nack"].(map[string]any)["version"] != "v2" {
		t.Fatalf("listener: %v", lis)
	}
	if cl["acked_at"] != nil || cl["last_nack"] != nil || cl["wildcard"] != true {
		t.Fatalf("cluster: %v", cl)
	}
	if names, ok := cl["names"].([]any); !ok || len(names) != 0 {
		t.Fatalf("cluster names %v, want []", cl["names"])
	}

	errorOf(t, e.send(req{method: "GET", path: "/api/v1/proxies", token: noToken()}), http.StatusUnauthorized)
	tok, _ := e.mintToken(map[string]any{"node": "n1", "endpoint": "e2"})
	errorOf(t, e.send(req{method: "GET", path: "/api/v1/proxies", token: tokenOf(tok)}), http.StatusForbidden)

	plain := newEnv(t)
	if r := e.must(plain.get("/api/v1/proxies"), http.StatusOK); string(r.body) != "[]\n" {
		t.Fatalf("without an xDS server: %s", r.body)
	}
}
