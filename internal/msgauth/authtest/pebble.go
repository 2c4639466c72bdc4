package authtest

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/relayguard/relayguard/internal/deliver/delivertest"
)

// Pebble is a running Let's Encrypt test CA (pebble, a Debian package).
type Pebble struct {
	Dir    string       // ACME directory URL
	CAFile string       // PEM root of pebble's own HTTPS certificate (tls.acme_ca_file)
	Client *http.Client // an HTTP client trusting it
	mgmt   string       // management API base URL
}

// TestCA makes a CA and a certificate for 127.0.0.1 signed by it, for
// pebble's HTTPS listeners; it returns the files (and DIR/ca.pem, the CA)
// and a pool with the CA.
func TestCA(t testing.TB, dir string) (certFile, keyFile string, pool *x509.CertPool) {
	t.Helper()
	ca := NewCA(t)
	certFile, keyFile = filepath.Join(dir, "pebble.crt"), filepath.Join(dir, "pebble.key")
	WritePair(t, ca.Issue(t, time.Time{}, "127.0.0.1", "localhost"), certFile, keyFile)
	writeFile(t, filepath.Join(dir, "ca.pem"), ca.PEM(), 0o644)
	return certFile, keyFile, ca.Pool()
}

func writeFile(t testing.TB, path string, b []byte, mode os.FileMode) {
	t.Helper()
	if err := os.WriteFile(path, b, mode); err != nil {
		t.Fatal(err)
	}
}

// StartPebble runs pebble on listen (127.0.0.1:port) with its validation
// authority resolving names through dnsAddr and connecting to
// challengePort for both challenge types.
func StartPebble(t testing.TB, listen, dnsAddr string, challengePort int) *Pebble {
	t.Helper()
	bin := delivertest.Need(t, "pebble")
	dir := t.TempDir()
	cf, kf, pool := TestCA(t, dir)
	mgmt := fmt.Sprintf("127.0.0.1:%d", delivertest.FreePort(t))
	conf := map[string]any{"pebble": map[string]any{
		"listenAddress": listen, "managementListenAddress": mgmt, "certificate": cf, "privateKey": kf,
		"httpPort": challengePort, "tlsPort": challengePort, "ocspResponderURL": "", "externalAccountBindingRequired": false,
	}}
	b, _ := json.Marshal(conf)
	cfgFile := filepath.Join(dir, "pebble.json")
	os.WriteFile(cfgFile, b, 0o644)
	cmd := exec.Command(bin, "-config", cfgFile, "-dnsserver", dnsAddr)
	// No artificial validation delays, no rejected nonces: seconds per
	// test. No reuse of valid authorizations: every order is validated,
	// so that a challenge that cannot succeed fails the order.
	cmd.Env = append(os.Environ(), "PEBBLE_VA_NOSLEEP=1", "PEBBLE_WFE_NONCEREJECT=0", "PEBBLE_AUTHZREUSE=0")
	out, _ := os.Create(filepath.Join(dir, "pebble.log"))
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
		if t.Failed() {
			b, _ := os.ReadFile(filepath.Join(dir, "pebble.log"))
			t.Logf("pebble log:\n%s", b)
		}
	})
	delivertest.WaitListening(t, "tcp", listen)
	delivertest.WaitListening(t, "tcp", mgmt)
	return &Pebble{Dir: "https://" + listen + "/dir", mgmt: "https://" + mgmt, CAFile: filepath.Join(dir, "ca.pem"),
		Client: &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}, Timeout: 30 * time.Second}}
}

// Roots returns pebble's issuance root (a new one every run), from its
// management API.
func (p *Pebble) Roots(t testing.TB) *x509.CertPool {
	t.Helper()
	resp, err := p.Client.Get(p.mgmt + "/roots/0")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(b) {
		t.Fatalf("pebble root: %q", b)
	}
	return pool
}

// VerifyPresented checks that addr presents, to a client sending no SNI, a
// chain that pebble's root signs for name, and returns its serial.
func VerifyPresented(t testing.TB, addr, name string, roots *x509.CertPool) string {
	t.Helper()
	c, err := tls.Dial("tcp", addr, &tls.Config{InsecureSkipVerify: true})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	chain := c.ConnectionState().PeerCertificates
	inter := x509.NewCertPool()
	for _, ic := range chain[1:] {
		inter.AddCert(ic)
	}
	if _, err := chain[0].Verify(x509.VerifyOptions{DNSName: name, Roots: roots, Intermediates: inter}); err != nil {
		t.Fatalf("presented certificate (issuer %q) does not verify for %s: %v", chain[0].Issuer, name, err)
	}
	return chain[0].SerialNumber.String()
}
