// Package certs loads the server certificate and, on first start, makes a
// self-signed one so that STARTTLS and implicit TLS work out of the box.
package certs

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"time"

	"github.com/relayguard/relayguard/internal/safeio"
)

// EnsureSelfSigned creates a self-signed ECDSA P-256 certificate for names
// at certFile/keyFile unless both exist. It reports whether it created them.
func EnsureSelfSigned(certFile, keyFile string, names []string) (bool, error) {
	_, errC := os.Stat(certFile)
	_, errK := os.Stat(keyFile)
	if errC == nil && errK == nil {
		return false, nil
	}
	if errC == nil || errK == nil {
		return false, fmt.Errorf("certs: only one of %s and %s exists", certFile, keyFile)
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return false, fmt.Errorf("certs: generate key: %w", err)
	}
	serial, _ := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 120))
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: names[0], Organization: []string{"relayguard self-signed"}},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(825 * 24 * time.Hour),
		KeyUsage:              x509.KeyUsageDigitalSignature,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
	}
	for _, n := range names {
		if ip := net.ParseIP(n); ip != nil {
			tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
		} else {
			tmpl.DNSNames = append(tmpl.DNSNames, n)
		}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return false, fmt.Errorf("certs: create certificate: %w", err)
	}
	kder, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return false, fmt.Errorf("certs: marshal key: %w", err)
	}
	// Key first, certificate last, each through a temporary file and a
	// rename, so that a crash never leaves a half-written file.
	for _, f := range []struct {
		path, typ string
		der       []byte
		mode      os.FileMode
	}{{keyFile, "PRIVATE KEY", kder, 0o600}, {certFile, "CERTIFICATE", der, 0o644}} {
		if err := os.MkdirAll(filepath.Dir(f.path), 0o750); err != nil {
			return false, fmt.Errorf("certs: %w", err)
		}
		if err := safeio.WriteFile(f.path, pem.EncodeToMemory(&pem.Block{Type: f.typ, Bytes: f.der}), f.mode); err != nil {
			return false, fmt.Errorf("certs: %w", err)
		}
	}
	return true, nil
}

// Load reads a certificate and key into a TLS server configuration
// (TLS 1.2 minimum, as RFC 8314 §4.1 recommends).
func Load(certFile, keyFile string) (*tls.Config, error) {
	cert, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		return nil, fmt.Errorf("certs: load %s / %s: %w", certFile, keyFile, err)
	}
	if len(cert.Certificate) == 0 {
		return nil, errors.New("certs: no certificate in " + certFile)
	}
	cert.Leaf, _ = x509.ParseCertificate(cert.Certificate[0])
	return &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}, nil
}
