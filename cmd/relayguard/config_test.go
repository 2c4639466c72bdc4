package main

import (
	"bytes"
	"crypto/tls"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-sasl"
	gosmtp "github.com/emersion/go-smtp"

	"github.com/relayguard/relayguard/internal/deliver/delivertest"
)

// writeConf writes a configuration file into dir.
func writeConf(t *testing.T, dir, name, body string) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// `config check` refuses what serve refuses, with one line naming the key,
// the value and what is expected; serve refuses it the same way, before
// anything starts (no guard error in front of the real one).
func TestConfigCheckRunsServeChecks(t *testing.T) {
	bin := testBinary(t)
	dir := t.TempDir()
	notPEM := writeConf(t, dir, "not.pem", "this is not a certificate\n")
	port := delivertest.FreePort(t)
	listener := func(addr string) string {
		return fmt.Sprintf("[admin]\nlisten = \"\"\n[[listener]]\nname = \"mx\"\naddress = %q\nmode = \"mx\"\n", addr)
	}
	ok := listener(fmt.Sprintf("127.0.0.1:%d", port))
	inTheWay := writeConf(t, dir, "in-the-way", "a file where a directory would be created\n")
	for _, tc := range []struct {
		name, body string
		want       []string
	}{
		{"missing cert", ok + "[tls]\ncert_file = \"/nonexistent/cert.pem\"\nkey_file = \"/nonexistent/key.pem\"\n", []string{`tls.cert_file "/nonexistent/cert.pem"`, "no such file"}},
		{"non-PEM cert", ok + fmt.Sprintf("[tls]\ncert_file = %q\nkey_file = %q\n", notPEM, notPEM), []string{"tls.cert_file", "PEM"}},
		{"port out of range", listener("127.0.0.1:99999"), []string{`address "127.0.0.1:99999"`, "port from 1 to 65535"}},
		{"bad domain", "local_domains = ['bad domain!']\n" + ok, []string{`local_domains[0] "bad domain!"`, "want a domain name"}},
		{"negative max_connections", ok + "[limits]\nmax_connections = -1\n", []string{"limits.max_connections -1", "at least 1"}},
		{"cram_md5 alone", ok + "[auth]\ncram_md5 = true\n", []string{"auth.cram_md5 = true", "does not list CRAM-MD5"}},
		{"bare duration", ok + "[limits]\ncommand_timeout = 300\n", []string{"limits.command_timeout = 300", `"300s"`}},
		{"unknown key", "# comment first\n" + ok + "[limits]\nmax_recipient = 5\n", []string{"limits.max_recipient: unknown key", "max_recipients"}},
		{"type error", ok + "[limits]\nmax_recipients = \"many\"\n", []string{`limits.max_recipients = "many"`, "want an integer"}},
		// Found by review: a database that is not a number passed config
		// check and stopped serve (go-redis's parser is the one that reads it).
		{"store url database", ok + "[store]\nurl = \"redis://:s3cret@127.0.0.1:1/abc\"\n", []string{`[store] url "redis://:xxxxx@127.0.0.1:1/abc"`, "invalid database number"}},
		// Other Redis clients take the password as ?password=...; go-redis
		// refuses it, and the refusal showed it (url.Redacted hides only
		// the user information's password).
		{"store url password in query", ok + "[store]\nurl = \"redis://127.0.0.1:1/0?password=s3cret&db=0\"\n", []string{`[store] url "redis://127.0.0.1:1/0?db=xxxxx&password=xxxxx"`, "unexpected option"}},
		// A spool directory that cannot be created passed config check
		// and stopped serve (issue 14 leftover).
		{"spool.dir cannot be created", ok + fmt.Sprintf("[spool]\ndir = %q\n", filepath.Join(inTheWay, "spool")), []string{"spool.dir " + filepath.Join(inTheWay, "spool"), "not a directory"}},
		{"missing access file", ok + "[[policy.access]]\nname = \"t\"\nfile = \"/nonexistent/access.cidr\"\n[policy]\nconnect_restrictions = [\"check_client_access t\"]\n", []string{"/nonexistent/access.cidr"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cf := writeConf(t, t.TempDir(), "relayguard.toml", tc.body)
			data := t.TempDir()
			check := exec.Command(bin, "config", "check", "--config", cf, "--data-dir", data)
			out, err := check.CombinedOutput()
			msg := strings.TrimSpace(string(out))
			if err == nil {
				t.Fatalf("config check accepted it: %s", msg)
			}
			if strings.Count(msg, "\n") > 0 || strings.Contains(msg, "Config.") {
				t.Errorf("not one line naming the key:\n%s", msg)
			}
			for _, w := range tc.want {
				if !strings.Contains(msg, w) {
					t.Errorf("config check: %q lacks %q", msg, w)
				}
			}
			serve := exec.Command(bin, "serve", "--config", cf, "--data-dir", data)
			sout, err := serve.CombinedOutput()
			if err == nil {
				t.Fatalf("serve started on what config check refused:\n%s", sout)
			}
			if !strings.Contains(string(sout), tc.want[0]) || strings.Contains(string(sout), "level=ERROR") {
				t.Errorf("serve's refusal differs from config check's or has a guard error before it:\n%s", sout)
			}
			if strings.Contains(msg+string(sout), "s3cret") {
				t.Errorf("a password in the output:\n%s\n%s", msg, sout)
			}
		})
	}
	// The same configuration is fine when the certificate is real and the
	// port free; a port in use fails serve before anything starts.
	cf := writeConf(t, dir, "ok.toml", ok)
	data := filepath.Join(dir, "data")
	if out, err := exec.Command(bin, "config", "check", "--config", cf, "--data-dir", data).CombinedOutput(); err != nil || !strings.Contains(string(out), "configuration OK") {
		t.Fatalf("good configuration: %v\n%s", err, out)
	}
	ln, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", port))
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	sout, err := exec.Command(bin, "serve", "--config", cf, "--data-dir", data).CombinedOutput()
	if err == nil || !strings.Contains(string(sout), "address already in use") || strings.Contains(string(sout), "level=ERROR") || strings.Contains(string(sout), "context canceled") {
		t.Errorf("serve on a port in use: %v\n%s", err, sout)
	}
}

// A command other than serve, run where there is no data directory, says
// so and creates nothing (cd /srv && relayguard user list), unless told to.
func TestDataDirNotCreatedSilently(t *testing.T) {
	bin := testBinary(t)
	cwd := t.TempDir()
	for _, args := range [][]string{{"user", "list"}, {"ban", "list"}, {"queue", "list"}, {"policy"}, {"milter"}, {"dkim", "keygen", "example.org"}} {
		cmd := exec.Command(bin, args...)
		cmd.Dir = cwd
		out, err := cmd.CombinedOutput()
		want := filepath.Join(cwd, "relayguard-data") + " does not exist"
		if err == nil || !strings.Contains(string(out), want) || strings.Count(strings.TrimSpace(string(out)), "\n") > 0 {
			t.Errorf("%v in an empty directory: %v\n%s", args, err, out)
		}
		if _, err := os.Stat(filepath.Join(cwd, "relayguard-data")); !os.IsNotExist(err) {
			t.Fatalf("%v created ./relayguard-data", args)
		}
	}
	cmd := exec.Command(bin, "user", "list", "--create-data-dir")
	cmd.Dir = cwd
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("user list --create-data-dir: %v\n%s", err, out)
	}
	if fi, err := os.Stat(filepath.Join(cwd, "relayguard-data")); err != nil || !fi.IsDir() {
		t.Fatalf("--create-data-dir did not create it: %v", err)
	}
}

// A configuration saved from `config print` pins no path under the data
// directory it was printed with: serve on it with another --data-dir keeps
// the certificate, the spool and the database all in the new one.
func TestPrintedConfigFollowsDataDir(t *testing.T) {
	bin := testBinary(t)
	dir := t.TempDir()
	first := filepath.Join(dir, "first")
	printed, err := exec.Command(bin, "config", "print", "--data-dir", first).Output()
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(printed), filepath.Join(first, "tls")) || strings.Contains(string(printed), filepath.Join(first, "spool")) {
		t.Fatalf("config print pins paths under %s", first)
	}
	for _, want := range []string{"[delivery.transports]", "[delivery.tls_policies]", "local_transport = 'maildir:mail/{domain}/{local}'"} {
		if !strings.Contains(string(printed), want) {
			t.Errorf("config print lacks %s", want)
		}
	}
	port := delivertest.FreePort(t)
	body := strings.Replace(string(printed), "address = '127.0.0.1:2525'", fmt.Sprintf("address = '127.0.0.1:%d'", port), 1)
	body = strings.Replace(body, "address = '127.0.0.1:5587'", fmt.Sprintf("address = '127.0.0.1:%d'", delivertest.FreePort(t)), 1)
	body = strings.Replace(body, "address = '127.0.0.1:5465'", fmt.Sprintf("address = '127.0.0.1:%d'", delivertest.FreePort(t)), 1)
	body = strings.Replace(body, "listen = '127.0.0.1:9025'", "listen = ''", 1)
	cf := writeConf(t, dir, "saved.toml", body)
	second := filepath.Join(dir, "second")
	serve := exec.Command(bin, "serve", "--config", cf, "--data-dir", second)
	serve.Dir = dir
	startServe(t, serve, 3)
	for _, p := range []string{"tls/cert.pem", "tls/key.pem", "spool", "relayguard.db"} {
		if _, err := os.Stat(filepath.Join(second, p)); err != nil {
			t.Errorf("%s not under the new data directory: %v", p, err)
		}
	}
	if _, err := os.Stat(first); !os.IsNotExist(err) {
		t.Errorf("serve wrote into the data directory of the printed config: %v", err)
	}
}

// waitMaildir waits until the messages in a Maildir's new/ contain each of
// the wanted strings (each in some message).
func waitMaildir(t *testing.T, dir string, logs *bytes.Buffer, want ...string) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		msgs := delivertest.ReadMaildir(t, dir)
		all := strings.Join(msgs, "\n")
		missing := ""
		for _, w := range want {
			if !strings.Contains(all, w) {
				missing = w
			}
		}
		if missing == "" {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: no message with %q among %d; serve log:\n%s", dir, missing, len(msgs), logs)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// The local domains of the configuration mean the same thing to every part
// of serve, whatever form they are written in: with 例え.jp (IDN) and
// example.org. (root dot) in the configuration, an existing user at the IDN
// domain is accepted over SMTP, in either form, and mail to both domains is
// delivered into the default Maildirs under the data directory, neither
// refused as relay nor bounced as "domain not found" or a mail loop. A
// message that bounces comes back to the local sender's Maildir too.
func TestServeCanonicalLocalDomains(t *testing.T) {
	bin := testBinary(t)
	dir := t.TempDir()
	data := filepath.Join(dir, "data")
	mx := fmt.Sprintf("127.0.0.1:%d", delivertest.FreePort(t))
	sub := fmt.Sprintf("127.0.0.1:%d", delivertest.FreePort(t))
	dead := fmt.Sprintf("127.0.0.1:%d", delivertest.FreePort(t))
	cf := writeConf(t, dir, "relayguard.toml", fmt.Sprintf(`hostname = "mx.example.org"
local_domains = ["例え.jp", "example.org."]
[admin]
listen = ""
[[listener]]
name = "mx"
address = %q
mode = "mx"
[[listener]]
name = "submission"
address = %q
mode = "submission"
[delivery]
dns_server = %q
[delivery.transports]
"bounce.test" = "smtp:%s"
`, mx, sub, dead, delivertest.StartRejecter(t)))
	const password = "canonical domains password"
	for _, u := range []string{"alice@例え.jp", "bob"} {
		add := exec.Command(bin, "user", "add", u, "--password-stdin", "--config", cf, "--data-dir", data, "--create-data-dir")
		add.Stdin = strings.NewReader(password + "\n")
		if out, err := add.CombinedOutput(); err != nil {
			t.Fatalf("user add %s: %v\n%s", u, err, out)
		}
	}
	cmd := exec.Command(bin, "serve", "--config", cf, "--data-dir", data)
	var logs bytes.Buffer
	cmd.Stdout, cmd.Stderr = &logs, &logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Signal(os.Interrupt); cmd.Wait() })
	delivertest.WaitListening(t, "tcp", mx)
	delivertest.WaitListening(t, "tcp", sub)

	// From outside, on the MX listener: the IDN user in A-label and
	// U-label (SMTPUTF8) form, and bob at the domain configured with a
	// root dot.
	c, err := gosmtp.Dial(mx)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := c.Hello("outside.test"); err != nil {
		t.Fatal(err)
	}
	if err := c.Mail("sender@outside.test", &gosmtp.MailOptions{UTF8: true}); err != nil {
		t.Fatal(err)
	}
	for _, rcpt := range []string{"alice@xn--r8jz45g.jp", "alice@例え.jp", "bob@example.org", "Bob@EXAMPLE.org"} {
		if err := c.Rcpt(rcpt, nil); err != nil {
			t.Fatalf("RCPT TO:<%s> on MX: %v", rcpt, err)
		}
	}
	if err := c.Rcpt("nobody@例え.jp", nil); err == nil || !strings.Contains(err.Error(), "550") {
		t.Errorf("unknown user at the IDN domain: %v, want 550 User unknown", err)
	}
	w, err := c.Data()
	if err != nil {
		t.Fatal(err)
	}
	fmt.Fprintf(w, "From: sender@outside.test\r\nSubject: from outside\r\n\r\nhello\r\n")
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	c.Quit()

	// Alice submits to bob at example.org and to a host that refuses the
	// recipient; the bounce is local mail to her.
	s, err := gosmtp.DialStartTLS(sub, &tls.Config{InsecureSkipVerify: true})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if err := s.Auth(sasl.NewPlainClient("", "alice@例え.jp", password)); err != nil {
		t.Fatalf("AUTH as alice@例え.jp: %v", err)
	}
	msg := "From: alice@xn--r8jz45g.jp\r\nSubject: submitted\r\n\r\nhi\r\n"
	if err := s.SendMail("alice@xn--r8jz45g.jp", []string{"bob@example.org", "gone@bounce.test"}, strings.NewReader(msg)); err != nil {
		t.Fatalf("submission: %v", err)
	}

	waitMaildir(t, filepath.Join(data, "mail", "xn--r8jz45g.jp", "alice"), &logs,
		"Subject: from outside", "Return-Path: <>", "gone@bounce.test")
	waitMaildir(t, filepath.Join(data, "mail", "example.org", "bob"), &logs, "Subject: from outside", "Subject: submitted")
	for _, bad := range []string{"Relay access denied", "domain not found", "loops back", "no transport"} {
		if strings.Contains(logs.String(), bad) {
			t.Errorf("serve log has %q:\n%s", bad, logs.String())
		}
	}
}
