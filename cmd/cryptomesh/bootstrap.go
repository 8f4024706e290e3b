package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"google.golang.org/protobuf/encoding/protojson"

	"github.com/cryptomesh/cryptomesh/identity"
	"github.com/cryptomesh/cryptomesh/identity/agent"
	"github.com/cryptomesh/cryptomesh/xds"
	"github.com/cryptomesh/cryptomesh/xds/ads"
)

// runBootstrap is `cryptomesh bootstrap grpc|envoy`: it prints the
// bootstrap a node starts from (SPEC §6). Nothing is asked of the control
// plane; what the node needs beyond the bootstrap (its SVID files, its
// token) comes from `cryptomesh agent` and `cryptomesh token create`.
func runBootstrap(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	const synopsis = "cryptomesh bootstrap grpc --node N --dir DIR [--xds-server host:port] [--ca-file PEM] | bootstrap envoy --node N --token-file F --ca-file PEM [--xds-server host:port]"
	if len(args) == 0 {
		return usageError{fmt.Errorf("want %s", synopsis)}
	}
	switch args[0] {
	case "grpc":
		return runBootstrapGRPC(args[1:], stdout, stderr)
	case "envoy":
		return runBootstrapEnvoy(args[1:], stdout, stderr)
	case "-h", "--help", "help":
		fmt.Fprintf(stderr, "Usage: %s\n", synopsis)
		return flag.ErrHelp
	}
	return usageError{fmt.Errorf("unknown bootstrap kind %q; want %s", args[0], synopsis)}
}

// runBootstrapGRPC prints a gRPC xDS bootstrap over the files that
// `cryptomesh agent --dir DIR` keeps fresh.
func runBootstrapGRPC(args []string, stdout, stderr io.Writer) error {
	var node, dir, server, caFile, refresh string
	fs := flag.NewFlagSet("bootstrap grpc", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&node, "node", "", "the node's name (its xDS node id; its join token must be for it)")
	fs.StringVar(&dir, "dir", "", "the directory `cryptomesh agent --dir` keeps the SVID, key, bundle and token in")
	fs.StringVar(&server, "xds-server", xds.DefaultXDSServer, "host:port of the control plane's xDS server; the host must be in its certificate (--san)")
	fs.StringVar(&caFile, "ca-file", "", "PEM bundle to verify the control plane by (default DIR/"+agent.BundleFile+")")
	fs.StringVar(&refresh, "refresh", "60s", "how often grpc-go re-reads the files")
	fs.Usage = usageWithEnv(fs, "cryptomesh bootstrap grpc --node N --dir DIR [--xds-server host:port] [--ca-file PEM] [flags]")
	if _, err := parseCommand(fs, args, 0, 0, ""); err != nil {
		return err
	}
	if node == "" || dir == "" {
		return usageError{errors.New("--node N and --dir DIR are required")}
	}
	if err := identity.ValidateName("node", node); err != nil {
		return usageError{err}
	}
	out, err := xds.GRPCBootstrapJSON(xds.GRPCBootstrap{
		Node: node, Server: server,
		CertFile: filepath.Join(dir, agent.SVIDFile), KeyFile: filepath.Join(dir, agent.KeyFile),
		BundleFile: filepath.Join(dir, agent.BundleFile), TokenFile: filepath.Join(dir, agent.TokenFile),
		ServerCAFile: caFile, RefreshInterval: refresh,
	})
	if err != nil {
		return usageError{err}
	}
	if _, err := stdout.Write(out); err != nil {
		return err
	}
	fmt.Fprintf(stderr, "gRPC xDS bootstrap for node %s. Run the node with GRPC_XDS_BOOTSTRAP=<this file> and "+
		"GRPC_EXPERIMENTAL_XDS_BOOTSTRAP_CALL_CREDS=true (without it grpc-go drops the join token and the control plane refuses the stream), "+
		"and keep %s fresh with `cryptomesh agent --node %s --dir %s --token-file <token>`.\n", node, dir, node, dir)
	return nil
}

// runBootstrapEnvoy prints an Envoy v3 bootstrap as JSON (Envoy reads JSON
// or YAML).
func runBootstrapEnvoy(args []string, stdout, stderr io.Writer) error {
	var b xds.EnvoyBootstrap
	var tokenFile string
	fs := flag.NewFlagSet("bootstrap envoy", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&b.Node, "node", "", "the node's name (its xDS node id; its join token must be for it)")
	fs.StringVar(&tokenFile, "token-file", "", "file holding the node's join token (written into the bootstrap: keep it private)")
	fs.StringVar(&b.ServerCAFile, "ca-file", "", "PEM bundle Envoy verifies the control plane by (GET /api/v1/identity/bundle)")
	fs.StringVar(&b.Server, "xds-server", xds.DefaultXDSServer, "host:port of the control plane's xDS server")
	fs.StringVar(&b.TrustDomain, "trust-domain", identity.DefaultTrustDomain, "SPIFFE trust domain; the control plane must present its ID")
	fs.StringVar(&b.AdminAddress, "admin-addr", xds.DefaultEnvoyAdminAddress, "Envoy's admin listener (loopback only)")
	fs.StringVar(&b.OutboundAddress, "outbound-addr", "", "IP:port of the outbound listener (default "+xds.DefaultOutboundAddress+")")
	fs.Usage = usageWithEnv(fs, "cryptomesh bootstrap envoy --node N --token-file F --ca-file PEM [--xds-server host:port] [flags]")
	if _, err := parseCommand(fs, args, 0, 0, ""); err != nil {
		return err
	}
	if b.Node == "" || tokenFile == "" || b.ServerCAFile == "" {
		return usageError{errors.New("--node N, --token-file F and --ca-file PEM are required")}
	}
	if err := identity.ValidateName("node", b.Node); err != nil {
		return usageError{err}
	}
	tok, err := os.ReadFile(tokenFile)
	if err != nil {
		return fmt.Errorf("--token-file: %w", err)
	}
	b.Token = strings.TrimSpace(string(tok))
	b.OutboundAddressKey = ads.OutboundAddressKey
	bs, err := xds.EnvoyBootstrapConfig(b)
	if err != nil {
		return usageError{err}
	}
	out, err := protojson.MarshalOptions{Multiline: true, Indent: "  "}.Marshal(bs)
	if err != nil {
		return fmt.Errorf("encode the bootstrap: %w", err)
	}
	if _, err := stdout.Write(append(out, '\n')); err != nil {
		return err
	}
	fmt.Fprintf(stderr, "Envoy bootstrap for node %s: it holds the join token, keep it private. Envoy gets its SVID over SDS.\n", b.Node)
	return nil
}
