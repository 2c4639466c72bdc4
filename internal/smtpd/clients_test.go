package smtpd

import (
	"bufio"
	"crypto/tls"
	"encoding/base64"
	"net"
	"net/smtp"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/xdg-go/scram"
)

func needTool(t *testing.T, name string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("%s not installed (CI must install it): %v", name, err)
		}
		t.Skipf("%s not installed", name)
	}
	return p
}

// TestPythonSmtplib drives the server with Python's smtplib for PLAIN,
// LOGIN and CRAM-MD5, over STARTTLS, implicit TLS, and in plaintext on a
// trusted-local listener.
func TestPythonSmtplib(t *testing.T) {
	py := needTool(t, "python3")
	ts := startServer(t, nil)
	for _, mode := range []struct{ mode, listener string }{{"starttls", "submission"}, {"ssl", "submissions"}, {"plain", "local"}} {
		for _, mech := range []string{"PLAIN", "LOGIN", "CRAM-MD5"} {
			host, port, _ := net.SplitHostPort(ts.addr[mode.listener])
			out, err := exec.Command(py, "testdata/smtplib_client.py", host, port, mode.mode, mech, "alice", testPassword).CombinedOutput()
			if err != nil || !strings.Contains(string(out), "Ok: queued as") {
				t.Errorf("smtplib %s %s: %v\n%s", mode.mode, mech, err, out)
			}
			out, err = exec.Command(py, "testdata/smtplib_client.py", host, port, mode.mode, mech, "alice", "wrong password").CombinedOutput()
			if err == nil || !strings.Contains(string(out), "AUTHFAIL 535 5.7.8") {
				t.Errorf("smtplib %s %s with a wrong password: %v\n%s", mode.mode, mech, err, out)
			}
		}
	}
	// Plain text on a normal submission listener: smtplib sees no AUTH.
	host, port, _ := net.SplitHostPort(ts.addr["submission"])
	out, err := exec.Command(py, "testdata/smtplib_client.py", host, port, "plain", "PLAIN", "alice", testPassword).CombinedOutput()
	if err == nil {
		t.Errorf("plaintext PLAIN on submission succeeded:\n%s", out)
	}
	if n := len(ts.spooled(t)); n != 9 {
		t.Errorf("%d messages spooled, want 9", n)
	}
}

// TestGoNetSMTP uses the standard library's client: STARTTLS and PLAIN.
func TestGoNetSMTP(t *testing.T) {
	ts := startServer(t, nil)
	dial := func() *smtp.Client {
		c, err := smtp.Dial(ts.addr["submission"])
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		if err := c.Hello("go.example"); err != nil {
			t.Fatal(err)
		}
		if err := c.StartTLS(&tls.Config{InsecureSkipVerify: true}); err != nil {
			t.Fatal(err)
		}
		return c
	}
	// net/smtp quits after a failed AUTH, so the failure gets its own connection.
	if err := dial().Auth(smtp.PlainAuth("", "alice", "wrong", "127.0.0.1")); err == nil || !strings.Contains(err.Error(), "535") || !strings.Contains(err.Error(), "5.7.8") {
		t.Fatalf("wrong password: %v", err)
	}
	c := dial()
	if err := c.Auth(smtp.PlainAuth("", "alice", testPassword, "127.0.0.1")); err != nil {
		t.Fatal(err)
	}
	if err := c.Mail("alice@mail.test"); err != nil {
		t.Fatal(err)
	}
	if err := c.Rcpt("friend@remote.example"); err != nil {
		t.Fatal(err)
	}
	w, err := c.Data()
	if err != nil {
		t.Fatal(err)
	}
	w.Write([]byte("Subject: net/smtp\r\n\r\n.dot first\r\nbody\r\n"))
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	c.Quit()
	l := ts.spooled(t)
	if len(l) != 1 || l[0].AuthUser != "alice" || l[0].Recipients[0].Addr != "friend@remote.example" {
		t.Fatalf("spool: %+v", l)
	}
	if d := ts.messageData(t, l[0].ID); !strings.HasSuffix(d, "\r\n\r\n.dot first\r\nbody\r\n") {
		t.Errorf("data %q", d)
	}
}

// scramAuth runs an AUTH SCRAM exchange with xdg-go/scram's client over a
// session that is already under TLS.
func scramAuth(t *testing.T, c *client, mech, user, pass string, cb *scram.ChannelBinding) string {
	t.Helper()
	sc, err := scram.SHA256.NewClient(user, pass, "")
	if err != nil {
		t.Fatal(err)
	}
	var conv *scram.ClientConversation
	if cb != nil {
		conv = sc.NewConversationWithChannelBinding(*cb)
	} else {
		conv = sc.NewConversation()
	}
	first, err := conv.Step("")
	if err != nil {
		t.Fatal(err)
	}
	c.cmd("AUTH " + mech + " " + base64.StdEncoding.EncodeToString([]byte(first)))
	for {
		lines := c.reply()
		last := lines[len(lines)-1]
		if !strings.HasPrefix(last, "334 ") {
			return last
		}
		ch, err := base64.StdEncoding.DecodeString(last[4:])
		if err != nil {
			t.Fatal(err)
		}
		resp, err := conv.Step(string(ch))
		if err != nil {
			// The server's final message did not verify: cancel.
			c.cmd("*")
			continue
		}
		c.cmd(base64.StdEncoding.EncodeToString([]byte(resp)))
	}
}

func TestSCRAM(t *testing.T) {
	ts := startServer(t, nil)
	tlsClient := func() (*client, tls.ConnectionState) {
		raw, err := tls.Dial("tcp", ts.addr["submissions"], &tls.Config{InsecureSkipVerify: true})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { raw.Close() })
		raw.SetDeadline(time.Now().Add(30 * time.Second))
		c := &client{t: t, conn: raw, r: bufio.NewReader(raw)}
		c.dialogue("S: 220\nC: EHLO scram.example\nS: 250")
		return c, raw.ConnectionState()
	}
	// SCRAM-SHA-256 without channel binding.
	c, _ := tlsClient()
	if got := scramAuth(t, c, "SCRAM-SHA-256", "alice", testPassword, nil); !strings.HasPrefix(got, "235 2.7.0") {
		t.Errorf("SCRAM-SHA-256: %s", got)
	}
	c, _ = tlsClient()
	if got := scramAuth(t, c, "SCRAM-SHA-256", "alice", "wrong", nil); !strings.HasPrefix(got, "535 5.7.8") {
		t.Errorf("SCRAM-SHA-256 wrong password: %s", got)
	}
	c, _ = tlsClient()
	if got := scramAuth(t, c, "SCRAM-SHA-256", "nosuchuser", "wrong", nil); !strings.HasPrefix(got, "535 5.7.8") {
		t.Errorf("SCRAM-SHA-256 unknown user: %s", got)
	}
	// SCRAM-SHA-256-PLUS with tls-exporter and tls-server-end-point.
	for _, kind := range []string{"tls-exporter", "tls-server-end-point"} {
		c, st := tlsClient()
		var cb scram.ChannelBinding
		var err error
		if kind == "tls-exporter" {
			cb, err = scram.NewTLSExporterBinding(&st)
		} else {
			cb, err = scram.NewTLSServerEndpointBinding(&st)
		}
		if err != nil {
			t.Fatal(err)
		}
		if got := scramAuth(t, c, "SCRAM-SHA-256-PLUS", "alice", testPassword, &cb); !strings.HasPrefix(got, "235 2.7.0") {
			t.Errorf("SCRAM-SHA-256-PLUS %s: %s", kind, got)
		}
		// A binding that is not this connection's must not verify: for
		// tls-exporter, another connection's (a MITM relaying the
		// exchange); for tls-server-end-point, another certificate's.
		c2, _ := tlsClient()
		bad := cb
		if kind == "tls-server-end-point" {
			bad.Data = append([]byte(nil), cb.Data...)
			bad.Data[0] ^= 0xff
		}
		if got := scramAuth(t, c2, "SCRAM-SHA-256-PLUS", "alice", testPassword, &bad); !strings.HasPrefix(got, "535 5.7.8") {
			t.Errorf("SCRAM-SHA-256-PLUS %s with a foreign binding: %s", kind, got)
		}
	}
}
