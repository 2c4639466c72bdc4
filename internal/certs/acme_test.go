package certs_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"log/slog"
	"math/big"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/relayguard/relayguard/internal/certs"
	"github.com/relayguard/relayguard/internal/deliver/delivertest"
	"github.com/relayguard/relayguard/internal/dnsutil/dnstest"
)

// pebble is a running Let's Encrypt test CA.
type pebble struct {
	Dir    string // ACME directory URL
	mgmt   string // management API base URL
	client *http.Client
	cmd    *exec.Cmd
}

// testCA makes a CA and a certificate for 127.0.0.1 signed by it, for
// pebble's HTTPS listeners; it returns the files and a pool with the CA.
func testCA(t *testing.T, dir string) (certFile, keyFile string, pool *x509.CertPool) {
	t.Helper()
	caKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	caTmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "relayguard test CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	ca, _ := x509.ParseCertificate(caDER)
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "127.0.0.1"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1")}, DNSNames: []string{"localhost"},
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}, KeyUsage: x509.KeyUsageDigitalSignature}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	kder, _ := x509.MarshalPKCS8PrivateKey(key)
	certFile, keyFile = filepath.Join(dir, "pebble.crt"), filepath.Join(dir, "pebble.key")
	os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644)
	os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kder}), 0o600)
	pool = x509.NewCertPool()
	pool.AddCert(ca)
	return certFile, keyFile, pool
}

// startPebble runs pebble on listen (127.0.0.1:port) with its validation
// authority resolving names through dnsAddr and connecting to
// challengePort for both challenge types.
func startPebble(t *testing.T, listen, dnsAddr string, challengePort int) *pebble {
	t.Helper()
	bin := delivertest.Need(t, "pebble")
	dir := t.TempDir()
	cf, kf, pool := testCA(t, dir)
	mgmt := fmt.Sprintf("127.0.0.1:%d", delivertest.FreePort(t))
	conf := map[string]any{"pebble": map[string]any{
		"listenAddress": listen, "managementListenAddress": mgmt, "certificate": cf, "privateKey": kf,
		"httpPort": challengePort, "tlsPort": challengePort, "ocspResponderURL": "", "externalAccountBindingRequired": false,
	}}
	b, _ := json.Marshal(conf)
	cfgFile := filepath.Join(dir, "pebble.json")
	os.WriteFile(cfgFile, b, 0o644)
	cmd := exec.Command(bin, "-config", cfgFile, "-dnsserver", dnsAddr)
	// No artificial validation delays, no rejected nonces: seconds per test.
	cmd.Env = append(os.Environ(), "PEBBLE_VA_NOSLEEP=1", "PEBBLE_WFE_NONCEREJECT=0")
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
	return &pebble{Dir: "https://" + listen + "/dir", mgmt: "https://" + mgmt, cmd: cmd,
		client: &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}, Timeout: 30 * time.Second}}
}

// roots returns pebble's issuance root (a new one every run), from its
// management API.
func (p *pebble) roots(t *testing.T) *x509.CertPool {
	t.Helper()
	resp, err := p.client.Get(p.mgmt + "/roots/0")
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

// verifyFromCA checks that addr presents, to a client sending no SNI, a
// chain that pebble's root signs for name, and returns its serial.
func verifyFromCA(t *testing.T, addr, name string, roots *x509.CertPool) string {
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

type acmeWorld struct {
	dns      *dnstest.Server
	chalPort int
	pebble   *pebble
	dataDir  string
	p        *certs.Provider
	tlsAddr  string
	logs     *syncBuffer
}

// newACMEWorld starts DNS (names -> 127.0.0.1), pebble and an SMTP-like
// TLS server presenting the provider's certificate, which starts as the
// self-signed one serve makes.
func newACMEWorld(t *testing.T, startCA bool) *acmeWorld {
	t.Helper()
	w := &acmeWorld{dns: dnstest.Start(t), chalPort: delivertest.FreePort(t), dataDir: t.TempDir(), logs: &syncBuffer{}}
	w.dns.Add(t, "mail.acme.test. 60 IN A 127.0.0.1", "smtp.acme.test. 60 IN A 127.0.0.1")
	if startCA {
		w.pebble = startPebble(t, fmt.Sprintf("127.0.0.1:%d", delivertest.FreePort(t)), w.dns.Addr, w.chalPort)
	}
	cf, kf := filepath.Join(w.dataDir, "tls", "cert.pem"), filepath.Join(w.dataDir, "tls", "key.pem")
	if _, err := certs.EnsureSelfSigned(cf, kf, []string{"mail.acme.test"}); err != nil {
		t.Fatal(err)
	}
	var err error
	if w.p, err = certs.NewProvider(cf, kf, slog.New(slog.NewTextHandler(w.logs, nil))); err != nil {
		t.Fatal(err)
	}
	w.tlsAddr = serveTLS(t, w.p.Config())
	return w
}

func (w *acmeWorld) acme(t *testing.T, challenge, directory string, renewBefore time.Duration, client *http.Client) *certs.ACME {
	t.Helper()
	a, err := certs.NewACME(certs.ACMEOptions{
		Directory: directory, Email: "postmaster@acme.test", Names: []string{"mail.acme.test", "smtp.acme.test"},
		Dir: filepath.Join(w.dataDir, "acme"), CertFile: filepath.Join(w.dataDir, "acme", "cert.pem"), KeyFile: filepath.Join(w.dataDir, "acme", "key.pem"),
		Challenge: challenge, Listen: "127.0.0.1:" + strconv.Itoa(w.chalPort), HTTPClient: client,
		RenewBefore: renewBefore, RetryMin: 200 * time.Millisecond,
		Log: slog.New(slog.NewTextHandler(w.logs, nil)),
	}, w.p)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

// run starts a and returns a function that stops it.
func run(a *certs.ACME) func() {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { a.Run(ctx); close(done) }()
	return func() { cancel(); <-done }
}

func (w *acmeWorld) waitIssuer(t *testing.T, not string) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for {
		leaf := presented(t, w.tlsAddr)
		if !strings.Contains(leaf.Issuer.String(), not) && leaf.SerialNumber.String() != not {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("no new certificate presented (issuer %q); log:\n%s", leaf.Issuer, w.logs)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// ACME against pebble, for each challenge type: the running TLS server
// starts with the self-signed certificate, presents pebble's certificate
// for both names once it is issued, and the renewed one after a renewal,
// without a restart.
func TestACMEWithPebble(t *testing.T) {
	for _, challenge := range []string{certs.ChallengeTLSALPN, certs.ChallengeHTTP} {
		t.Run(challenge, func(t *testing.T) {
			w := newACMEWorld(t, true)
			roots := w.pebble.roots(t)
			if !strings.Contains(presented(t, w.tlsAddr).Issuer.String(), "relayguard self-signed") {
				t.Fatal("the server does not start with the self-signed certificate")
			}
			stop := run(w.acme(t, challenge, w.pebble.Dir, 0, w.pebble.client))
			w.waitIssuer(t, "relayguard self-signed")
			first := verifyFromCA(t, w.tlsAddr, "mail.acme.test", roots)
			verifyFromCA(t, w.tlsAddr, "smtp.acme.test", roots)
			stop()
			if fi, err := os.Stat(filepath.Join(w.dataDir, "acme", "key.pem")); err != nil || fi.Mode().Perm() != 0o600 {
				t.Fatalf("key file: %v", err)
			}

			// A renewal (due at once with a RenewBefore longer than the
			// validity) replaces the certificate under the running server.
			stop = run(w.acme(t, challenge, w.pebble.Dir, 100*365*24*time.Hour, w.pebble.client))
			defer stop()
			w.waitIssuer(t, first)
			if second := verifyFromCA(t, w.tlsAddr, "mail.acme.test", roots); second == first {
				t.Fatal("same serial after the renewal")
			}
			if n := strings.Count(w.logs.String(), "acme: certificate obtained"); n != 2 {
				t.Fatalf("%d issuances, want 2 (the renewal floor allows one per hour):\n%s", n, w.logs)
			}
		})
	}
}

// The CA unreachable at start: the server goes on with the certificate it
// has, the error is logged, and the order is retried until the CA answers;
// a challenge the CA cannot validate (the name points elsewhere) is an
// error, and the certificate in use stays.
func TestACMEFailures(t *testing.T) {
	w := newACMEWorld(t, false)
	listen := fmt.Sprintf("127.0.0.1:%d", delivertest.FreePort(t))
	_, _, pool := testCA(t, t.TempDir())
	client := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}, Timeout: 10 * time.Second}
	stop := run(w.acme(t, certs.ChallengeTLSALPN, "https://"+listen+"/dir", 0, client))
	deadline := time.Now().Add(20 * time.Second)
	for strings.Count(w.logs.String(), "ordering the certificate failed") < 2 {
		if time.Now().After(deadline) {
			t.Fatalf("no retried failure logged:\n%s", w.logs)
		}
		time.Sleep(50 * time.Millisecond)
	}
	if !strings.Contains(presented(t, w.tlsAddr).Issuer.String(), "relayguard self-signed") {
		t.Fatal("the certificate in use changed while the CA was down")
	}
	stop()
	// The CA comes up (on that address): the next try succeeds.
	w.pebble = startPebble(t, listen, w.dns.Addr, w.chalPort)
	stop = run(w.acme(t, certs.ChallengeTLSALPN, w.pebble.Dir, 0, w.pebble.client))
	w.waitIssuer(t, "relayguard self-signed")
	stop()

	// The names now point where nothing answers the challenge.
	w.dns.Remove("mail.acme.test.")
	w.dns.Add(t, "mail.acme.test. 60 IN A 127.0.0.2")
	before := presented(t, w.tlsAddr).SerialNumber.String()
	logsBefore := strings.Count(w.logs.String(), "ordering the certificate failed")
	stop = run(w.acme(t, certs.ChallengeTLSALPN, w.pebble.Dir, 100*365*24*time.Hour, w.pebble.client))
	defer stop()
	deadline = time.Now().Add(60 * time.Second)
	for strings.Count(w.logs.String(), "ordering the certificate failed") <= logsBefore {
		if time.Now().After(deadline) {
			t.Fatalf("a failed challenge was not reported:\n%s", w.logs)
		}
		time.Sleep(50 * time.Millisecond)
	}
	if after := presented(t, w.tlsAddr).SerialNumber.String(); after != before {
		t.Fatal("the certificate in use changed after a failed order")
	}
}
