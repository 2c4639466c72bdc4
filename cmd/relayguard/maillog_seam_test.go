package main

import (
	"bufio"
	"encoding/base64"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"

	"github.com/relayguard/relayguard/internal/maillog"
)

// TestServeLogReadByReportWatchAndFail2ban is the seam of issue 14's log
// vocabulary: a real `relayguard serve` (in a network namespace, so that its
// clients are neither loopback nor its own addresses) is driven over SMTP
// sockets — password guessing until it bans, a good login that submits
// mail (one recipient delivered to a Maildir, one deferred), a relay
// attempt, an HTTP request — and the log it writes is then read by
// `relayguard report`, `relayguard watch --replay` and fail2ban-regex with
// the shipped filter. Each must see what the dialogue did.
func TestServeLogReadByReportWatchAndFail2ban(t *testing.T) {
	bin := testBinary(t)
	n := newGuardNS(t, "198.51.100.30", "198.51.100.31", "198.51.100.32", "198.51.100.33")
	dir := t.TempDir()
	data := filepath.Join(dir, "data")
	conf := filepath.Join(dir, "relayguard.toml")
	os.WriteFile(conf, []byte(fmt.Sprintf(`hostname = "relay.test"
local_domains = ["relay.test"]
own_addresses = ["192.0.2.1"]
[admin]
listen = ""
[limits]
auth_failure_delay = "0s"
[[listener]]
name = "mx"
address = "127.0.0.1:0"
mode = "mx"
[[listener]]
name = "submission"
address = "127.0.0.1:0"
mode = "submission"
trusted_local = true
[delivery.transports]
"relay.test" = "maildir:%s"
"stuck.test" = "smtp:127.0.0.1:9"
[guard]
maxretry = 3
subnet = []
`, filepath.Join(dir, "Maildir"))), 0o644)
	const password = "seam test password"
	add := exec.Command(bin, "user", "add", "alice@relay.test", "--password-stdin", "--config", conf, "--data-dir", data, "--create-data-dir")
	add.Stdin = strings.NewReader(password + "\n")
	if out, err := add.CombinedOutput(); err != nil {
		t.Fatalf("user add: %v\n%s", err, out)
	}
	cmd := exec.Command("ip", "netns", "exec", n.name, bin, "serve", "--config", conf, "--data-dir", data)
	_, out := startServe(t, cmd, 2)
	addrOf := func(name string) string {
		m := regexp.MustCompile(name + ` \(\w+\) listening on (127\.0\.0\.1:\d+)`).FindStringSubmatch(out.String())
		if m == nil {
			t.Fatalf("no %s listener in:\n%s", name, out)
		}
		return m[1]
	}
	mx, sub := addrOf("mx"), addrOf("submission")
	defer func() {
		if t.Failed() {
			t.Logf("serve's output:\n%s", out)
		}
	}()

	// Three wrong passwords from .30: banned (maxretry 3).
	for range 3 {
		n.authFrom(t, "198.51.100.30", sub)
	}
	eventually(t, "198.51.100.30 banned", func() bool {
		return strings.HasPrefix(n.bannerFrom(t, "198.51.100.30", sub), "421 ")
	})
	// A good login from .31 submits one message to a local and a stuck recipient.
	c := n.dial(t, "198.51.100.31", sub)
	s := &smtpClient{t: t, c: c, r: bufio.NewReader(c)}
	s.reply()
	s.cmd("EHLO client.test")
	if r := s.cmd("AUTH PLAIN " + base64.StdEncoding.EncodeToString([]byte("\x00alice@relay.test\x00"+password))); !strings.HasPrefix(r, "235 ") {
		t.Fatalf("good AUTH: %q", r)
	}
	s.cmd("MAIL FROM:<alice@relay.test>")
	s.cmd("RCPT TO:<alice@relay.test>")
	s.cmd("RCPT TO:<bob@stuck.test>")
	s.cmd("DATA")
	if r := s.cmd("From: alice@relay.test\r\nSubject: seam\r\n\r\nhello\r\n."); !strings.HasPrefix(r, "250 ") {
		t.Fatalf("DATA: %q", r)
	}
	s.cmd("QUIT")
	c.Close()
	// A relay attempt from .32 on the MX listener.
	c = n.dial(t, "198.51.100.32", mx)
	s = &smtpClient{t: t, c: c, r: bufio.NewReader(c)}
	s.reply()
	s.cmd("EHLO spammer.test")
	s.cmd("MAIL FROM:<x@spammer.test>")
	if r := s.cmd("RCPT TO:<victim@elsewhere.test>"); !strings.HasPrefix(r, "5") {
		t.Fatalf("relay attempt: %q, want a 5xx", r)
	}
	s.cmd("QUIT")
	c.Close()
	// An HTTP request from .33.
	c = n.dial(t, "198.51.100.33", mx)
	s = &smtpClient{t: t, c: c, r: bufio.NewReader(c)}
	s.reply()
	fmt.Fprintf(c, "GET / HTTP/1.1\r\n")
	s.reply()
	c.Close()
	eventually(t, "the delivery and the deferral logged", func() bool {
		return strings.Contains(out.String(), `msg=delivered`) && strings.Contains(out.String(), `msg=deferred`)
	})
	cmd.Process.Signal(syscall.SIGTERM)
	cmd.Wait()

	logFile := filepath.Join(dir, "serve.log")
	os.WriteFile(logFile, []byte(out.String()), 0o644)
	// What the log holds, by the one parser.
	kinds := map[maillog.Kind]int{}
	for _, l := range strings.Split(out.String(), "\n") {
		if r, ok := maillog.Parse(l); ok {
			kinds[r.Kind]++
		}
	}
	if kinds[maillog.KindAuthFailed] < 3 || kinds[maillog.KindBanned] != 1 || kinds[maillog.KindAccepted] != 1 ||
		kinds[maillog.KindDelivered] != 1 || kinds[maillog.KindDeferred] < 1 || kinds[maillog.KindRelayDenied] != 1 {
		t.Fatalf("serve's log records: %v", kinds)
	}

	// report: serve's traffic in the Grand Totals, the real ban in the abuse view.
	rep, err := exec.Command(bin, "report", logFile).CombinedOutput()
	if err != nil {
		t.Fatalf("report: %v\n%s", err, rep)
	}
	for _, want := range []*regexp.Regexp{
		regexp.MustCompile(`(?m)^\s+1\s+received$`),
		regexp.MustCompile(`(?m)^\s+1\s+delivered$`),
		regexp.MustCompile(`(?m)^\s+1\s+deferred`),
		regexp.MustCompile(`(?m)^\s+[1-9]\d*\s+rejected`),
		regexp.MustCompile(`198\.51\.100\.30/32`),
	} {
		if !want.Match(rep) {
			t.Errorf("report lacks %s:\n%s", want, rep)
		}
	}

	// watch --replay: the same failures give the same ban.
	w, err := exec.Command(bin, "watch", "--replay", "--config", conf, "--data-dir", data, logFile).CombinedOutput()
	if err != nil {
		t.Fatalf("watch --replay: %v\n%s", err, w)
	}
	if !strings.Contains(string(w), "would ban 198.51.100.30/32") {
		t.Errorf("watch --replay did not ban 198.51.100.30/32:\n%s", w)
	}

	// fail2ban-regex with the shipped filter counts every failed AUTH.
	f2b := fail2banRegex(t, logFile, "normal")
	if f2b.matched != kinds[maillog.KindAuthFailed] || f2b.ips["198.51.100.30"] != kinds[maillog.KindAuthFailed] {
		t.Errorf("fail2ban-regex matched %d lines (%v), want the %d auth failures of 198.51.100.30", f2b.matched, f2b.ips, kinds[maillog.KindAuthFailed])
	}
	if agg := fail2banRegex(t, logFile, "aggressive"); agg.ips["198.51.100.32"] != 1 || agg.ips["198.51.100.33"] != 1 {
		t.Errorf("aggressive mode: %v, want the relay attempt of .32 and the HTTP request of .33", agg.ips)
	}
}

type f2bResult struct {
	matched int
	ips     map[string]int
}

// fail2banRegex runs the real fail2ban-regex on file with the filter
// shipped in dist/fail2ban (beside fail2ban's own common.conf, which it
// includes).
func fail2banRegex(t *testing.T, file, mode string) f2bResult {
	t.Helper()
	if _, err := exec.LookPath("fail2ban-regex"); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatal("CI: fail2ban-regex not installed (package fail2ban)")
		}
		t.Skip("fail2ban-regex not installed")
	}
	fd := filepath.Join(t.TempDir(), "filter.d")
	os.MkdirAll(fd, 0o755)
	for src, dst := range map[string]string{"/etc/fail2ban/filter.d/common.conf": "common.conf", "../../dist/fail2ban/filter.d/relayguard.conf": "relayguard.conf"} {
		b, err := os.ReadFile(src)
		if err != nil {
			t.Fatal(err)
		}
		os.WriteFile(filepath.Join(fd, dst), b, 0o644)
	}
	// -o ip prints the address of each matched line, one a line.
	o, err := exec.Command("fail2ban-regex", "-o", "ip", file,
		filepath.Join(fd, "relayguard.conf")+"[mode="+mode+"]").Output()
	if err != nil {
		t.Fatalf("fail2ban-regex: %v\n%s", err, o)
	}
	res := f2bResult{ips: map[string]int{}}
	for _, l := range strings.Fields(string(o)) {
		res.matched++
		res.ips[l]++
	}
	return res
}
