package xds

import (
	"crypto"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
)

// tlsVariant says how a TLS context names the node's SVID and bundle.
type tlsVariant int

const (
	// tlsSDS names SDS secrets `default` and `ROOTCA` (Envoy, proxy).
	tlsSDS tlsVariant = iota + 1
	// tlsProviders names certificate provider instances `default` and
	// `ROOTCA`, which a gRPC bootstrap defines over files: grpc-go NACKs
	// SDS secret configs.
	tlsProviders
)

func (v tlsVariant) String() string {
	if v == tlsProviders {
		return "providers"
	}
	return "sds"
}

// sdsSource is where Envoy and proxy nodes fetch secrets: over ADS from the
// control plane, or from the SDS cluster of Options (a SPIRE agent).
func (t *Translator) sdsSource() *corev3.ConfigSource {
	if t.sds == "" {
		return adsSource()
	}
	return &corev3.ConfigSource{
		ResourceApiVersion: corev3.ApiVersion_V3,
		ConfigSourceSpecifier: &corev3.ConfigSource_ApiConfigSource{ApiConfigSource: &corev3.ApiConfigSource{
			ApiType:             corev3.ApiConfigSource_GRPC,
			TransportApiVersion: corev3.ApiVersion_V3,
			GrpcServices: []*corev3.GrpcService{{TargetSpecifier: &corev3.GrpcService_EnvoyGrpc_{
				EnvoyGrpc: &corev3.GrpcService_EnvoyGrpc{ClusterName: t.sds},
			}}},
		}},
	}
}

// adsSource is "over the ADS stream this resource came on".
func adsSource() *corev3.ConfigSource {
	return &corev3.ConfigSource{
		ResourceApiVersion:    corev3.ApiVersion_V3,
		ConfigSourceSpecifier: &corev3.ConfigSource_Ads{Ads: &corev3.AggregatedConfigSource{}},
	}
}

// commonTLS presents the node's SVID and validates peers against the
// bundle, plus whatever validation is given (SAN matchers).
func (t *Translator) commonTLS(v tlsVariant, validation *tlsv3.CertificateValidationContext, alpn []string) *tlsv3.CommonTlsContext {
	c := &tlsv3.CommonTlsContext{AlpnProtocols: alpn}
	if v == tlsProviders {
		c.TlsCertificateProviderInstance = &tlsv3.CertificateProviderPluginInstance{InstanceName: secretCertName}
		if validation == nil {
			validation = &tlsv3.CertificateValidationContext{}
		}
		// grpc-go NACKs a context without a CA provider instance.
		validation.CaCertificateProviderInstance = &tlsv3.CertificateProviderPluginInstance{InstanceName: secretRootCAName}
		c.ValidationContextType = &tlsv3.CommonTlsContext_ValidationContext{ValidationContext: validation}
		return c
	}
	c.TlsCertificateSdsSecretConfigs = []*tlsv3.SdsSecretConfig{{Name: secretCertName, SdsConfig: t.sdsSource()}}
	rootCA := &tlsv3.SdsSecretConfig{Name: secretRootCAName, SdsConfig: t.sdsSource()}
	if validation == nil {
		c.ValidationContextType = &tlsv3.CommonTlsContext_ValidationContextSdsSecretConfig{ValidationContextSdsSecretConfig: rootCA}
		return c
	}
	// The SAN matchers are static and the bundle rotates: Envoy merges the
	// two with a combined validation context.
	c.ValidationContextType = &tlsv3.CommonTlsContext_CombinedValidationContext{
		CombinedValidationContext: &tlsv3.CommonTlsContext_CombinedCertificateValidationContext{
			DefaultValidationContext:         validation,
			ValidationContextSdsSecretConfig: rootCA,
		},
	}
	return c
}

// tlsRefs are the secrets a TLS context of variant v names, for the
// snapshot's reference check.
func tlsRefs(v tlsVariant) []ref {
	if v == tlsProviders {
		return nil // defined by the node's bootstrap, not served
	}
	return []ref{secretRef(secretCertName), secretRef(secretRootCAName)}
}

// ErrCredentials reports credentials that are not the node's own or that
// do not parse.
var ErrCredentials = errors.New("bad credentials")

// secrets builds the node's `default` (its SVID and key) and `ROOTCA` (the
// bundle) secrets. `default` is the node's alone and never shared; the
// bundle is the same for every node and built once per content.
func (t *Translator) secrets(expectedID string, c *Credentials) ([]*Resource, error) {
	if err := checkSVID(expectedID, c.CertChainPEM, c.KeyPEM); err != nil {
		return nil, err
	}
	if err := checkBundle(c.BundlePEM); err != nil {
		return nil, err
	}
	cert, err := t.chk.newResource(resourcev3.SecretType, secretCertName, &tlsv3.Secret{
		Name: secretCertName,
		Type: &tlsv3.Secret_TlsCertificate{TlsCertificate: &tlsv3.TlsCertificate{
			CertificateChain: inlineBytes(c.CertChainPEM),
			PrivateKey:       inlineBytes(c.KeyPEM),
		}},
	})
	if err != nil {
		return nil, err
	}
	root, err := t.resources.get("sds/rootca/"+hashHex(c.BundlePEM), func() (*Resource, error) {
		return t.chk.newResource(resourcev3.SecretType, secretRootCAName, &tlsv3.Secret{
			Name: secretRootCAName,
			Type: &tlsv3.Secret_ValidationContext{ValidationContext: &tlsv3.CertificateValidationContext{
				TrustedCa: inlineBytes(c.BundlePEM),
			}},
		})
	})
	if err != nil {
		return nil, err
	}
	return []*Resource{cert, root}, nil
}

func inlineBytes(b []byte) *corev3.DataSource {
	return &corev3.DataSource{Specifier: &corev3.DataSource_InlineBytes{InlineBytes: b}}
}

// checkSVID makes sure the chain's leaf is an X.509-SVID for exactly the
// node's SPIFFE ID and that the key belongs to it, so that a wiring mistake
// can never hand one node another node's identity.
func checkSVID(expectedID string, chainPEM, keyPEM []byte) error {
	block, _ := pem.Decode(chainPEM)
	if block == nil || block.Type != "CERTIFICATE" {
		return fmt.Errorf("%w: the certificate chain has no PEM certificate", ErrCredentials)
	}
	leaf, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		return fmt.Errorf("%w: parse SVID: %w", ErrCredentials, err)
	}
	if len(leaf.URIs) != 1 || leaf.URIs[0].String() != expectedID {
		return fmt.Errorf("%w: the SVID is for %v, the node is %s", ErrCredentials, leaf.URIs, expectedID)
	}
	key, err := parsePrivateKey(keyPEM)
	if err != nil {
		return err
	}
	pub, ok := key.Public().(interface{ Equal(crypto.PublicKey) bool })
	if !ok || !pub.Equal(leaf.PublicKey) {
		return fmt.Errorf("%w: the private key does not belong to the SVID", ErrCredentials)
	}
	return nil
}

func parsePrivateKey(keyPEM []byte) (crypto.Signer, error) {
	block, _ := pem.Decode(keyPEM)
	if block == nil {
		return nil, fmt.Errorf("%w: the key is not PEM", ErrCredentials)
	}
	var key any
	var err error
	switch block.Type {
	case "PRIVATE KEY":
		key, err = x509.ParsePKCS8PrivateKey(block.Bytes)
	case "EC PRIVATE KEY":
		key, err = x509.ParseECPrivateKey(block.Bytes)
	case "RSA PRIVATE KEY":
		key, err = x509.ParsePKCS1PrivateKey(block.Bytes)
	default:
		return nil, fmt.Errorf("%w: unsupported key block %q", ErrCredentials, block.Type)
	}
	if err != nil {
		return nil, fmt.Errorf("%w: parse key: %w", ErrCredentials, err)
	}
	signer, ok := key.(crypto.Signer)
	if !ok {
		return nil, fmt.Errorf("%w: key of type %T cannot sign", ErrCredentials, key)
	}
	return signer, nil
}

// checkBundle requires at least one certificate and nothing but
// certificates that parse: a bundle Envoy cannot load fails every handshake.
func checkBundle(bundlePEM []byte) error {
	rest := bundlePEM
	n := 0
	for {
		var block *pem.Block
		block, rest = pem.Decode(rest)
		if block == nil {
			break
		}
		if block.Type != "CERTIFICATE" {
			return fmt.Errorf("%w: the bundle holds a %q block", ErrCredentials, block.Type)
		}
		if _, err := x509.ParseCertificate(block.Bytes); err != nil {
			return fmt.Errorf("%w: bundle certificate %d: %w", ErrCredentials, n+1, err)
		}
		n++
	}
	if n == 0 {
		return fmt.Errorf("%w: the bundle has no certificate", ErrCredentials)
	}
	return nil
}
