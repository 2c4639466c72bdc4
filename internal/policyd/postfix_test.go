package policyd

import (
	"bufio"
	"errors"
	"fmt"
	"net"
	"net/smtp"
	"net/textproto"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/relayguard/relayguard/internal/dnsutil/dnstest"
	"github.com/relayguard/relayguard/internal/hosttest"
)

// needPostfix skips outside CI when Postfix or root is missing; under CI
// (which installs postfix and runs as root) it fails instead.
func needPostfix(t *testing.T) {
	t.Helper()
	why := ""
	if _, err := os.Stat("/usr/lib/postfix/sbin/master"); err != nil {
		why = "postfix is not installed (apt-get install postfix)"
	} else if os.Geteuid() != 0 {
		why = "postfix's master must run as root"
	}
	if why == "" {
		return
	}
	if os.Getenv("CI") == "true" {
		t.Fatal(why)
	}
	t.Skip(why)
}

// buildRelayguard returns the relayguard binary, built once per test
// process (hosttest.Relayguard).
func buildRelayguard(t *testing.T, _ string) string {
	t.Helper()
	return hosttest.Relayguard(t)
}

func freePort(t *testing.T) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// startPolicyBinary runs `relayguard policy` and returns its address, read
// from its "listening" log line.
func startPolicyBinary(t *testing.T, bin, dir, dnsAddr string) string {
	t.Helper()
	return startPolicyConf(t, bin, dir, fmt.Sprintf(`
local_domains = ["example.test"]

[policy]
listen = "127.0.0.1:0"
recipient_restrictions = ["reject_unauth_destination", "reject_rbl_client bl.test=127.0.0.[2..11]", "dnsbl_score"]

[dnsbl]
zones = ["bl.test*1"]
resolvers = [%q]
timeout = "5s"
`, dnsAddr))
}

// startPolicyConf runs `relayguard policy` with the configuration text
// conf and returns its address.
func startPolicyConf(t *testing.T, bin, dir, conf string) string {
	t.Helper()
	if err := os.WriteFile(filepath.Join(dir, "relayguard.toml"), []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	conf = filepath.Join(dir, "relayguard.toml")
	cmd := exec.Command(bin, "--config", conf, "--data-dir", filepath.Join(dir, "data"), "--create-data-dir", "policy")
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Signal(os.Interrupt); cmd.Wait() })
	addrc := make(chan string, 1)
	go func() {
		re := regexp.MustCompile(`policy service listening" address=(\S+)`)
		sc := bufio.NewScanner(stderr)
		sent := false
		for sc.Scan() {
			t.Logf("relayguard: %s", sc.Text())
			if m := re.FindStringSubmatch(sc.Text()); m != nil && !sent {
				addrc <- m[1]
				sent = true
			}
		}
		if !sent {
			close(addrc)
		}
	}()
	select {
	case a, ok := <-addrc:
		if !ok {
			t.Fatal("relayguard policy exited before listening")
		}
		return a
	case <-time.After(60 * time.Second):
		t.Fatal("relayguard policy did not start")
	}
	return ""
}

const masterCF = `%s inet n - n - - smtpd
pickup    unix  n       -       n       60      1       pickup
cleanup   unix  n       -       n       -       0       cleanup
qmgr      unix  n       -       n       300     1       qmgr
rewrite   unix  -       -       n       -       -       trivial-rewrite
bounce    unix  -       -       n       -       0       bounce
defer     unix  -       -       n       -       0       bounce
trace     unix  -       -       n       -       0       bounce
verify    unix  -       -       n       -       1       verify
flush     unix  n       -       n       1000?   0       flush
proxymap  unix  -       -       n       -       -       proxymap
showq     unix  n       -       n       -       -       showq
error     unix  -       -       n       -       -       error
retry     unix  -       -       n       -       -       error
discard   unix  -       -       n       -       -       discard
anvil     unix  -       -       n       -       1       anvil
scache    unix  -       -       n       -       1       scache
postlog   unix-dgram n  -       n       -       1       postlogd
`

// startPostfix writes a private Postfix instance under dir listening on
// 127.0.0.1:port, with check_policy_service pointing at policyAddr and
// every accepted message discarded, and starts it.
//
// extra main.cf lines are appended (a later setting overrides an earlier
// one, as postconf(5) says).
func startPostfix(t *testing.T, dir string, port int, policyAddr string, extra ...string) (logFile string) {
	t.Helper()
	etc, queue, data := filepath.Join(dir, "etc"), filepath.Join(dir, "queue"), filepath.Join(dir, "data")
	logFile = filepath.Join(dir, "maillog")
	for _, d := range []string{etc, queue, data} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	// The postfix user must be able to reach the queue.
	for d := dir; d != "/" && d != "."; d = filepath.Dir(d) {
		if fi, err := os.Stat(d); err == nil && fi.Mode().Perm()&0o005 != 0o005 {
			os.Chmod(d, fi.Mode().Perm()|0o755)
		}
	}
	os.Chown(data, postfixUID(t), -1)
	mainCF := fmt.Sprintf(`compatibility_level = 3.6
queue_directory = %s
data_directory = %s
mail_owner = postfix
setgid_group = postdrop
myhostname = mx.example.test
mydomain = example.test
myorigin = example.test
mydestination =
relay_domains = example.test
mynetworks =
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
smtpd_peername_lookup = no
default_transport = discard
relay_transport = discard
alias_maps =
alias_database =
local_recipient_maps =
biff = no
maillog_file = %s
maillog_file_prefixes = %s
smtpd_recipient_restrictions = reject_unauth_destination, check_policy_service inet:%s
smtpd_policy_service_default_action = 451 4.3.5 policy service unavailable
`, queue, data, logFile, dir, policyAddr) + hosttest.PostlogMain + strings.Join(extra, "\n") + "\n"
	if err := os.WriteFile(filepath.Join(etc, "main.cf"), []byte(mainCF), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(etc, "master.cf"), []byte(fmt.Sprintf(masterCF, fmt.Sprintf("127.0.0.1:%d", port))), 0o644); err != nil {
		t.Fatal(err)
	}
	hosttest.ServePostlog(t, queue, logFile)
	t.Cleanup(func() {
		if err := hosttest.StopPostfix(etc, queue); err != nil {
			t.Logf("postfix stop: %v", err)
		}
	})
	if err := hosttest.RunDaemon(exec.Command(postfixCmd(), "-c", etc, "start")); err != nil {
		l, _ := os.ReadFile(logFile)
		t.Fatalf("postfix start: %v\nmaillog:\n%s", err, l)
	}
	return logFile
}

// postfixCmd is the postfix(1) command, found even without /usr/sbin in PATH.
func postfixCmd() string {
	if p, err := exec.LookPath("postfix"); err == nil {
		return p
	}
	return "/usr/sbin/postfix"
}

func postfixUID(t *testing.T) int {
	out, err := exec.Command("id", "-u", "postfix").Output()
	if err != nil {
		t.Fatalf("no postfix user: %v", err)
	}
	var uid int
	fmt.Sscanf(string(out), "%d", &uid)
	return uid
}

// sendFrom talks SMTP to addr from source address src and returns the
// RCPT error, if any.
func sendFrom(t *testing.T, src, addr, from, to string) error {
	t.Helper()
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}, Timeout: 10 * time.Second}
	var conn net.Conn
	var err error
	// postfix start returns before master listens: retried for a minute
	// in all (each attempt was 30 s, 100 of them).
	for end := time.Now().Add(time.Minute); ; time.Sleep(100 * time.Millisecond) {
		if conn, err = d.Dial("tcp", addr); err == nil || time.Now().After(end) {
			break
		}
	}
	if err != nil {
		t.Fatalf("connect to postfix from %s: %v", src, err)
	}
	conn.SetDeadline(time.Now().Add(2 * time.Minute))
	c, err := smtp.NewClient(conn, "mx.example.test")
	if err != nil {
		t.Fatalf("SMTP greeting from %s: %v", src, err)
	}
	defer c.Close()
	if err := c.Hello("client.example.net"); err != nil {
		t.Fatal(err)
	}
	if err := c.Mail(from); err != nil {
		t.Fatal(err)
	}
	if err := c.Rcpt(to); err != nil {
		return err
	}
	w, err := c.Data()
	if err != nil {
		t.Fatal(err)
	}
	fmt.Fprintf(w, "From: <%s>\r\nTo: <%s>\r\nSubject: policy test\r\n\r\nhello\r\n", from, to)
	if err := w.Close(); err != nil {
		t.Fatalf("end of data: %v", err)
	}
	return c.Quit()
}

// waitLog waits until Postfix's own log contains every pattern.
func waitLog(t *testing.T, file string, patterns ...string) string {
	t.Helper()
	deadline := time.Now().Add(90 * time.Second)
	var b []byte
	for time.Now().Before(deadline) {
		b, _ = os.ReadFile(file)
		ok := true
		for _, p := range patterns {
			if !regexp.MustCompile(p).Match(b) {
				ok = false
			}
		}
		if ok {
			return string(b)
		}
		time.Sleep(200 * time.Millisecond)
	}
	t.Fatalf("postfix log %s lacks %q:\n%s", file, patterns, b)
	return ""
}

// TestPostfixCheckPolicyService runs a real Postfix whose
// smtpd_recipient_restrictions delegate to the relayguard binary: a
// client listed in the test DNSBL (connecting from 127.0.0.5) is refused
// with relayguard's text, a clean one (127.0.0.9) is accepted and
// delivered (discarded), and Postfix's own log says so.
func TestPostfixCheckPolicyService(t *testing.T) {
	needPostfix(t)
	dir, err := os.MkdirTemp("", "rg-postfix-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	dns := dnstest.Start(t)
	dns.Add(t, "2.0.0.127.bl.test. 300 IN A 127.0.0.2", "5.0.0.127.bl.test. 300 IN A 127.0.0.4")

	bin := buildRelayguard(t, dir)
	policyAddr := startPolicyBinary(t, bin, dir, dns.Addr)
	port := freePort(t)
	logFile := startPostfix(t, dir, port, policyAddr)
	smtpAddr := fmt.Sprintf("127.0.0.1:%d", port)

	err = sendFrom(t, "127.0.0.5", smtpAddr, "someone@sender.test", "user@example.test")
	var te *textproto.Error
	if !errors.As(err, &te) || te.Code != 554 || !strings.Contains(te.Msg, "blocked using bl.test (rule reject_rbl_client)") {
		t.Fatalf("listed client: RCPT got %v, want 554 with relayguard's text", err)
	}
	if err := sendFrom(t, "127.0.0.9", smtpAddr, "someone@sender.test", "user@example.test"); err != nil {
		t.Fatalf("clean client: %v", err)
	}
	// A relay attempt is refused by Postfix itself (smtpd_relay_restrictions,
	// defer_unauth_destination) before the policy service is asked.
	err = sendFrom(t, "127.0.0.9", smtpAddr, "someone@sender.test", "victim@elsewhere.test")
	if !errors.As(err, &te) || (te.Code != 554 && te.Code != 454) || !strings.Contains(te.Msg, "Relay access denied") {
		t.Fatalf("relay attempt: %v", err)
	}

	log := waitLog(t, logFile,
		`NOQUEUE: reject: RCPT from unknown\[127\.0\.0\.5\]: 554 5\.7\.1 .*blocked using bl\.test \(rule reject_rbl_client\)`,
		`client=unknown\[127\.0\.0\.9\]`,
		`to=<user@example\.test>.*status=sent`)
	if strings.Contains(log, "127.0.0.5]") && regexp.MustCompile(`client=unknown\[127\.0\.0\.5\]`).MatchString(log) {
		t.Errorf("the listed client got a queue ID:\n%s", log)
	}
}
