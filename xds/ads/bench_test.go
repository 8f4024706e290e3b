package ads_test

import (
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cryptomesh/cryptomesh/identity"
	"github.com/cryptomesh/cryptomesh/registry"
	"github.com/cryptomesh/cryptomesh/xds/ads"
)

// fanoutMesh has endpoints e0..e<E-1> (gRPC), each with F functions
// g<e>_<n>, and a role r<e> per endpoint that may call its functions.
func fanoutMesh(endpoints, functions int) string {
	var b strings.Builder
	b.WriteString("roles:\n")
	var roles []string
	for e := range endpoints {
		fmt.Fprintf(&b, "  r%d: {name: r%d, permissions: [\"execute:g%d_*\"]}\n", e, e, e)
		roles = append(roles, fmt.Sprintf("r%d", e))
	}
	fmt.Fprintf(&b, "security_policies:\n  p: {requires_authentication: true, roles: [%s]}\nendpoints:\n", strings.Join(roles, ", "))
	for e := range endpoints {
		fmt.Fprintf(&b, "  e%d: {name: e%d, security_policy: p, address: \"127.0.0.1:%d\", protocol: grpc}\n", e, e, 20000+e)
	}
	b.WriteString("services:\n  s: {security_policy: p}\nmicroservices:\n  m: {service_id: s}\nfunctions:\n")
	for e := range endpoints {
		for n := range functions {
			fmt.Fprintf(&b, "  g%d_%d: {microservice_id: m, endpoint_id: e%d}\n", e, n, e)
		}
	}
	return b.String()
}

// BenchmarkPushFanout: 20 endpoints × 100 functions, 100 gRPC nodes (5 per
// role) each subscribed to the 100 route configurations of its role. One
// function's timeout changes per iteration: the 5 nodes of its role get
// the new route and ACK it; the 95 others get nothing. An iteration is
// one registry write to the last ACK, with a 1 ms debounce.
func BenchmarkPushFanout(b *testing.B) {
	const endpoints, functions, perRole = 20, 100, 5
	e := newBenchEnv(b, fanoutMesh(endpoints, functions))
	type node struct {
		c     *client
		role  int
		names []string
	}
	var nodes []*node
	for r := range endpoints {
		var names []string
		for n := range functions {
			names = append(names, fmt.Sprintf("g%d_%d.cryptomesh", r, n))
		}
		for i := range perRole {
			id := fmt.Sprintf("n%d-%d", r, i)
			tok, _ := e.token(b, id, identity.RoleBinding(fmt.Sprintf("r%d", r)))
			c := e.open(b, dialOpts{token: tok}, id, grpcUA)
			c.ask(routeType, names...)
			c.ack(c.recv(), names...)
			nodes = append(nodes, &node{c: c, role: r, names: names})
		}
	}
	var others int
	b.ResetTimer()
	for i := range b.N {
		update(b, e.reg, registry.KindFunction, fmt.Sprintf("g0_%d", i%functions), map[string]any{"timeout": fmt.Sprintf("%ds", i+2)})
		var wg sync.WaitGroup
		for _, n := range nodes {
			if n.role != 0 {
				continue
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				r := n.c.recv()
				n.c.ack(r, n.names...)
			}()
		}
		wg.Wait()
	}
	b.StopTimer()
	for _, n := range nodes {
		if n.role != 0 {
			select {
			case <-n.c.resps:
				others++
			default:
			}
		}
	}
	if others > 0 {
		b.Fatalf("%d nodes of other roles were pushed to", others)
	}
	b.ReportMetric(histogramMean(b, e, "cryptomesh_xds_build_seconds")*1e3, "build-ms")
	b.ReportMetric(histogramMean(b, e, "cryptomesh_xds_convergence_seconds")*1e3, "convergence-ms")
}

func newBenchEnv(b *testing.B, doc string) *env {
	return newEnvTB(b, doc, ads.WithDebounce(time.Millisecond, 10*time.Millisecond))
}
