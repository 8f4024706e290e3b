package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	xdscreds "google.golang.org/grpc/credentials/xds"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	grpcmetadata "google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/grpc/xds"

	"github.com/cryptomesh/cryptomesh/identity/agent"
)

// The gRPC processes of the xDS end-to-end test are this test binary run
// again with xdsChildEnv set (TestMain hands over to xdsChild): real
// separate processes, configured by the environment as a user would
// configure theirs (GRPC_XDS_BOOTSTRAP and friends), talking lines on
// stdout to the test.

const (
	xdsChildEnv  = "XDS_E2E_CHILD"  // server, client or direct
	xdsAddrEnv   = "XDS_E2E_ADDR"   // server: where to bind; direct: whom to call
	xdsNameEnv   = "XDS_E2E_NAME"   // server: the name it answers with
	xdsTargetEnv = "XDS_E2E_TARGET" // client: comma-separated xDS targets; direct: the :authority
	xdsDirEnv    = "XDS_E2E_DIR"    // direct: the agent directory of its SVID ("" for none)
	servedByKey  = "served-by"
)

// xdsChild runs one role and returns the exit code.
func xdsChild(role string) int {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	var err error
	switch role {
	case "server":
		err = childServer(ctx)
	case "client":
		err = childClient(ctx)
	case "direct":
		err = childDirect(ctx)
	default:
		err = fmt.Errorf("unknown role %q", role)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "child:", err)
		return 1
	}
	return 0
}

// childServer hosts the health service behind an xDS server (TLS and RBAC
// from the control plane) and tags every answer with its name.
func childServer(ctx context.Context) error {
	addr, name := os.Getenv(xdsAddrEnv), os.Getenv(xdsNameEnv)
	creds, err := xdscreds.NewServerCredentials(xdscreds.ServerOptions{FallbackCreds: insecure.NewCredentials()})
	if err != nil {
		return err
	}
	tag := func(ctx context.Context, req any, _ *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
		_ = grpc.SetHeader(ctx, grpcmetadata.Pairs(servedByKey, name))
		return h(ctx, req)
	}
	srv, err := xds.NewGRPCServer(grpc.Creds(creds), grpc.UnaryInterceptor(tag),
		xds.ServingModeCallback(func(a net.Addr, args xds.ServingModeChangeArgs) {
			fmt.Printf("MODE %s %v\n", args.Mode, args.Err)
		}))
	if err != nil {
		return err
	}
	healthpb.RegisterHealthServer(srv, health.NewServer())
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return err
	}
	go func() {
		<-ctx.Done()
		srv.Stop()
	}()
	if err := srv.Serve(ln); err != nil && !errors.Is(err, grpc.ErrServerStopped) {
		return err
	}
	return nil
}

// childClient calls every target over xds:/// every 100 ms and prints
// "RESULT <target> <code> <served-by>" for each call.
func childClient(ctx context.Context) error {
	creds, err := xdscreds.NewClientCredentials(xdscreds.ClientOptions{FallbackCreds: insecure.NewCredentials()})
	if err != nil {
		return err
	}
	var clients []healthpb.HealthClient
	targets := strings.Split(os.Getenv(xdsTargetEnv), ",")
	for _, target := range targets {
		conn, err := grpc.NewClient("xds:///"+target, grpc.WithTransportCredentials(creds))
		if err != nil {
			return err
		}
		defer conn.Close()
		clients = append(clients, healthpb.NewHealthClient(conn))
	}
	// One loop per target: a target that cannot be reached (its calls
	// wait out their deadline) does not slow the others.
	var mu sync.Mutex
	var wg sync.WaitGroup
	for i, c := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			tick := time.NewTicker(100 * time.Millisecond)
			defer tick.Stop()
			for {
				cctx, cancel := context.WithTimeout(ctx, 2*time.Second)
				var md grpcmetadata.MD
				_, err := c.Check(cctx, &healthpb.HealthCheckRequest{}, grpc.Header(&md))
				cancel()
				by := "-"
				if v := md.Get(servedByKey); len(v) > 0 {
					by = v[0]
				}
				mu.Lock()
				fmt.Printf("RESULT %s %s %s\n", targets[i], status.Code(err), by)
				mu.Unlock()
				select {
				case <-ctx.Done():
					return
				case <-tick.C:
				}
			}
		}()
	}
	wg.Wait()
	return nil
}

// childDirect calls a server once, without xDS: plain TLS with the SVID
// the agent keeps in its directory (or none), as a caller the control plane
// gave no route to would, and prints "RESULT <code>". The server is
// checked against the bundle only: what is tested is the server's side.
func childDirect(ctx context.Context) error {
	dir := os.Getenv(xdsDirEnv)
	bundleDir := dir
	if bundleDir == "" {
		bundleDir = os.Getenv(xdsNameEnv) // some agent's directory, for the bundle alone
	}
	bundle, err := os.ReadFile(filepath.Join(bundleDir, agent.BundleFile))
	if err != nil {
		return err
	}
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(bundle) {
		return errors.New("no certificate in the bundle")
	}
	tc := &tls.Config{
		// The server's SVID has a URI SAN and no DNS name: verify the
		// chain, not a host name.
		InsecureSkipVerify: true,
		VerifyPeerCertificate: func(raw [][]byte, _ [][]*x509.Certificate) error {
			var certs []*x509.Certificate
			for _, r := range raw {
				c, err := x509.ParseCertificate(r)
				if err != nil {
					return err
				}
				certs = append(certs, c)
			}
			inter := x509.NewCertPool()
			for _, c := range certs[1:] {
				inter.AddCert(c)
			}
			_, err := certs[0].Verify(x509.VerifyOptions{Roots: roots, Intermediates: inter, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}})
			return err
		},
	}
	if dir != "" {
		cert, err := tls.LoadX509KeyPair(filepath.Join(dir, agent.SVIDFile), filepath.Join(dir, agent.KeyFile))
		if err != nil {
			return err
		}
		tc.Certificates = []tls.Certificate{cert}
	}
	conn, err := grpc.NewClient(os.Getenv(xdsAddrEnv), grpc.WithTransportCredentials(credentials.NewTLS(tc)),
		grpc.WithAuthority(os.Getenv(xdsTargetEnv)))
	if err != nil {
		return err
	}
	defer conn.Close()
	cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	_, err = healthpb.NewHealthClient(conn).Check(cctx, &healthpb.HealthCheckRequest{})
	code := status.Code(err)
	if code == codes.DeadlineExceeded {
		code = codes.Unavailable // never connected
	}
	fmt.Printf("RESULT %s %v\n", code, err)
	return nil
}
