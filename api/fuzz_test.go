package api

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"testing"

	"github.com/cryptomesh/cryptomesh/registry"
	"github.com/cryptomesh/cryptomesh/registry/store/memstore"
)

// FuzzDecodeAndValidate feeds arbitrary bytes through the request body
// decoder and, when they decode, through the registry's validation and
// write path. Every input must end in a client error (4xx) or a stored
// entity: never a panic, never a server error.
func FuzzDecodeAndValidate(f *testing.F) {
	for _, s := range []string{
		`{"role_id":"r","name":"x","permissions":["execute:ml_*"]}`,
		`{"name":"x","name":"y"}`,
		`{"a":{"b":{"c":[1,2,{"d":null}]}}}`,
		`[1,2]`, `"x"`, `{`, `{}{}`, `{"resources":{"cpu":1e400}}`,
		"{\"name\":\"\xff\"}", `{"security_policy":{"roles":[],"requires_authentication":false}}`,
	} {
		f.Add(s)
	}
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	f.Fuzz(func(t *testing.T, body string) {
		obj, err := decodeObject([]byte(body))
		if err != nil {
			var he *httpError
			if !errors.As(err, &he) || he.status < 400 || he.status >= 500 {
				t.Fatalf("decode error is not a client error: %v", err)
			}
			return
		}
		reg, err := registry.Open(context.Background(), memstore.New(), registry.WithLogger(quiet))
		if err != nil {
			t.Fatal(err)
		}
		defer reg.Close()
		for _, k := range []registry.Kind{registry.KindRole, registry.KindEndpoint, registry.KindFunction} {
			_, err := reg.Do(context.Background(), registry.Op{Type: registry.OpCreate, Kind: k, Body: obj})
			if status := toHTTP(err).status; err != nil && (status < 400 || status >= 500) {
				t.Fatalf("create %s: status %d for %v", k, status, err)
			}
		}
	})
}
