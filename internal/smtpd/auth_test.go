package smtpd

import (
	"crypto/hmac"
	"crypto/md5"
	"encoding/base64"
	"encoding/hex"
	"strings"
	"testing"

	"github.com/relayguard/relayguard/internal/event"
)

// tlsSession returns a client on the mx listener after STARTTLS and EHLO.
func tlsSession(t *testing.T, ts *testServer, listener string) *client {
	c := ts.dial(t, listener)
	c.expect("220 ")
	if listener != "submissions" {
		c.cmd("EHLO client.example")
		c.expect("250 ")
		c.startTLS()
	}
	c.cmd("EHLO client.example")
	c.expect("250 ")
	return c
}

func TestAuthReplyCodes(t *testing.T) {
	ts := startServer(t, nil)

	// 538 5.7.11: plaintext mechanism before TLS.
	c := ts.dial(t, "submission")
	c.dialogue(`
S: 220
C: EHLO x
S: 250
C: AUTH PLAIN ` + plainIR("alice", testPassword) + `
S: 538 5.7.11 Encryption required for requested authentication mechanism
C: AUTH SCRAM-SHA-256
S: 538 5.7.11`)

	c = tlsSession(t, ts, "submission")
	c.dialogue(`
C: AUTH
S: 501 5.5.4
C: AUTH FOOBAR
S: 504 5.5.4 Unrecognized authentication type
C: AUTH ANONYMOUS
S: 504 5.5.4
C: AUTH PLAIN !!!notbase64
S: 501 5.5.2 Invalid base64 data`)

	c = tlsSession(t, ts, "submission")
	c.dialogue(`
C: AUTH PLAIN
S: 334
C: *
S: 501 5.5.2 AUTH aborted
C: AUTH LOGIN
S: 334 VXNlcm5hbWU6
C: %%%%
S: 501 5.5.2 Invalid base64 data`)

	// An initial response longer than a command line is fine (RFC 4954 §4
	// allows 12288 octets), one longer than that is 500 5.5.6.
	c = tlsSession(t, ts, "submission")
	c.cmd("AUTH PLAIN " + b64("alice\x00alice\x00"+strings.Repeat("x", 600)))
	c.expect("535 5.7.8")
	c = tlsSession(t, ts, "submission")
	c.cmd("AUTH PLAIN " + strings.Repeat("QUFB", 4000))
	c.expect("500 5.5.6 Authentication Exchange line is too long")

	// 500 5.5.6: SASL response line longer than 12288 octets.
	c = tlsSession(t, ts, "submission")
	c.cmd("AUTH PLAIN")
	c.expect("334")
	c.cmd(strings.Repeat("QUFB", 4000))
	c.expect("500 5.5.6 Authentication Exchange line is too long")

	// 535 5.7.8 for a wrong password and for an unknown user: same reply.
	c = tlsSession(t, ts, "submission")
	c.cmd("AUTH PLAIN " + plainIR("alice", "wrong"))
	wrongPw := c.expect("535 5.7.8")
	c = tlsSession(t, ts, "submission")
	c.cmd("AUTH PLAIN " + plainIR("mallory", "wrong"))
	unknown := c.expect("535 5.7.8")
	if wrongPw != unknown {
		t.Errorf("unknown user and wrong password differ: %q vs %q", unknown, wrongPw)
	}

	// 235, then 503 for a second AUTH, then submission works.
	c = tlsSession(t, ts, "submission")
	c.dialogue(`
C: AUTH PLAIN ` + plainIR("alice", testPassword) + `
S: 235 2.7.0 Authentication successful
C: AUTH PLAIN ` + plainIR("alice", testPassword) + `
S: 503 5.5.1 Error: already authenticated
C: MAIL FROM:<alice@mail.test>
S: 250
C: RCPT TO:<someone@remote.example>
S: 250 2.1.5
C: DATA
S: 354`)
	c.send("Subject: hi\r\n\r\nhello\r\n.\r\n")
	id := strings.TrimPrefix(c.expect("250 2.0.0 Ok: queued as "), "250 2.0.0 Ok: queued as ")
	env, err := ts.spool.Load(id)
	if err != nil || env.AuthUser != "alice" || env.Mode != "submission" {
		t.Fatalf("spooled envelope %+v, %v", env, err)
	}
	if data := ts.messageData(t, id); !strings.Contains(data, "with ESMTPSA") {
		t.Errorf("Received header lacks ESMTPSA:\n%s", data)
	}

	// 503 for AUTH inside a transaction (MX listener, under TLS).
	c = tlsSession(t, ts, "mx")
	c.dialogue(`
C: MAIL FROM:<x@example.org>
S: 250
C: AUTH PLAIN ` + plainIR("alice", testPassword) + `
S: 503 5.5.1 Error: MAIL transaction in progress`)

	// PLAIN with an authorization identity that is not the user fails.
	c = tlsSession(t, ts, "submission")
	c.cmd("AUTH PLAIN " + b64("bob@mail.test\x00alice\x00"+testPassword))
	c.expect("535 5.7.8")

	// Events: failures carry IP, mechanism and username, never a password.
	var sawMallory bool
	for _, e := range ts.events.Snapshot() {
		if strings.Contains(e.Detail+e.User, testPassword) || strings.Contains(e.Detail+e.User, "wrong") {
			t.Errorf("event leaks a password: %+v", e)
		}
		if e.Kind == event.AuthFailure && e.User == "mallory" && e.Mechanism == "PLAIN" && e.IP.String() == "127.0.0.1" {
			sawMallory = true
		}
	}
	if !sawMallory {
		t.Error("no auth_failure event for mallory")
	}
}

func TestAuthFailureLimitPerSession(t *testing.T) {
	ts := startServer(t, nil)
	c := tlsSession(t, ts, "submissions")
	for i := 0; i < 2; i++ {
		c.cmd("AUTH PLAIN " + plainIR("alice", "nope"))
		c.expect("535 5.7.8")
	}
	c.cmd("AUTH PLAIN " + plainIR("alice", "nope"))
	c.expect("535 5.7.8")
	c.expect("421 4.7.0 mail.test Error: too many failed authentications")
	c.expectClosed()
}

func TestAuthLoginAndCRAMMD5Raw(t *testing.T) {
	ts := startServer(t, nil)
	c := tlsSession(t, ts, "submissions")
	c.dialogue(`
C: AUTH LOGIN
S: 334 VXNlcm5hbWU6
C: ` + b64("alice") + `
S: 334 UGFzc3dvcmQ6
C: ` + b64(testPassword) + `
S: 235 2.7.0`)

	c = tlsSession(t, ts, "submissions")
	c.cmd("AUTH CRAM-MD5")
	ch := c.expect("334 ")
	challenge, err := base64.StdEncoding.DecodeString(strings.TrimPrefix(ch, "334 "))
	if err != nil {
		t.Fatal(err)
	}
	mac := hmac.New(md5.New, []byte(testPassword))
	mac.Write(challenge)
	c.cmd(b64("alice " + hex.EncodeToString(mac.Sum(nil))))
	c.expect("235 2.7.0")
}

func TestTrustedLocalPlaintextAuth(t *testing.T) {
	ts := startServer(t, nil)
	c := ts.dial(t, "local")
	c.expect("220 ")
	c.cmd("EHLO x")
	ehlo := c.expect("250 ")
	if !strings.Contains(ehlo, "AUTH SCRAM-SHA-256 PLAIN LOGIN CRAM-MD5") || strings.Contains(ehlo, "-PLUS") {
		t.Errorf("trusted-local listener AUTH line wrong:\n%s", ehlo)
	}
	c.cmd("AUTH PLAIN " + plainIR("alice", testPassword))
	c.expect("235 2.7.0")
}

func TestSenderBinding(t *testing.T) {
	ts := startServer(t, nil)
	c := tlsSession(t, ts, "submissions")
	c.dialogue(`
C: AUTH PLAIN ` + plainIR("alice", testPassword) + `
S: 235
C: MAIL FROM:<bob@mail.test>
S: 553 5.7.1 <bob@mail.test>: Sender address rejected: not owned by user alice
C: MAIL FROM:<ceo@remote.example>
S: 553 5.7.1
C: MAIL FROM:<sales@mail.test>
S: 250
C: RSET
S: 250
C: MAIL FROM:<alice@localhost>
S: 250
C: RSET
S: 250
C: MAIL FROM:<>
S: 250`)
}
