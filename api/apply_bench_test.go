package api_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"testing"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/cryptomesh/cryptomesh/registry/mesh"
)

// benchDocument is a mesh document of a large ML system: n functions
// spread over 100 microservices of 10 services, on 50 endpoints, with
// storage, policies and roles, as JSON and as YAML.
func benchDocument(b *testing.B, n int) (jsonDoc, yamlDoc []byte, entities int) {
	b.Helper()
	sections := map[string]map[string]any{
		"roles": {}, "security_policies": {}, "storage": {}, "endpoints": {},
		"services": {}, "microservices": {}, "functions": {},
	}
	for i := range 20 {
		sections["roles"][fmt.Sprintf("role-%02d", i)] = map[string]any{
			"name": fmt.Sprintf("Role %d", i), "description": "generated for the benchmark",
			"permissions": []any{fmt.Sprintf("execute:fn_%d*", i), "read"},
		}
	}
	for i := range 10 {
		sections["security_policies"][fmt.Sprintf("policy-%d", i)] = map[string]any{
			"requires_authentication": true, "roles": []any{fmt.Sprintf("role-%02d", i), fmt.Sprintf("role-%02d", i+10)},
		}
		sections["storage"][fmt.Sprintf("store-%d", i)] = map[string]any{
			"capacity": "500GB", "source_path": fmt.Sprintf("/mnt/in/%d", i), "sink_path": fmt.Sprintf("/mnt/out/%d", i),
		}
		sections["services"][fmt.Sprintf("svc-%d", i)] = map[string]any{
			"security_policy": fmt.Sprintf("policy-%d", i), "resources": map[string]any{"cpu": 64, "ram": "256GB"},
		}
	}
	for i := range 50 {
		sections["endpoints"][fmt.Sprintf("node-%02d", i)] = map[string]any{
			"name": fmt.Sprintf("Node %d", i), "image": "registry.example/ml/worker:1.0.0",
			"resources":       map[string]any{"cpu": 16, "ram": "64GB"},
			"security_policy": fmt.Sprintf("policy-%d", i%10),
			"address":         fmt.Sprintf("127.0.0.1:%d", 20000+i), "workload_address": fmt.Sprintf("127.0.0.1:%d", 21000+i),
			"role": fmt.Sprintf("role-%02d", i%20),
		}
	}
	for i := range 100 {
		sections["microservices"][fmt.Sprintf("ms-%02d", i)] = map[string]any{
			"service_id": fmt.Sprintf("svc-%d", i%10), "resources": map[string]any{"cpu": 8, "ram": "32GB"},
		}
	}
	for i := range n {
		sections["functions"][fmt.Sprintf("fn_%05d", i)] = map[string]any{
			"microservice_id":   fmt.Sprintf("ms-%02d", i%100),
			"endpoint_id":       fmt.Sprintf("node-%02d", i%50),
			"image":             "registry.example/ml/fn:2.3.1",
			"resources":         map[string]any{"cpu": 1 + i%4, "ram": "2GB"},
			"storage":           fmt.Sprintf("store-%d", i%10),
			"deployment_status": "deployed",
			"timeout":           "30s",
		}
	}
	doc := map[string]any{"cryptomesh": "v1"}
	for k, v := range sections {
		doc[k] = v
		entities += len(v)
	}
	var err error
	if jsonDoc, err = json.Marshal(doc); err != nil {
		b.Fatal(err)
	}
	if yamlDoc, err = yaml.Marshal(doc); err != nil {
		b.Fatal(err)
	}
	return jsonDoc, yamlDoc, entities
}

// postApply posts a document to /api/v1/apply and decodes the report.
func postApply(b *testing.B, url string, doc []byte, ctype string) mesh.Report {
	b.Helper()
	req, err := http.NewRequest(http.MethodPost, url+"/api/v1/apply", bytes.NewReader(doc))
	if err != nil {
		b.Fatal(err)
	}
	req.Header.Set("Content-Type", ctype)
	req.Header.Set("Authorization", "Bearer "+benchToken)
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		b.Fatal(err)
	}
	defer res.Body.Close()
	raw, err := io.ReadAll(res.Body)
	if err != nil {
		b.Fatal(err)
	}
	if res.StatusCode != http.StatusOK {
		b.Fatalf("apply: %d %.300s", res.StatusCode, raw)
	}
	var rep mesh.Report
	if err := json.Unmarshal(raw, &rep); err != nil {
		b.Fatal(err)
	}
	return rep
}

// BenchmarkApply10kFunctions measures POST /api/v1/apply of a generated
// 10,000-function document end to end (HTTP on loopback, the file store
// with its fsync), as ratios against only parsing the same document with
// mesh.Parse, measured in the same run:
//
//	apply/parse    applying to an empty registry ÷ parsing (target ≤ 3)
//	reapply/parse  applying it again, unchanged ÷ parsing (target ≤ 1.5)
//
// with the absolute times per operation beside them.
func BenchmarkApply10kFunctions(b *testing.B) {
	jsonDoc, yamlDoc, entities := benchDocument(b, 10000)
	for _, f := range []struct {
		name   string
		doc    []byte
		ctype  string
		format mesh.Format
	}{
		{"json", jsonDoc, "application/json", mesh.JSON},
		{"yaml", yamlDoc, "application/yaml", mesh.YAML},
	} {
		b.Run(f.name, func(b *testing.B) {
			var parse, apply, reapply time.Duration
			b.SetBytes(int64(len(f.doc)))
			for b.Loop() {
				start := time.Now()
				if _, err := mesh.Parse(f.doc, f.format); err != nil {
					b.Fatal(err)
				}
				parse += time.Since(start)

				b.StopTimer()
				ts, reg, _ := benchServer(b, b.TempDir())
				b.StartTimer()

				start = time.Now()
				rep := postApply(b, ts.URL, f.doc, f.ctype)
				apply += time.Since(start)
				if rep.Created != entities {
					b.Fatalf("created %d of %d entities", rep.Created, entities)
				}

				rev := reg.Revision()
				start = time.Now()
				rep = postApply(b, ts.URL, f.doc, f.ctype)
				reapply += time.Since(start)
				if rep.Unchanged != entities || reg.Revision() != rev {
					b.Fatalf("re-apply: %d unchanged of %d, revision %d → %d", rep.Unchanged, entities, rev, reg.Revision())
				}

				b.StopTimer()
				ts.Close()
				reg.Close()
				b.StartTimer()
			}
			n := float64(b.N)
			ms := func(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 / n }
			b.ReportMetric(ms(parse), "parse-ms/op")
			b.ReportMetric(ms(apply), "apply-ms/op")
			b.ReportMetric(ms(reapply), "reapply-ms/op")
			b.ReportMetric(float64(apply)/float64(parse), "apply/parse")
			b.ReportMetric(float64(reapply)/float64(parse), "reapply/parse")
		})
	}
}
