package registry_test

import (
	"context"
	"encoding/json"
	"strings"
	"testing"

	"github.com/cryptomesh/cryptomesh/registry"
)

// FuzzCreate feeds arbitrary bodies through decoding, validation and the
// write path. Whatever the input, the registry must answer with a
// registry error or a stored entity that reads back the same, and a
// refused write must leave the registry unchanged.
func FuzzCreate(f *testing.F) {
	seeds := []struct {
		kind int
		body string
	}{
		{0, `{"role_id":"r1","name":"x","permissions":["execute:ml_*","read"]}`},
		{1, `{"roles":["r0"],"requires_authentication":true,"mode":"audit"}`},
		{2, `{"capacity":"1.5GB","source_path":"/a","sink_path":"/b"}`},
		{3, `{"security_policy":{"roles":[],"requires_authentication":false},"address":"127.0.0.1:80"}`},
		{7, `{"function_id":"f","resources":{"cpu":1,"ram":"1kb"},"timeout":"0","storage":{"capacity":"1TB","source_path":"a","sink_path":"b"}}`},
		{7, `{"resources":{"cpu":1e3,"ram":null},"endpoint_id":"","deployment_status":"failed"}`},
		{8, `{"function_id":"f0","state":"running","metadata":{"a":"b"}}`},
		{5, `{"security_policy":"p0","microservices":["m0","m0"]}`},
		{0, `[]`},
		{0, `{"role_id":{"x":1}}`},
	}
	for _, s := range seeds {
		f.Add(s.kind, s.body)
	}
	kinds := registry.Kinds()
	f.Fuzz(func(t *testing.T, kind int, body string) {
		k := kinds[(kind%len(kinds)+len(kinds))%len(kinds)]
		dec := json.NewDecoder(strings.NewReader(body))
		dec.UseNumber()
		var m map[string]any
		if dec.Decode(&m) != nil || m == nil {
			return // not an object: the API answers 400/422 before the registry
		}
		r := fuzzRegistry(t)
		rev := r.Revision()
		res, err := r.Do(context.Background(), registry.Op{Type: registry.OpCreate, Kind: k, Body: m})
		if err != nil {
			if registry.CodeOf(err) == 0 || registry.CodeOf(err) == registry.CodeUnavailable {
				t.Fatalf("not a client error: %v", err)
			}
			if r.Revision() != rev {
				t.Fatalf("a refused write changed the revision")
			}
			return
		}
		got, err := r.View().Get(k, res[0].ID)
		if err != nil {
			t.Fatalf("created %s %q cannot be read: %v", k, res[0].ID, err)
		}
		a, _ := json.Marshal(got)
		b, _ := json.Marshal(res[0].Value)
		if string(a) != string(b) {
			t.Fatalf("read back differs:\n%s\n%s", a, b)
		}
	})
}

// fuzzRegistry opens a registry holding a few entities for references to
// resolve against. Each fuzz input gets a fresh one: a stateful target
// makes coverage irreproducible and stalls the fuzzer's minimizer.
func fuzzRegistry(t *testing.T) *registry.Registry {
	r, err := registry.Open(context.Background(), &logStore{}, registry.WithLogger(quiet))
	if err != nil {
		t.Fatal(err)
	}
	// A few entities for references to resolve against.
	for _, op := range []struct {
		k  registry.Kind
		js string
	}{
		{registry.KindRole, `{"role_id":"r0","name":"r0"}`},
		{registry.KindSecurityPolicy, `{"sp_id":"p0","roles":["r0"],"requires_authentication":true}`},
		{registry.KindService, `{"service_id":"s0","security_policy":"p0"}`},
		{registry.KindMicroservice, `{"microservice_id":"m0","service_id":"s0"}`},
		{registry.KindFunction, `{"function_id":"f0","microservice_id":"m0"}`},
	} {
		var m map[string]any
		if err := json.Unmarshal([]byte(op.js), &m); err != nil {
			t.Fatal(err)
		}
		if _, err := r.Do(context.Background(), registry.Op{Type: registry.OpCreate, Kind: op.k, Body: m}); err != nil {
			t.Fatal(err)
		}
	}
	return r
}
