package etcdstore_test

import (
	"testing"

	"github.com/cryptomesh/cryptomesh/registry"
	"github.com/cryptomesh/cryptomesh/registry/registrytest"
	"github.com/cryptomesh/cryptomesh/registry/store/etcdstore"
	"github.com/cryptomesh/cryptomesh/registry/store/etcdstore/etcdtest"
)

// etcdCluster runs the replicated-store contract (the same scenarios the
// registry's tests run on an in-memory shared log) on a real etcd: each
// replica is a registry on its own store and client.
type etcdCluster struct {
	srv   *etcdtest.Server
	probe *etcdstore.Store // reads the head
}

func (c etcdCluster) Open(t *testing.T) *registry.Registry {
	r, _ := openRegistry(t, c.srv.Endpoint())
	return r
}

func (c etcdCluster) Head(t *testing.T) uint64 {
	return head(t, c.probe)
}

func TestReplicatedContract(t *testing.T) {
	registrytest.RunReplicated(t, func(t *testing.T) registrytest.Cluster {
		srv := etcdtest.Start(t)
		return etcdCluster{srv: srv, probe: openStore(t, []string{srv.Endpoint()})}
	})
}
