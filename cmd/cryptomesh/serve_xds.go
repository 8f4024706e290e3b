package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/keepalive"

	"github.com/cryptomesh/cryptomesh/api"
	"github.com/cryptomesh/cryptomesh/registry"
	"github.com/cryptomesh/cryptomesh/xds"
	"github.com/cryptomesh/cryptomesh/xds/ads"
)

// The xDS side of `cryptomesh server` (SPEC §6): the ADS server on
// --xds-addr, always over TLS with the control plane's certificate (grpc-go
// sends its call credentials only over TLS), its readiness and its stop.

type xdsFlags struct {
	addr string
	// testCorrupt names a resource every node is sent in a form it cannot
	// parse, after validation: for the end-to-end test of NACK handling.
	testCorrupt string
}

func addXDSFlags(fs *flag.FlagSet, c *xdsFlags) {
	fs.StringVar(&c.addr, "xds-addr", xds.DefaultXDSServer, "address of the xDS (ADS) server, TLS with the control plane's certificate")
	fs.StringVar(&c.testCorrupt, "xds-test-corrupt", "", "for tests only: send the xDS resource of this name to every node as bytes it cannot parse")
}

// xdsServer is the running ADS server.
type xdsServer struct {
	ads     *ads.Server
	grpc    *grpc.Server
	addr    string
	serving chan struct{} // closed once Serve runs
	done    chan error    // failures of Serve and Run
	once    sync.Once
}

// startXDS listens on --xds-addr and serves ADS until stop.
func startXDS(ctx context.Context, f xdsFlags, reg *registry.Registry, id *serverIdentity, promReg prometheus.Registerer, log *slog.Logger) (*xdsServer, error) {
	opts := []ads.Option{
		ads.WithLogger(log),
		ads.WithRegisterer(promReg),
		ads.WithTrustDomain(id.api.TrustDomain.Name()),
	}
	if id.ca != nil {
		opts = append(opts, ads.WithSigner(id.ca))
	}
	if f.testCorrupt != "" {
		name := f.testCorrupt
		log.Warn("xDS: --xds-test-corrupt: a resource is sent unparseable, for tests", "name", name)
		opts = append(opts, ads.WithTestResourceHook(func(_ xds.Node, r *xds.Resource) *xds.Resource {
			if r.Name != name {
				return r
			}
			bad := *r
			bad.Bytes = []byte{0xff, 0xff, 0xff}
			bad.Version = "corrupt-" + r.Version
			return &bad
		}))
	}
	srv, err := ads.New(reg, id.api.Nodes, opts...)
	if err != nil {
		return nil, fmt.Errorf("xDS: %w", err)
	}
	ln, err := net.Listen("tcp", f.addr)
	if err != nil {
		return nil, fmt.Errorf("listen on --xds-addr %s: %w", f.addr, err)
	}
	gs := grpc.NewServer(
		grpc.Creds(credentials.NewTLS(id.tlsConfig())),
		// Streams live for hours: keepalives find dead nodes, and nodes
		// may ping every 30 s to keep NATs open.
		grpc.KeepaliveParams(keepalive.ServerParameters{Time: time.Minute, Timeout: 20 * time.Second}),
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{MinTime: 30 * time.Second, PermitWithoutStream: true}),
	)
	srv.Register(gs)
	x := &xdsServer{ads: srv, grpc: gs, addr: ln.Addr().String(), serving: make(chan struct{}), done: make(chan error, 2)}
	go func() {
		if err := srv.Run(ctx); err != nil {
			x.done <- err
		}
	}()
	go func() {
		close(x.serving)
		if err := gs.Serve(ln); err != nil && !errors.Is(err, grpc.ErrServerStopped) {
			x.done <- err
		}
	}()
	log.Info("serving xDS", "addr", x.addr)
	return x, nil
}

// ready is the xDS part of /readyz: listening, and a revision translated.
func (x *xdsServer) ready() error {
	select {
	case <-x.serving:
	default:
		return errors.New("not serving yet")
	}
	return x.ads.Ready()
}

// stop ends every stream (nodes reconnect, to another replica if any) and
// waits up to grace for the gRPC server to finish.
func (x *xdsServer) stop(grace time.Duration) {
	x.once.Do(func() { x.stopNow(grace) })
}

func (x *xdsServer) stopNow(grace time.Duration) {
	x.ads.Close()
	stopped := make(chan struct{})
	go func() {
		x.grpc.GracefulStop()
		close(stopped)
	}()
	select {
	case <-stopped:
	case <-time.After(grace):
		x.grpc.Stop()
	}
}

// Proxies implements api.ProxySource over the ADS server's streams.
func (x *xdsServer) Proxies() []api.Proxy {
	streams := x.ads.Streams()
	out := make([]api.Proxy, 0, len(streams))
	for _, s := range streams {
		p := api.Proxy{
			Node: s.Node, Binding: s.Binding, SPIFFEID: s.SPIFFEID, Kind: s.Kind, Credential: s.Credential,
			Peer: s.Peer, ConnectedSince: s.ConnectedAt.UTC(),
		}
		for _, t := range s.Types {
			pt := api.ProxyType{
				Type: t.Type, TypeURL: t.TypeURL, Wildcard: t.Wildcard, Names: t.Names, Requests: t.Requests,
				SentVersion: t.SentVersion, AckedVersion: t.AckedVersion, Nacks: t.Nacks,
			}
			if !t.AckedAt.IsZero() {
				at := t.AckedAt.UTC()
				pt.AckedAt = &at
			}
			if t.LastNack != nil {
				pt.LastNack = &api.ProxyNack{Version: t.LastNack.Version, Error: t.LastNack.Error, At: t.LastNack.At.UTC()}
			}
			p.Types = append(p.Types, pt)
		}
		out = append(out, p)
	}
	return out
}
