package main

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	bootstrapv3 "github.com/envoyproxy/go-control-plane/envoy/config/bootstrap/v3"
	"google.golang.org/protobuf/encoding/protojson"
)

// TestBootstrapCommands: `bootstrap envoy` prints a bootstrap that parses
// as Envoy's v3 Bootstrap and passes its validation, with the token from
// --token-file; `bootstrap grpc` names DIR's files and says on stderr what
// the process needs; missing flags are usage errors.
func TestBootstrapCommands(t *testing.T) {
	dir := t.TempDir()
	tokenFile := filepath.Join(dir, "web.token")
	if err := os.WriteFile(tokenFile, []byte("aaa.bbb.ccc\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	var stdout, stderr bytes.Buffer
	cmd := exec.Command(binPath, "bootstrap", "envoy", "--node", "web-1", "--token-file", tokenFile, "--ca-file", filepath.Join(dir, "bundle.pem"))
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("bootstrap envoy: %v\n%s", err, stderr.String())
	}
	var bs bootstrapv3.Bootstrap
	if err := protojson.Unmarshal(stdout.Bytes(), &bs); err != nil {
		t.Fatalf("not an Envoy bootstrap: %v\n%s", err, stdout.String())
	}
	if err := bs.ValidateAll(); err != nil {
		t.Fatalf("ValidateAll: %v", err)
	}
	md := bs.GetDynamicResources().GetAdsConfig().GetGrpcServices()[0].GetInitialMetadata()
	if bs.GetNode().GetId() != "web-1" || len(md) != 1 || md[0].GetValue() != "Bearer aaa.bbb.ccc" {
		t.Fatalf("node %v, metadata %v", bs.GetNode(), md)
	}

	stdout.Reset()
	stderr.Reset()
	cmd = exec.Command(binPath, "bootstrap", "grpc", "--node", "online-1", "--dir", dir)
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("bootstrap grpc: %v\n%s", err, stderr.String())
	}
	for _, want := range []string{filepath.Join(dir, "svid.pem"), filepath.Join(dir, "token"), `"server_uri": "127.0.0.1:18000"`, `"id": "online-1"`} {
		if !strings.Contains(stdout.String(), want) {
			t.Errorf("the gRPC bootstrap lacks %s:\n%s", want, stdout.String())
		}
	}
	for _, want := range []string{"GRPC_EXPERIMENTAL_XDS_BOOTSTRAP_CALL_CREDS=true", "cryptomesh agent"} {
		if !strings.Contains(stderr.String(), want) {
			t.Errorf("stderr does not say %s: %s", want, stderr.String())
		}
	}

	for _, args := range [][]string{
		{"bootstrap", "grpc", "--node", "n"},
		{"bootstrap", "envoy", "--node", "n", "--ca-file", "x"},
		{"bootstrap", "envoy", "--node", "n", "--token-file", tokenFile, "--ca-file", "x", "--admin-addr", "0.0.0.0:15000"},
		{"bootstrap", "nginx"},
	} {
		err := exec.Command(binPath, args...).Run()
		if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != exitUsage {
			t.Errorf("%v: %v, want exit %d", args, err, exitUsage)
		}
	}
}
