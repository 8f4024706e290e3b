package etcdstore

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
)

// tlsFiles names the PEM files of WithTLSFiles.
type tlsFiles struct{ ca, cert, key string }

// load builds the client TLS configuration: etcd's certificate verified
// against ca (the system roots when ca is empty), and a client
// certificate when cert and key are given.
func (f *tlsFiles) load() (*tls.Config, error) {
	cfg := &tls.Config{MinVersion: tls.VersionTLS12}
	if f.ca != "" {
		pem, err := os.ReadFile(f.ca)
		if err != nil {
			return nil, fmt.Errorf("etcdstore: read etcd CA: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("etcdstore: %s holds no PEM certificate", f.ca)
		}
		cfg.RootCAs = pool
	}
	switch {
	case f.cert != "" && f.key != "":
		pair, err := tls.LoadX509KeyPair(f.cert, f.key)
		if err != nil {
			return nil, fmt.Errorf("etcdstore: load etcd client certificate: %w", err)
		}
		cfg.Certificates = []tls.Certificate{pair}
	case f.cert != "" || f.key != "":
		return nil, errors.New("etcdstore: an etcd client certificate needs both the certificate and the key file")
	}
	return cfg, nil
}
