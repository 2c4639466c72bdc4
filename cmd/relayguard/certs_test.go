package main

import (
	"crypto/tls"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/relayguard/relayguard/internal/certs"
	"github.com/relayguard/relayguard/internal/deliver/delivertest"
	"github.com/relayguard/relayguard/internal/dnsutil/dnstest"
	"github.com/relayguard/relayguard/internal/msgauth/authtest"
)

// presentedCert returns what a TLS client sending no SNI is shown at addr.
func presentedCert(t *testing.T, addr string) (issuer, cn string) {
	t.Helper()
	c, err := tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", addr, &tls.Config{InsecureSkipVerify: true})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	leaf := c.ConnectionState().PeerCertificates[0]
	return leaf.Issuer.String(), leaf.Subject.CommonName
}

// `relayguard serve` with [tls] acme: the submissions listener starts with
// the self-signed certificate and, without a restart, presents the one
// pebble issued for the host name once the order completes.
func TestServeACME(t *testing.T) {
	bin := testBinary(t)
	dns := dnstest.Start(t)
	dns.Add(t, "mail.acme.test. 60 IN A 127.0.0.1")
	chal := delivertest.FreePort(t)
	pb := authtest.StartPebble(t, fmt.Sprintf("127.0.0.1:%d", delivertest.FreePort(t)), dns.Addr, chal)
	port := delivertest.FreePort(t)
	conf := writeConf(t, t.TempDir(), "rg.toml", fmt.Sprintf(`hostname = "mail.acme.test"
[admin]
listen = ""
[[listener]]
name = "submissions"
address = "127.0.0.1:%d"
mode = "submissions"
[tls]
acme = true
acme_directory = %q
acme_ca_file = %q
acme_listen = "127.0.0.1:%d"
`, port, pb.Dir, pb.CAFile, chal))
	cmd := exec.Command(bin, "serve", "--config", conf, "--data-dir", t.TempDir(), "--create-data-dir")
	_, out := startServe(t, cmd, 1)
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	deadline := time.Now().Add(60 * time.Second)
	for {
		issuer, _ := presentedCert(t, addr)
		if !strings.Contains(issuer, "relayguard self-signed") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("serve never presented an ACME certificate:\n%s", out)
		}
		time.Sleep(100 * time.Millisecond)
	}
	authtest.VerifyPresented(t, addr, "mail.acme.test", pb.Roots(t))
}

// cert_file and key_file replaced by a renewal are in use after SIGHUP
// (with reload_interval = 0, only then); a broken replacement is refused
// with a log line and serve goes on with the certificate it had.
func TestServeSIGHUPReloadsCertificate(t *testing.T) {
	bin := testBinary(t)
	dir := t.TempDir()
	pair := func(name string) (string, string) {
		c, k := filepath.Join(dir, name+".crt"), filepath.Join(dir, name+".key")
		if _, err := certs.EnsureSelfSigned(c, k, []string{name}); err != nil {
			t.Fatal(err)
		}
		return c, k
	}
	c1, k1 := pair("one.example.test")
	c2, k2 := pair("two.example.test")
	live := filepath.Join(dir, "live")
	os.Mkdir(live, 0o755)
	cert, key := filepath.Join(live, "cert.pem"), filepath.Join(live, "key.pem")
	cp := func(from, to string) {
		b, _ := os.ReadFile(from)
		os.WriteFile(to+".tmp", b, 0o600)
		os.Rename(to+".tmp", to)
	}
	cp(c1, cert)
	cp(k1, key)
	port := delivertest.FreePort(t)
	conf := writeConf(t, t.TempDir(), "rg.toml", fmt.Sprintf(`[admin]
listen = ""
[[listener]]
name = "submissions"
address = "127.0.0.1:%d"
mode = "submissions"
[tls]
cert_file = %q
key_file = %q
reload_interval = "0s"
`, port, cert, key))
	cmd := exec.Command(bin, "serve", "--config", conf, "--data-dir", t.TempDir(), "--create-data-dir")
	cmd, out := startServe(t, cmd, 1)
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	if _, cn := presentedCert(t, addr); cn != "one.example.test" {
		t.Fatalf("presented %s", cn)
	}
	cp(k2, key)
	cp(c2, cert)
	time.Sleep(300 * time.Millisecond)
	if _, cn := presentedCert(t, addr); cn != "one.example.test" {
		t.Fatalf("reloaded without SIGHUP although reload_interval = 0: %s", cn)
	}
	cmd.Process.Signal(syscall.SIGHUP)
	deadline := time.Now().Add(20 * time.Second)
	for {
		if _, cn := presentedCert(t, addr); cn == "two.example.test" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("SIGHUP did not reload the certificate:\n%s", out)
		}
		time.Sleep(50 * time.Millisecond)
	}
	os.WriteFile(cert, []byte("garbage"), 0o644)
	cmd.Process.Signal(syscall.SIGHUP)
	deadline = time.Now().Add(20 * time.Second)
	for !strings.Contains(out.String(), "do not load") {
		if time.Now().After(deadline) {
			t.Fatalf("no log line for a broken certificate on SIGHUP:\n%s", out)
		}
		time.Sleep(50 * time.Millisecond)
	}
	if _, cn := presentedCert(t, addr); cn != "two.example.test" {
		t.Fatalf("after a broken reload serve presents %s", cn)
	}
}
