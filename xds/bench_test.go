package xds

import (
	"encoding/json"
	"fmt"
	"testing"
	"time"

	"github.com/cryptomesh/cryptomesh/registry"
	"github.com/cryptomesh/cryptomesh/registry/mesh"
)

// The benchmark mesh: 10,000 functions in 10 services × 10 microservices,
// on 50 endpoints (every fifth speaks gRPC; some policies audit, one is
// open), called by 20 roles whose permissions mix global, scoped, read and
// write grants.
const (
	benchFunctions = 10_000
	benchRoles     = 20
	benchServices  = 10
	benchMS        = 10 // per service
	benchEndpoints = 50
)

func benchDocument(tb testing.TB) []byte {
	tb.Helper()
	roles := map[string]any{}
	for i := range benchRoles {
		var perms []string
		switch i % 5 {
		case 0:
			perms = []string{"execute"}
		case 1:
			perms = []string{fmt.Sprintf("execute:s%02d_*", i%benchServices), fmt.Sprintf("read:s%02d_*", (i+1)%benchServices)}
		case 2:
			perms = []string{"read"}
		case 3:
			perms = []string{"write:s0*", "read:s1*"}
		case 4:
			perms = []string{fmt.Sprintf("execute:s%02d_m0?_*", i%benchServices), "read:*_f00?"}
		}
		roles[fmt.Sprintf("role-%02d", i)] = map[string]any{"name": fmt.Sprintf("Role %d", i), "permissions": perms}
	}
	policies := map[string]any{"open": map[string]any{"requires_authentication": false}}
	policyRoles := func(i, n int) []string {
		var rs []string
		for j := range n {
			rs = append(rs, fmt.Sprintf("role-%02d", (i+j*3)%benchRoles))
		}
		return rs
	}
	for i := range benchServices {
		policies[fmt.Sprintf("svc-policy-%02d", i)] = map[string]any{"requires_authentication": true, "roles": policyRoles(i, 12)}
	}
	for i := range 10 {
		p := map[string]any{"requires_authentication": true, "roles": policyRoles(i+1, 10)}
		if i%4 == 3 {
			p["mode"] = "audit"
		}
		policies[fmt.Sprintf("ep-policy-%02d", i)] = p
	}
	endpoints := map[string]any{}
	for i := range benchEndpoints {
		e := map[string]any{
			"security_policy":  fmt.Sprintf("ep-policy-%02d", i%10),
			"address":          fmt.Sprintf("10.0.%d.%d:17000", i/200, i%200+1),
			"workload_address": "127.0.0.1:8080",
			"role":             fmt.Sprintf("role-%02d", i%benchRoles),
		}
		if i%5 == 4 {
			e["protocol"] = "grpc"
		}
		if i == 0 {
			e["security_policy"] = "open"
		}
		endpoints[fmt.Sprintf("ep%02d", i)] = e
	}
	services, microservices, functions := map[string]any{}, map[string]any{}, map[string]any{}
	for s := range benchServices {
		services[fmt.Sprintf("svc%02d", s)] = map[string]any{"security_policy": fmt.Sprintf("svc-policy-%02d", s)}
		for m := range benchMS {
			microservices[fmt.Sprintf("s%02d-m%02d", s, m)] = map[string]any{"service_id": fmt.Sprintf("svc%02d", s)}
		}
	}
	perMS := benchFunctions / (benchServices * benchMS)
	for i := range benchFunctions {
		s, m, f := i/(benchMS*perMS), (i/perMS)%benchMS, i%perMS
		functions[fmt.Sprintf("s%02d_m%02d_f%03d", s, m, f)] = map[string]any{
			"microservice_id": fmt.Sprintf("s%02d-m%02d", s, m),
			"endpoint_id":     fmt.Sprintf("ep%02d", i%benchEndpoints),
			"timeout":         []string{"30s", "5m", "0"}[i%3],
		}
	}
	data, err := json.Marshal(map[string]any{
		"cryptomesh": "v1", "roles": roles, "security_policies": policies, "endpoints": endpoints,
		"services": services, "microservices": microservices, "functions": functions,
	})
	if err != nil {
		tb.Fatal(err)
	}
	return data
}

func benchRegistry(b *testing.B) *registry.Registry {
	b.Helper()
	r := openRegistry(b)
	doc, err := mesh.Parse(benchDocument(b), mesh.JSON)
	if err != nil {
		b.Fatal(err)
	}
	if _, err := mesh.Apply(b.Context(), r, doc, false); err != nil {
		b.Fatal(err)
	}
	return r
}

func benchModel(b *testing.B) *Model {
	b.Helper()
	m, err := NewModel(benchRegistry(b).View())
	if err != nil {
		b.Fatal(err)
	}
	if len(m.functions) != benchFunctions {
		b.Fatalf("model has %d functions, want %d", len(m.functions), benchFunctions)
	}
	return m
}

// benchNodes is one node of every distinct kind of configuration in the
// mesh: a client of each family in each role, a sidecar of each endpoint,
// a gRPC server of each gRPC endpoint.
func benchNodes(m *Model) []Node {
	var nodes []Node
	for i := range benchRoles {
		role := fmt.Sprintf("role-%02d", i)
		nodes = append(nodes,
			Node{ID: "envoy-" + role, Kind: Envoy, Binding: RoleBinding(role)},
			Node{ID: "grpc-" + role, Kind: GRPC, Binding: RoleBinding(role)})
	}
	for i := range benchEndpoints {
		ep := fmt.Sprintf("ep%02d", i)
		nodes = append(nodes, Node{ID: "sidecar-" + ep, Kind: Envoy, Binding: EndpointBinding(ep)})
		if m.endpoints[ep].grpc {
			nodes = append(nodes, Node{ID: "server-" + ep, Kind: GRPC, Binding: EndpointBinding(ep)})
		}
	}
	return nodes
}

// buildMesh reads the registry and translates for every benchmark node, and
// returns the distinct resources they received.
func buildMesh(b *testing.B, v Source, nodes []Node) []*Resource {
	m, err := NewModel(v)
	if err != nil {
		b.Fatal(err)
	}
	tr, err := NewTranslator(m, Options{TrustDomain: testTrustDomain})
	if err != nil {
		b.Fatal(err)
	}
	seen := map[*Resource]bool{}
	var distinct []*Resource
	for _, n := range nodes {
		s, err := tr.Translate(n)
		if err != nil {
			b.Fatal(err)
		}
		for _, typeURL := range TypeURLs() {
			for _, r := range s.byType[typeURL] {
				if !seen[r] {
					seen[r] = true
					distinct = append(distinct, r)
				}
			}
		}
	}
	return distinct
}

func BenchmarkNewModel(b *testing.B) {
	r := benchRegistry(b)
	for b.Loop() {
		if _, err := NewModel(r.View()); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkWholeMesh translates the whole 10,000-function mesh from a
// registry view — the model, then every distinct configuration, each
// shared resource built, validated (Anys included), marshalled and hashed
// once — and compares that with only marshalling the same resources once
// (x-marshal, target ≤ 3).
func BenchmarkWholeMesh(b *testing.B) {
	r := benchRegistry(b)
	m, err := NewModel(r.View())
	if err != nil {
		b.Fatal(err)
	}
	nodes := benchNodes(m)
	opts := deterministic()
	// One round untimed, so that the few timed ones (each takes a third
	// of a second) do not include first-use costs such as the protobuf
	// runtime's lazily built message tables.
	distinct := buildMesh(b, r.View(), nodes)
	var build, marshal time.Duration
	b.ResetTimer()
	for range b.N {
		// Each round builds, then marshals what it built once, the
		// baseline: interleaved, both run on the same machine state,
		// garbage collector included.
		start := time.Now()
		distinct = buildMesh(b, r.View(), nodes)
		build += time.Since(start)
		b.StopTimer()
		start = time.Now()
		for _, r := range distinct {
			if _, err := opts.Marshal(r.Message); err != nil {
				b.Fatal(err)
			}
		}
		marshal += time.Since(start)
		b.StartTimer()
	}
	marshal /= time.Duration(b.N)
	build /= time.Duration(b.N)

	total, largest := 0, 0
	for _, r := range distinct {
		total += len(r.Bytes)
		largest = max(largest, len(r.Bytes))
	}
	b.ReportMetric(float64(len(nodes)), "nodes")
	b.ReportMetric(float64(len(distinct)), "resources")
	b.ReportMetric(float64(total)/(1<<20), "MiB")
	b.ReportMetric(float64(largest)/(1<<20), "largest-MiB")
	b.ReportMetric(float64(marshal.Microseconds())/1000, "marshal-ms")
	b.ReportMetric(float64(build)/float64(marshal), "x-marshal")
}

// BenchmarkTranslateNode is the cost of one more node once the mesh's
// shared resources exist: what a reconnecting or new node costs.
func BenchmarkTranslateNode(b *testing.B) {
	m := benchModel(b)
	tr, err := NewTranslator(m, Options{TrustDomain: testTrustDomain})
	if err != nil {
		b.Fatal(err)
	}
	for _, n := range benchNodes(m) {
		if _, err := tr.Translate(n); err != nil {
			b.Fatal(err)
		}
	}
	for _, n := range []Node{
		{ID: "envoy-all", Kind: Envoy, Binding: RoleBinding("role-00")},
		{ID: "grpc-all", Kind: GRPC, Binding: RoleBinding("role-00")},
		{ID: "sidecar", Kind: Envoy, Binding: EndpointBinding("ep01")},
	} {
		b.Run(n.ID, func(b *testing.B) {
			var s *Snapshot
			for b.Loop() {
				if s, err = tr.Translate(n); err != nil {
					b.Fatal(err)
				}
			}
			bytes, count := 0, 0
			for _, typeURL := range TypeURLs() {
				for _, r := range s.byType[typeURL] {
					bytes += len(r.Bytes)
					count++
				}
			}
			b.ReportMetric(float64(count), "resources")
			b.ReportMetric(float64(bytes)/(1<<20), "config-MiB")
		})
	}
}
