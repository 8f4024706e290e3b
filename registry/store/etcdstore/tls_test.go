package etcdstore_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/cryptomesh/cryptomesh/registry"
	"github.com/cryptomesh/cryptomesh/registry/registrytest"
	"github.com/cryptomesh/cryptomesh/registry/store/etcdstore"
	"github.com/cryptomesh/cryptomesh/registry/store/etcdstore/etcdtest"
)

func TestTLSWithClientCertificates(t *testing.T) {
	srv := etcdtest.Start(t, etcdtest.WithTLS())
	f := srv.TLS()
	eps := []string{srv.Endpoint()}
	refused := func(name string, opts ...etcdstore.Option) {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		opts = append([]etcdstore.Option{etcdstore.WithLogger(quiet), etcdstore.WithDialTimeout(time.Second)}, opts...)
		if st, err := etcdstore.Open(ctx, eps, opts...); err == nil {
			st.Close()
			t.Fatalf("%s: connected", name)
		}
	}
	refused("plain text")
	refused("no client certificate", etcdstore.WithTLSFiles(f.CA, "", ""))
	refused("an unknown CA", etcdstore.WithTLSFiles(f.ClientCert, f.ClientCert, f.ClientKey))

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := etcdstore.Open(ctx, eps, etcdstore.WithTLSFiles(f.CA, f.ClientCert, "")); err == nil || !strings.Contains(err.Error(), "both") {
		t.Fatalf("a certificate without its key: %v", err)
	}

	r, _ := openRegistry(t, srv.Endpoint(), etcdstore.WithTLSFiles(f.CA, f.ClientCert, f.ClientKey))
	registrytest.Seed(t, r)
	again, _ := openRegistry(t, srv.Endpoint(), etcdstore.WithTLSFiles(f.CA, f.ClientCert, f.ClientKey))
	registrytest.WaitConverged(t, []*registry.Registry{r, again}, r.Revision())
}
