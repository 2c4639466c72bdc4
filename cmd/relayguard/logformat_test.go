package main

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/relayguard/relayguard/internal/deliver/delivertest"
)

// TestJSONLogTakesLibraryLines: with [log] format = "json" every line a
// long-running command writes is a JSON record, those of the standard
// library's servers too. watch's admin listener over TLS logged a bad
// handshake as "2026/12/07 03:15:39 http: TLS handshake error from ..."
// (only serve made its logger the process's default).
func TestJSONLogTakesLibraryLines(t *testing.T) {
	bin := testBinary(t)
	dir := t.TempDir()
	certFile, keyFile := selfSigned(t, dir)
	conf := filepath.Join(dir, "rg.toml")
	os.WriteFile(conf, []byte(fmt.Sprintf("[log]\nformat = \"json\"\n[admin]\ntls = \"on\"\n[tls]\ncert_file = %q\nkey_file = %q\n[audit]\nreputation_interval = \"0s\"\n[firewall]\nbackend = \"none\"\n", certFile, keyFile)), 0o644)
	addr := fmt.Sprintf("127.0.0.1:%d", delivertest.FreePort(t))
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, "--config", conf, "--data-dir", filepath.Join(dir, "data"), "--create-data-dir", "watch", "--admin", addr)
	stderr, stop := startLogged(t, cmd)
	defer stop()
	awaitLine(t, stderr, `"msg":"watching"`)
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	c.Write([]byte("\x16\x03\x01\x00\x05hello")) // a handshake record too long to be one
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	c.Read(make([]byte, 16))
	c.Close()
	awaitLine(t, stderr, "TLS handshake error")
	for _, line := range strings.Split(strings.TrimSpace(stderr.String()), "\n") {
		var rec map[string]any
		if err := json.Unmarshal([]byte(line), &rec); err != nil {
			t.Errorf("not a JSON record: %q", line)
		}
	}
}

// selfSigned writes a self-signed ECDSA certificate for 127.0.0.1 and its
// key into dir.
func selfSigned(t *testing.T, dir string) (certFile, keyFile string) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "localhost"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)}, DNSNames: []string{"localhost"}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kder, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	certFile, keyFile = filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600)
	os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder}), 0o600)
	return certFile, keyFile
}
