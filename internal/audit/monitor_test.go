package audit_test

import (
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os/exec"
	"regexp"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/relayguard/relayguard/internal/audit"
	"github.com/relayguard/relayguard/internal/dnsutil/dnstest"
	"github.com/relayguard/relayguard/internal/hosttest"
)

// webhook receives the alerts POSTed to it inside namespace ns.
func webhook(t *testing.T, ns string) (url string, got chan audit.Change) {
	t.Helper()
	var ln net.Listener
	if err := hosttest.InNS(ns, func() error {
		var err error
		ln, err = net.Listen("tcp", "127.0.0.1:0")
		return err
	}); err != nil {
		t.Fatal(err)
	}
	got = make(chan audit.Change, 16)
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var c audit.Change
		if err := json.NewDecoder(r.Body).Decode(&c); err != nil || r.Header.Get("Content-Type") != "application/json" {
			t.Errorf("webhook body: %v (%s)", err, r.Header.Get("Content-Type"))
		}
		got <- c
	})}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return "http://" + ln.Addr().String() + "/hook", got
}

func waitChange(t *testing.T, got chan audit.Change, what string, ok func(audit.Change) bool) audit.Change {
	t.Helper()
	deadline := time.After(90 * time.Second)
	for {
		select {
		case c := <-got:
			if ok(c) {
				return c
			}
			t.Logf("alert (not the one awaited): %s", c.Subject())
		case <-deadline:
			t.Fatalf("no alert %s", what)
		}
	}
}

func has(fs []audit.Finding, check, subject string) bool {
	for _, f := range fs {
		if f.Check == check && strings.Contains(f.Subject+" "+strings.Join(f.Evidence, " "), subject) {
			return true
		}
	}
	return false
}

// TestServeReputationMonitor: relayguard serve checks its reputation every
// second ([audit] reputation_interval). Its own address is listed on a
// test list served by NSD behind unbound and its certificate expires in
// five days: the first check alerts both through the accounts' channel —
// a JSON POST to the webhook and a mail to the admin address through a
// real SMTP server (aiosmtpd), which is down at first, so that the mail
// goes out at a later check — and the metrics say so. Delisted, and with
// a renewed certificate, the next checks alert that both cleared and the
// metrics drop to 0.
func TestServeReputationMonitor(t *testing.T) {
	t.Parallel()
	dnstest.NeedReal(t)
	hosttest.NeedRoot(t, "/usr/bin/python3")
	var upstream atomic.Value
	upstream.Store(startDNS(t, rgtestZones(true)))
	h := newHost(t, "", "")
	hosttest.Run(t, "ip", "-n", h.net.Server, "addr", "add", "192.0.0.25/32", "dev", "vs")
	dnsForwarder(t, h.net.Server, func() string { return upstream.Load().(string) })
	url, got := webhook(t, h.net.Server)
	cert, key := writeCert(t, h.dir, "mx.example.rgtest", time.Now().Add(5*24*time.Hour))
	h.writeConfig(`hostname = "mx.example.rgtest"
local_domains = ["example.rgtest"]
own_addresses = ["192.0.0.25"]`, fmt.Sprintf(`[admin]
listen = "127.0.0.1:9925"
[tls]
cert_file = %q
key_file = %q
[dnsbl]
resolvers = ["127.0.0.1:53"]
zones = ["bl.rgtest=127.0.0.2"]
[audit]
reputation_interval = "1s"
[accounts]
webhook_url = %q
alert_mail_to = "admin@example.rgtest"
alert_smtp = "127.0.0.1:2526"
`, cert, key, url))
	serve := hosttest.Start(t, h.net.Server, `listening.*admin`, "--config", h.cfg, "serve")

	c := waitChange(t, got, "of the listing and the certificate", func(c audit.Change) bool {
		return has(c.New, "identity.blocklisted", "192.0.0.25") && has(c.New, "identity.cert-expiring", "mx.example.rgtest")
	})
	if c.Host != "mx.example.rgtest" || len(c.Current) < 2 {
		t.Errorf("change: %+v", c)
	}
	// The mail server was down for that alert: the mail is sent when it
	// is back, at a later check.
	serve.WaitOutput(t, "alert mail not sent")
	mail := hosttest.Command(h.net.Server, "/usr/bin/python3", "-m", "aiosmtpd", "-n", "-l", "127.0.0.1:2526", "-c", "aiosmtpd.handlers.Debugging")
	var mailOut syncBuf
	mail.Stdout, mail.Stderr = &mailOut, io.Discard
	if err := mail.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { mail.Process.Kill(); mail.Wait() })
	hosttest.Eventually(t, "aiosmtpd listening", func() bool {
		return hosttest.InNS(h.net.Server, func() error {
			c, err := net.Dial("tcp", "127.0.0.1:2526")
			if err == nil {
				c.Close()
			}
			return err
		}) == nil
	})
	hosttest.Eventually(t, "the alert mail", func() bool {
		s := mailOut.String()
		return strings.Contains(s, "Subject: relayguard: reputation of") && strings.Contains(s, "identity.blocklisted") && strings.Contains(s, "admin@example.rgtest")
	})
	metric := func(check string) string {
		var out string
		// The socket is made inside the namespace (net/http would dial
		// from another goroutine, outside it).
		hosttest.InNS(h.net.Server, func() error {
			c, err := net.Dial("tcp", "127.0.0.1:9925")
			if err != nil {
				return err
			}
			defer c.Close()
			c.SetDeadline(time.Now().Add(10 * time.Second))
			io.WriteString(c, "GET /metrics HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
			b, _ := io.ReadAll(c)
			m := regexp.MustCompile(`relayguard_reputation_findings\{check="` + regexp.QuoteMeta(check) + `"\} (\S+)`).FindStringSubmatch(string(b))
			if m != nil {
				out = m[1]
			}
			return nil
		})
		return out
	}
	if v := metric("identity.blocklisted"); v != "1" {
		t.Errorf("relayguard_reputation_findings{identity.blocklisted} = %q", v)
	}

	upstream.Store(startDNS(t, rgtestZones(false)))
	waitChange(t, got, "that the listing cleared", func(c audit.Change) bool { return has(c.Cleared, "identity.blocklisted", "192.0.0.25") })
	cert2, key2 := writeCert(t, h.dir, "mx.example.rgtest", time.Now().Add(90*24*time.Hour))
	for _, mv := range [][2]string{{cert2, cert}, {key2, key}} {
		if out, err := exec.Command("mv", mv[0], mv[1]).CombinedOutput(); err != nil {
			t.Fatalf("mv: %v %s", err, out)
		}
	}
	waitChange(t, got, "that the certificate cleared", func(c audit.Change) bool { return has(c.Cleared, "identity.cert-expiring", "") })
	hosttest.Eventually(t, "the metrics at 0", func() bool {
		return metric("identity.blocklisted") == "0" && metric("identity.cert-expiring") == "0"
	})
	serve.WaitOutput(t, "reputation changed")
}

// TestWatchReputationMonitor: relayguard watch, guarding a Postfix host,
// runs the same monitor: the certificate of the running Postfix (found by
// its master's socket, read through postconf) expires in two days, and the
// webhook gets the alert.
func TestWatchReputationMonitor(t *testing.T) {
	t.Parallel()
	h := newHost(t, "", "")
	cert, key := writeCert(t, h.dir, "mx.example.test", time.Now().Add(2*24*time.Hour))
	p := h.startPostfix(fmt.Sprintf("smtpd_tls_cert_file = %s\nsmtpd_tls_key_file = %s\nsmtpd_tls_security_level = may\n", cert, key), tlsmgr)
	url, got := webhook(t, h.net.Server)
	h.writeConfig("", fmt.Sprintf("[audit]\nreputation_interval = \"1s\"\n[accounts]\nwebhook_url = %q\n", url))
	hosttest.Start(t, h.net.Server, "watching", "--config", h.cfg, "--create-data-dir", "watch")
	c := waitChange(t, got, "of the Postfix certificate", func(c audit.Change) bool { return has(c.New, "identity.cert-expiring", "Postfix "+p.Etc) })
	for _, f := range c.New {
		if f.Check == "identity.cert-expiring" && f.Severity != audit.High {
			t.Errorf("%+v", f)
		}
	}
}
