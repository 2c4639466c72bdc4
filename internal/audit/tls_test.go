package audit_test

import (
	"bufio"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/relayguard/relayguard/internal/audit"
	"github.com/relayguard/relayguard/internal/hosttest"
)

// tinySMTP is a minimal SMTP server (RFC 5321) in the test process, in the
// host's namespace, whose STARTTLS (RFC 3207) and AUTH offer the test
// changes while it runs, as an operator's fix and reload would. It refuses
// every recipient unless told to relay, and has no VRFY or EXPN. Postfix
// cannot stand in for the broken case: with a certificate it cannot load,
// smtpd logs "disabling TLS support" and stops offering STARTTLS.
type tinySMTP struct {
	mu sync.Mutex
	// cert is what STARTTLS presents; nil fails every handshake with an
	// alert, as a server whose certificate cannot be loaded does.
	cert *tls.Certificate
	// authPlain is the AUTH keyword's mechanisms before TLS, authTLS
	// after it (none when empty).
	authPlain, authTLS []string
	// relay takes every recipient (an open relay).
	relay bool
	ln    net.Listener
}

func startTinySMTP(t *testing.T, h *host) *tinySMTP {
	t.Helper()
	ln, err := hosttest.Listen(h.net.Server, "0.0.0.0:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &tinySMTP{ln: ln}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go s.serve(c)
		}
	}()
	return s
}

func (s *tinySMTP) port() uint16 { return uint16(s.ln.Addr().(*net.TCPAddr).Port) }

func (s *tinySMTP) set(cert *tls.Certificate, authPlain, authTLS []string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.cert, s.authPlain, s.authTLS = cert, authPlain, authTLS
}

func (s *tinySMTP) serve(nc net.Conn) {
	defer func() { nc.Close() }()
	rd, tlsOn := bufio.NewReader(nc), false
	fmt.Fprintf(nc, "220 tiny.example.test ESMTP\r\n")
	for {
		line, err := rd.ReadString('\n')
		if err != nil {
			return
		}
		verb := strings.ToUpper(strings.Fields(strings.TrimSpace(line) + " x")[0])
		s.mu.Lock()
		cert, auth, relay := s.cert, s.authPlain, s.relay
		if tlsOn {
			auth = s.authTLS
		}
		s.mu.Unlock()
		switch verb {
		case "EHLO":
			ext := []string{"tiny.example.test", "PIPELINING", "8BITMIME"}
			if !tlsOn {
				ext = append(ext, "STARTTLS")
			}
			if len(auth) > 0 {
				ext = append(ext, "AUTH "+strings.Join(auth, " "))
			}
			for i, e := range ext {
				sep := "-"
				if i == len(ext)-1 {
					sep = " "
				}
				fmt.Fprintf(nc, "250%s%s\r\n", sep, e)
			}
		case "HELO", "MAIL", "RSET", "NOOP":
			fmt.Fprintf(nc, "250 2.0.0 ok\r\n")
		case "RCPT":
			if relay {
				fmt.Fprintf(nc, "250 2.1.5 ok\r\n")
				continue
			}
			fmt.Fprintf(nc, "554 5.7.1 relay access denied\r\n")
		case "AUTH":
			fmt.Fprintf(nc, "535 5.7.8 authentication failed\r\n")
		case "STARTTLS":
			if tlsOn {
				fmt.Fprintf(nc, "503 5.5.1 TLS already active\r\n")
				continue
			}
			fmt.Fprintf(nc, "220 2.0.0 ready to start TLS\r\n")
			tc := tls.Server(nc, &tls.Config{GetCertificate: func(*tls.ClientHelloInfo) (*tls.Certificate, error) {
				if cert == nil {
					return nil, errors.New("no certificate loaded")
				}
				return cert, nil
			}})
			if err := tc.Handshake(); err != nil {
				return
			}
			nc, rd, tlsOn = tc, bufio.NewReader(tc), true
		case "QUIT":
			fmt.Fprintf(nc, "221 2.0.0 bye\r\n")
			return
		default:
			fmt.Fprintf(nc, "502 5.5.2 command not implemented\r\n")
		}
	}
}

// loadCert is a certificate for name valid for 90 days.
func loadCert(t *testing.T, h *host, name string) *tls.Certificate {
	t.Helper()
	cf, kf := writeCert(t, h.dir, name, timeIn90Days())
	c, err := tls.LoadX509KeyPair(cf, kf)
	if err != nil {
		t.Fatal(err)
	}
	return &c
}

// TestTLSBroken: an SMTP server advertises STARTTLS but every handshake
// fails (it has no certificate to present and sends a TLS alert). The
// audit reports listener.tls-broken (medium) with the handshake's error as
// evidence and the fix to check the certificate, key and log. The server
// also relays: the battery, whose starttls phase cannot run, still tests
// it without TLS and reports the open relay (it used to give up on the
// failed handshake, hiding the relay behind a "could not check"). With a
// certificate loaded and the relay closed, both findings are gone and the
// probe shows the TLS session.
func TestTLSBroken(t *testing.T) {
	t.Parallel()
	h := newHost(t, "", "")
	s := startTinySMTP(t, h)
	s.mu.Lock()
	s.relay = true
	s.mu.Unlock()
	rep, code, stderr := h.audit("--areas", "listeners")
	if code != audit.ExitFindings {
		t.Fatalf("exit %d\n%s\n%s", code, stderr, dump(rep))
	}
	f := mustFind(t, rep, "listener.tls-broken", audit.Medium, "TLS handshake after STARTTLS")
	if ev := strings.Join(f.Evidence, " "); !strings.Contains(ev, "internal error") {
		t.Errorf("evidence does not carry the handshake's error: %q", ev)
	}
	if !strings.Contains(f.Fix, "certificate and key") || !strings.Contains(f.Subject, fmt.Sprintf(":%d", s.port())) {
		t.Errorf("finding: %+v", f)
	}
	mustNotFind(t, rep, "listener.no-tls")
	l := listener(t, rep, s.port())
	if l.Probe == nil || !l.Probe.STARTTLS || l.Probe.TLS != nil {
		t.Errorf("probe: %+v", l.Probe)
	}
	mustFind(t, rep, "listener.open-relay", audit.Critical, fmt.Sprintf(":%d", s.port()))
	for _, rr := range l.Relay {
		if rr.Outcome != "open" || !slices.Equal(rr.Phases, []string{"plain", "authfail"}) {
			t.Errorf("battery: %+v", rr)
		}
	}
	if len(rep.Problems) != 0 {
		t.Errorf("the broken TLS made checks fail: %+v", rep.Problems)
	}

	s.set(loadCert(t, h, "tiny.example.test"), nil, nil)
	s.mu.Lock()
	s.relay = false
	s.mu.Unlock()
	rep, _, stderr = h.audit("--areas", "listeners")
	mustNotFind(t, rep, "listener.open-relay")
	mustNotFind(t, rep, "listener.tls-broken")
	mustNotFind(t, rep, "listener.no-tls")
	if l := listener(t, rep, s.port()); l.Probe == nil || l.Probe.TLS == nil || l.Probe.TLS.Subject != "CN=tiny.example.test" {
		t.Errorf("after the fix: %+v\n%s", l.Probe, stderr)
	}
	for _, rr := range listener(t, rep, s.port()).Relay {
		if rr.Outcome != "closed" || !slices.Contains(rr.Phases, "starttls") {
			t.Errorf("battery after the fix: %+v", rr)
		}
	}
}

// TestAuthBeforeTLSNonPlain: a server offering only challenge-response
// mechanisms (CRAM-MD5, SCRAM-SHA-256) before STARTTLS is reported as
// listener.auth-before-tls (medium, not the high plaintext-auth: no
// password crosses in clear, but the mechanism, user name and a
// dictionary-attackable exchange do), with the mechanisms as evidence;
// CRAM-MD5 is also a weak mechanism. Offering AUTH only after STARTTLS
// (SCRAM alone) clears both.
func TestAuthBeforeTLSNonPlain(t *testing.T) {
	t.Parallel()
	h := newHost(t, "", "")
	s := startTinySMTP(t, h)
	cert := loadCert(t, h, "tiny.example.test")
	mechs := []string{"CRAM-MD5", "SCRAM-SHA-256"}
	s.set(cert, mechs, mechs)
	rep, code, stderr := h.audit("--areas", "listeners")
	if code != audit.ExitFindings {
		t.Fatalf("exit %d\n%s\n%s", code, stderr, dump(rep))
	}
	f := mustFind(t, rep, "listener.auth-before-tls", audit.Medium, "AUTH CRAM-MD5 SCRAM-SHA-256")
	if f.Fix != "configure the server to offer AUTH only after STARTTLS" {
		t.Errorf("fix: %q", f.Fix)
	}
	mustNotFind(t, rep, "listener.plaintext-auth")
	mustFind(t, rep, "listener.weak-auth-mechanisms", audit.Medium, "CRAM-MD5")
	if l := listener(t, rep, s.port()); l.Probe == nil || !slices.Equal(l.Probe.AuthPlain, mechs) || !slices.Equal(l.Probe.AuthTLS, mechs) {
		t.Errorf("probe: %+v", l.Probe)
	}

	s.set(cert, nil, []string{"SCRAM-SHA-256"})
	rep, _, stderr = h.audit("--areas", "listeners")
	mustNotFind(t, rep, "listener.auth-before-tls")
	mustNotFind(t, rep, "listener.weak-auth-mechanisms")
	if l := listener(t, rep, s.port()); l.Probe == nil || len(l.Probe.AuthPlain) != 0 || !slices.Equal(l.Probe.AuthTLS, []string{"SCRAM-SHA-256"}) {
		t.Errorf("after the fix: %+v\n%s", l.Probe, stderr)
	}
}

func timeIn90Days() time.Time { return time.Now().Add(90 * 24 * time.Hour) }
