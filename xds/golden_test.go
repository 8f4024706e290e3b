package xds

import (
	"bytes"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"gopkg.in/yaml.v3"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata from the current output")

// goldenCases are the nodes whose complete configuration is kept in
// testdata/<name>.golden.yaml.
func goldenCases() []struct {
	name    string
	example string
	node    Node
	creds   string // fixture stem, "" for none
} {
	return []struct {
		name    string
		example string
		node    Node
		creds   string
	}{
		{"ml-pipeline/envoy-sidecar-ingest-node", mlPipeline, Node{ID: "ingest-1", Kind: Envoy, Binding: EndpointBinding("ingest-node")}, "ingest-node"},
		{"ml-pipeline/proxy-sidecar-reports-node-audit", mlPipeline, Node{ID: "reports-1", Kind: Proxy, Binding: EndpointBinding("reports-node")}, "reports-node"},
		{"ml-pipeline/envoy-sidecar-health-node-open", mlPipeline, Node{ID: "health-1", Kind: Envoy, Binding: EndpointBinding("health-node")}, "health-node"},
		{"ml-pipeline/envoy-sidecar-online-node-grpc", mlPipeline, Node{ID: "online-envoy-1", Kind: Envoy, Binding: EndpointBinding("online-node")}, "online-node"},
		{"ml-pipeline/envoy-client-analyst", mlPipeline, Node{ID: "analyst-laptop", Kind: Envoy, Binding: RoleBinding("analyst")}, "analyst"},
		{"ml-pipeline/grpc-client-inference-client", mlPipeline, Node{ID: "web-app", Kind: GRPC, Binding: RoleBinding("inference-client")}, ""},
		{"ml-pipeline/grpc-server-online-node", mlPipeline, Node{ID: "online-1", Kind: GRPC, Binding: EndpointBinding("online-node")}, ""},
		{"legacy/envoy-sidecar-ep-sentiment-cpu", legacy, Node{ID: "sentiment-1", Kind: Envoy, Binding: EndpointBinding("ep-sentiment-cpu")}, "ep-sentiment-cpu"},
		{"legacy/envoy-client-data-scientist", legacy, Node{ID: "ds-1", Kind: Envoy, Binding: RoleBinding("data-scientist")}, ""},
		{"legacy/proxy-sidecar-ep-tokenizer-no-address", legacy, Node{ID: "tok-1", Kind: Proxy, Binding: EndpointBinding("ep-tokenizer")}, ""},
		{"legacy/grpc-client-api-gateway", legacy, Node{ID: "gw-1", Kind: GRPC, Binding: RoleBinding("api-gateway")}, ""},
	}
}

func TestGolden(t *testing.T) {
	translators := map[string]*Translator{
		mlPipeline: exampleTranslator(t, mlPipeline),
		legacy:     exampleTranslator(t, legacy),
	}
	for _, tc := range goldenCases() {
		t.Run(tc.name, func(t *testing.T) {
			n := tc.node
			if tc.creds != "" {
				n.Credentials = fixtureCredentials(t, tc.creds)
			}
			got := renderSnapshot(t, translate(t, translators[tc.example], n))
			path := filepath.Join("testdata", tc.name+".golden.yaml")
			if *update {
				if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(path, got, 0o644); err != nil {
					t.Fatal(err)
				}
				return
			}
			want, err := os.ReadFile(path)
			if err != nil {
				t.Fatalf("%v (run `go test ./xds -run TestGolden -update` to create it)", err)
			}
			if !bytes.Equal(got, want) {
				t.Errorf("%s differs from the output; rerun with -update if the change is intended.\n%s", path, lineDiff(string(want), string(got)))
			}
		})
	}
}

// renderSnapshot is a snapshot as YAML: types in push order, resources by
// name, each message as protojson with proto field names. Versions are
// left out: they are hashes of the same content and would only make every
// change twice as noisy.
func renderSnapshot(t testing.TB, s *Snapshot) []byte {
	t.Helper()
	type entry struct {
		Type  string `yaml:"type"`
		Name  string `yaml:"name"`
		Value any    `yaml:"value"`
	}
	var out []entry
	for _, typeURL := range TypeURLs() {
		for _, r := range s.Resources(typeURL) {
			out = append(out, entry{Type: shortType(typeURL), Name: r.Name, Value: protoTree(t, r.Message)})
		}
	}
	var buf bytes.Buffer
	enc := yaml.NewEncoder(&buf)
	enc.SetIndent(2)
	if err := enc.Encode(map[string]any{"resources": out}); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// protoTree turns a message into plain maps and lists (yaml.v3 sorts map
// keys, which makes the output stable).
func protoTree(t testing.TB, m proto.Message) any {
	t.Helper()
	b, err := protojson.MarshalOptions{UseProtoNames: true}.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	var v any
	if err := json.Unmarshal(b, &v); err != nil {
		t.Fatal(err)
	}
	return v
}

// lineDiff shows where two texts start to differ, with some context.
func lineDiff(want, got string) string {
	w, g := strings.Split(want, "\n"), strings.Split(got, "\n")
	i := 0
	for i < len(w) && i < len(g) && w[i] == g[i] {
		i++
	}
	from := max(i-3, 0)
	var b strings.Builder
	fmt.Fprintf(&b, "first difference at line %d\n--- want\n", i+1)
	for _, l := range w[from:min(i+5, len(w))] {
		b.WriteString("  " + l + "\n")
	}
	b.WriteString("+++ got\n")
	for _, l := range g[from:min(i+5, len(g))] {
		b.WriteString("  " + l + "\n")
	}
	return b.String()
}
