package certs_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/relayguard/relayguard/internal/hosttest"

	"github.com/relayguard/relayguard/internal/certs"
)

// syncBuffer is a log destination read while goroutines write.
type syncBuffer = hosttest.LogBuffer

// selfSigned makes a certificate for name under dir and returns the files.
func selfSigned(t *testing.T, dir, name string) (string, string) {
	t.Helper()
	c, k := filepath.Join(dir, name+".crt"), filepath.Join(dir, name+".key")
	if _, err := certs.EnsureSelfSigned(c, k, []string{name}); err != nil {
		t.Fatal(err)
	}
	return c, k
}

// serveTLS runs a TLS server with cfg on loopback; each handshake is
// answered and the connection closed.
func serveTLS(t *testing.T, cfg *tls.Config) string {
	t.Helper()
	ln, err := tls.Listen("tcp", "127.0.0.1:0", cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() { c.(*tls.Conn).Handshake(); c.Close() }()
		}
	}()
	return ln.Addr().String()
}

// presented returns the leaf a TLS client sees at addr, sending no SNI
// (as many SMTP clients do).
func presented(t *testing.T, addr string) *x509.Certificate {
	t.Helper()
	c, err := tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", addr, &tls.Config{InsecureSkipVerify: true})
	if err != nil {
		t.Fatalf("TLS handshake with %s: %v", addr, err)
	}
	defer c.Close()
	return c.ConnectionState().PeerCertificates[0]
}

func waitCN(t *testing.T, addr, cn string) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for presented(t, addr).Subject.CommonName != cn {
		if time.Now().After(deadline) {
			t.Fatalf("the server never presented %s (still %s)", cn, presented(t, addr).Subject.CommonName)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func copyFile(t *testing.T, from, to string) {
	t.Helper()
	b, err := os.ReadFile(from)
	if err != nil {
		t.Fatal(err)
	}
	tmp := to + ".tmp"
	if err := os.WriteFile(tmp, b, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, to); err != nil {
		t.Fatal(err)
	}
}

// A certificate renewed on disk (files replaced, certbot's live/ symlinks
// switched) is presented by the running server without a restart, to
// clients with and without SNI; a replacement that does not load (garbage,
// a chain without its key) is refused, logged, and the certificate in use
// stays.
func TestProviderPicksUpRenewedFiles(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	c1, k1 := selfSigned(t, dir, "one.example.test")
	c2, k2 := selfSigned(t, dir, "two.example.test")
	c3, k3 := selfSigned(t, dir, "three.example.test")
	live := filepath.Join(dir, "live")
	os.Mkdir(live, 0o700)
	cert, key := filepath.Join(live, "cert.pem"), filepath.Join(live, "key.pem")
	copyFile(t, c1, cert)
	copyFile(t, k1, key)

	logs := &syncBuffer{}
	p, err := certs.NewProvider(cert, key, slog.New(slog.NewTextHandler(logs, nil)))
	if err != nil {
		t.Fatal(err)
	}
	addr := serveTLS(t, p.Config())
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go p.Watch(ctx, 50*time.Millisecond)
	waitCN(t, addr, "one.example.test")

	// A renewal writes the key, then the chain.
	copyFile(t, k2, key)
	copyFile(t, c2, cert)
	waitCN(t, addr, "two.example.test")
	if !strings.Contains(logs.String(), "certificate replaced") {
		t.Fatalf("no log line for the replacement:\n%s", logs)
	}
	// With SNI too (crypto/tls asks GetCertificate either way).
	sni, err := tls.Dial("tcp", addr, &tls.Config{InsecureSkipVerify: true, ServerName: "whatever.example.test"})
	if err != nil {
		t.Fatal(err)
	}
	if cn := sni.ConnectionState().PeerCertificates[0].Subject.CommonName; cn != "two.example.test" {
		t.Fatalf("with SNI: %s", cn)
	}
	sni.Close()

	// Garbage, then a new chain whose key was not replaced: refused.
	os.WriteFile(cert, []byte("-----BEGIN CERTIFICATE-----\nnot base64\n"), 0o644)
	if _, err := p.Reload(); err == nil {
		t.Fatal("Reload accepted a broken certificate file")
	}
	copyFile(t, c3, cert)
	deadline := time.Now().Add(5 * time.Second)
	for !strings.Contains(logs.String(), "do not load") {
		if time.Now().After(deadline) {
			t.Fatalf("a mismatched pair was not reported:\n%s", logs)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if cn := presented(t, addr).Subject.CommonName; cn != "two.example.test" {
		t.Fatalf("after refused replacements the server presents %s", cn)
	}

	// certbot: live/ names are symlinks into archive/; a renewal points
	// them at new files.
	os.Remove(cert)
	os.Remove(key)
	os.Symlink(c1, cert)
	os.Symlink(k1, key)
	waitCN(t, addr, "one.example.test")
	tmpC, tmpK := cert+".new", key+".new"
	os.Symlink(c3, tmpC)
	os.Symlink(k3, tmpK)
	os.Rename(tmpK, key)
	os.Rename(tmpC, cert)
	waitCN(t, addr, "three.example.test")

	// Reload (what SIGHUP calls) reports whether anything changed.
	if changed, err := p.Reload(); err != nil || changed {
		t.Fatalf("Reload of unchanged files: changed=%v err=%v", changed, err)
	}
}

// A provider that cannot load its files at start says which files.
func TestProviderStartError(t *testing.T) {
	dir := t.TempDir()
	_, err := certs.NewProvider(filepath.Join(dir, "none.crt"), filepath.Join(dir, "none.key"), nil)
	if err == nil || !strings.Contains(err.Error(), "none.crt") {
		t.Fatalf("err = %v", err)
	}
}
