package audit_test

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/relayguard/relayguard/internal/audit"
	"github.com/relayguard/relayguard/internal/hosttest"
)

// host is a mail host for the audit to inspect: the server namespace of a
// hosttest.Net, a relayguard configuration and data directory, and the
// relayguard binary to run `audit` inside the namespace.
type host struct {
	t    *testing.T
	net  *hosttest.Net
	dir  string // traversable by postfix and nobody
	cfg  string
	data string
}

// newHost makes the namespaces and a relayguard configuration: top holds
// top-level keys, sections whole tables ([egress] gets persist_dir under
// the test's directory unless sections has its own).
func newHost(t *testing.T, top, sections string) *host {
	t.Helper()
	hosttest.NeedRoot(t, "ip", "nft")
	h := &host{t: t, net: hosttest.NewNet(t), dir: hosttest.TempDir(t, "rg-audit-")}
	h.data = filepath.Join(h.dir, "data")
	h.cfg = filepath.Join(h.dir, "relayguard.toml")
	h.writeConfig(top, sections)
	return h
}

func (h *host) writeConfig(top, sections string) {
	h.t.Helper()
	conf := fmt.Sprintf("data_dir = %q\n%s\n%s\n", h.data, top, sections)
	if !strings.Contains(top, "hostname") {
		conf = "hostname = \"mx.example.test\"\n" + conf
	}
	if !strings.Contains(sections, "[egress]") {
		conf += fmt.Sprintf("[egress]\npersist_dir = %q\n", filepath.Join(h.dir, "egress"))
	}
	if err := os.WriteFile(h.cfg, []byte(conf), 0o644); err != nil {
		h.t.Fatal(err)
	}
}

// audit runs `relayguard audit --json args...` in the server namespace and
// returns the report, the exit status and the standard error.
func (h *host) audit(args ...string) (*audit.Report, int, string) {
	h.t.Helper()
	stdout, code, stderr := h.auditRaw(append([]string{"--json"}, args...)...)
	var rep audit.Report
	if err := json.Unmarshal(stdout, &rep); err != nil {
		h.t.Fatalf("relayguard audit --json (exit %d): %v\nstdout:\n%s\nstderr:\n%s", code, err, stdout, stderr)
	}
	return &rep, code, stderr
}

// auditRaw runs `relayguard audit args...` in the server namespace.
func (h *host) auditRaw(args ...string) ([]byte, int, string) {
	h.t.Helper()
	var stdout, stderr bytes.Buffer
	cmd := hosttest.Command(h.net.Server, hosttest.Relayguard(h.t),
		append([]string{"--config", h.cfg, "audit", "--unit-dir", filepath.Join(h.dir, "units"), "--timeout", "5s"}, args...)...)
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	code := 0
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		code = ee.ExitCode()
	} else if err != nil {
		h.t.Fatalf("relayguard audit: %v\n%s", err, stderr.String())
	}
	return stdout.Bytes(), code, stderr.String()
}

// find returns the findings of a check.
func find(rep *audit.Report, check string) []audit.Finding {
	var out []audit.Finding
	for _, f := range rep.Findings {
		if f.Check == check {
			out = append(out, f)
		}
	}
	return out
}

// mustFind fails unless exactly the check is reported with severity sev
// (at least once), a fix and, when want is not empty, text containing it
// in the title, subject or evidence.
func mustFind(t *testing.T, rep *audit.Report, check string, sev audit.Severity, want string) audit.Finding {
	t.Helper()
	fs := find(rep, check)
	for _, f := range fs {
		text := f.Title + " " + f.Subject + " " + strings.Join(f.Evidence, " ")
		if f.Severity == sev && f.Fix != "" && strings.Contains(text, want) {
			return f
		}
	}
	t.Fatalf("no %s finding %s mentioning %q; findings:\n%s", sev, check, want, dump(rep))
	return audit.Finding{}
}

func mustNotFind(t *testing.T, rep *audit.Report, check string) {
	t.Helper()
	if fs := find(rep, check); len(fs) > 0 {
		t.Fatalf("%s still reported:\n%s", check, dump(rep))
	}
}

func dump(rep *audit.Report) string {
	var b strings.Builder
	rep.WriteText(&b)
	return b.String()
}

// listener returns the listener on port.
func listener(t *testing.T, rep *audit.Report, port uint16) audit.Listener {
	t.Helper()
	for _, l := range rep.Listeners {
		if l.Port == port {
			return l
		}
	}
	t.Fatalf("no listener on port %d:\n%s", port, dump(rep))
	return audit.Listener{}
}

var certSeq atomic.Int64

// writeCert writes a self-signed certificate for name valid from an hour
// ago until notAfter, and its key, under dir.
func writeCert(t *testing.T, dir, name string, notAfter time.Time) (certFile, keyFile string) {
	t.Helper()
	return writeCertValid(t, dir, name, time.Now().Add(-time.Hour), notAfter)
}

// writeCertValid writes a self-signed certificate for name valid from
// notBefore until notAfter, and its key, under dir.
func writeCertValid(t *testing.T, dir, name string, notBefore, notAfter time.Time) (certFile, keyFile string) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(time.Now().UnixNano() + certSeq.Add(1)), Subject: pkix.Name{CommonName: name},
		DNSNames: []string{name}, NotBefore: notBefore, NotAfter: notAfter,
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kb, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	n := certSeq.Add(1)
	certFile, keyFile = filepath.Join(dir, fmt.Sprintf("cert%d.pem", n)), filepath.Join(dir, fmt.Sprintf("key%d.pem", n))
	if err := os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kb}), 0o644); err != nil {
		t.Fatal(err)
	}
	return certFile, keyFile
}

// dnsForwarder relays DNS over UDP from 127.0.0.1:53 inside namespace ns
// to the resolver upstream() names (on the host's loopback), so that a
// process in the namespace reaches the test's unbound.
func dnsForwarder(t *testing.T, ns string, upstream func() string) {
	t.Helper()
	var pc net.PacketConn
	if err := hosttest.InNS(ns, func() error {
		var err error
		pc, err = net.ListenPacket("udp", "127.0.0.1:53")
		return err
	}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pc.Close() })
	go func() {
		buf := make([]byte, 65535)
		for {
			n, from, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			q := append([]byte(nil), buf[:n]...)
			go func() {
				c, err := net.Dial("udp", upstream())
				if err != nil {
					return
				}
				defer c.Close()
				c.SetDeadline(time.Now().Add(5 * time.Second))
				if _, err := c.Write(q); err != nil {
					return
				}
				ans := make([]byte, 65535)
				m, err := c.Read(ans)
				if err != nil {
					return
				}
				pc.WriteTo(ans[:m], from)
			}()
		}
	}()
}

// startPostfix starts a Postfix in the host's namespace listening on every
// address. in_flow_delay is off: the relay battery ends each test with
// RSET after RCPT, every MAIL takes one of Postfix's flow-control tokens,
// and once the audit's earlier runs used them up each transaction would
// wait a second (a real host's audit pays that; the tests need not).
func (h *host) startPostfix(main, master string) *hosttest.Postfix {
	h.t.Helper()
	return hosttest.StartPostfix(h.t, hosttest.PostfixConfig{Netns: h.net.Server, Listen: "25", Main: "in_flow_delay = 0s\n" + main, Master: master})
}

// tlsmgr is the master.cf line Postfix's TLS needs (hosttest's master.cf
// has none).
const tlsmgr = "tlsmgr    unix  -       -       n       1000?   1       tlsmgr\n"

// syncBuf collects a process's output while it runs.
type syncBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuf) Write(p []byte) (int, error) { s.mu.Lock(); defer s.mu.Unlock(); return s.b.Write(p) }
func (s *syncBuf) String() string              { s.mu.Lock(); defer s.mu.Unlock(); return s.b.String() }
