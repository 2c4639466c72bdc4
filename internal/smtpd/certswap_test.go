package smtpd

import (
	"crypto/tls"
	"path/filepath"
	"strings"
	"testing"

	"github.com/xdg-go/scram"

	"github.com/relayguard/relayguard/internal/certs"
)

// Served through certs.Provider, a replaced certificate is presented to
// the next connection without a restart, and SCRAM-SHA-256-PLUS with
// tls-server-end-point binds to the certificate each handshake presented,
// before and after the replacement, over implicit TLS and STARTTLS.
func TestCertificateReplacedWhileServing(t *testing.T) {
	ts := newTestServer(t, nil)
	p, err := certs.NewProvider(ts.cfg.TLS.CertFile, ts.cfg.TLS.KeyFile, nil)
	if err != nil {
		t.Fatal(err)
	}
	ts.srv.deps.TLS = p.Config()
	ts.srv.leaf = nil // what serve has: no static certificate
	ts.start()

	plus := func(implicit bool) string {
		t.Helper()
		var c *client
		if implicit {
			c = ts.dial(t, "submissions")
			c.expect("220 ")
			c.cmd("EHLO client.example")
			c.expect("250 ")
		} else {
			c = ts.dial(t, "submission")
			c.expect("220 ")
			c.cmd("EHLO client.example")
			c.expect("250 ")
			c.startTLS()
			c.cmd("EHLO client.example")
			if ehlo := c.expect("250 "); !strings.Contains(ehlo, "SCRAM-SHA-256-PLUS") {
				t.Fatalf("no SCRAM-SHA-256-PLUS after STARTTLS: %s", ehlo)
			}
		}
		st := c.conn.(*tls.Conn).ConnectionState()
		cb, err := scram.NewTLSServerEndpointBinding(&st)
		if err != nil {
			t.Fatal(err)
		}
		if got := scramAuth(t, c, "SCRAM-SHA-256-PLUS", "alice", testPassword, &cb); !strings.HasPrefix(got, "235 2.7.0") {
			t.Fatalf("SCRAM-SHA-256-PLUS (implicit TLS %v): %s", implicit, got)
		}
		return st.PeerCertificates[0].Subject.CommonName
	}
	if cn := plus(true); cn != testHost {
		t.Fatalf("presented %s", cn)
	}
	plus(false)

	dir := t.TempDir()
	cf, kf := filepath.Join(dir, "new.crt"), filepath.Join(dir, "new.key")
	if _, err := certs.EnsureSelfSigned(cf, kf, []string{"renewed.mail.test"}); err != nil {
		t.Fatal(err)
	}
	if err := p.Use(cf, kf); err != nil {
		t.Fatal(err)
	}
	if cn := plus(true); cn != "renewed.mail.test" {
		t.Fatalf("after the replacement the server presents %s", cn)
	}
	if cn := plus(false); cn != "renewed.mail.test" {
		t.Fatalf("STARTTLS after the replacement presents %s", cn)
	}
}
