package relaytest

import (
	"crypto/ecdsa"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/relayguard/relayguard/internal/hosttest"
)

// needBinary returns the path of a program, also looking in /usr/sbin
// (not always in PATH). It skips outside CI when the program is missing;
// under CI (CI=true) it fails, since CI installs every package the tests
// need.
func needBinary(t testing.TB, name string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err != nil && !filepath.IsAbs(name) {
		p, err = exec.LookPath(filepath.Join("/usr/sbin", name))
	}
	if err != nil {
		if os.Getenv("CI") != "" {
			t.Fatalf("%s not found under CI: %v", name, err)
		}
		t.Skipf("%s not installed: %v", name, err)
	}
	return p
}

func needRoot(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		if os.Getenv("CI") != "" {
			t.Fatal("this test needs root, and CI runs as root")
		}
		t.Skip("needs root")
	}
}

// freePort returns a loopback port that was free a moment ago.
func freePort(t testing.TB) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// waitPort waits until something accepts connections on addr.
func waitPort(t testing.TB, addr string, exited <-chan struct{}, what func() string) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for time.Now().Before(deadline) {
		select {
		case <-exited:
			t.Fatalf("server exited before listening on %s:\n%s", addr, what())
		default:
		}
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			c.Close()
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("nothing listening on %s after 60s:\n%s", addr, what())
}

// writeCert writes the throwaway certificate as PEM files.
func writeCert(t testing.TB, dir string) (certFile, keyFile string) {
	t.Helper()
	c := selfSigned(t).Certificates[0]
	kder, err := x509.MarshalECPrivateKey(c.PrivateKey.(*ecdsa.PrivateKey))
	if err != nil {
		t.Fatal(err)
	}
	certFile, keyFile = filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Certificate[0]}), 0o644)
	os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder}), 0o600)
	return certFile, keyFile
}

// startPostfix runs a private Postfix instance (its own main.cf, master.cf,
// queue and data directories) with master in the foreground on a loopback
// port, and stops it when the test ends. extra is appended to main.cf.
func startPostfix(t testing.TB, extra string) (addr, logFile string) {
	t.Helper()
	needRoot(t)
	postconf := needBinary(t, "postconf")
	postfix := needBinary(t, "postfix")
	pfUser, err := user.Lookup("postfix")
	if err != nil {
		t.Fatalf("user postfix: %v", err)
	}
	uid, _ := strconv.Atoi(pfUser.Uid)

	// Not t.TempDir(): Postfix daemons run as user postfix and must be able
	// to reach their directories, which a 0700 test directory forbids.
	dir, err := os.MkdirTemp("", "relaytest-postfix-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	conf, queue, data := filepath.Join(dir, "conf"), filepath.Join(dir, "queue"), filepath.Join(dir, "data")
	for _, d := range []string{conf, queue, data} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	os.Chmod(dir, 0o755)
	os.Chown(data, uid, -1)
	cert, key := writeCert(t, conf)
	port := freePort(t)
	addr = net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
	logFile = filepath.Join(dir, "maillog")

	// Everything not named here keeps Postfix's compiled-in default, in
	// particular smtpd_relay_restrictions (permit_mynetworks,
	// permit_sasl_authenticated, defer_unauth_destination) and, at
	// compatibility level 3.6, mynetworks_style = host (127.0.0.1 only).
	mainCF := fmt.Sprintf(`compatibility_level = 3.6
queue_directory = %s
data_directory = %s
mail_owner = postfix
setgid_group = postdrop
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
myhostname = relaytest-postfix.test
mydestination = $myhostname, localhost
alias_maps =
alias_database =
maillog_file_prefixes = %s
maillog_file = %s
# No DNS in the sandbox: do not stall on reverse lookups of the client.
smtpd_peername_lookup = no
# No queue manager runs, so do not wait for one to drain the queue.
in_flow_delay = 0
smtpd_tls_security_level = may
smtpd_tls_cert_file = %s
smtpd_tls_key_file = %s
%s
%s`, queue, data, dir, logFile, cert, key, extra, hosttest.PostlogMain)
	masterCF := fmt.Sprintf(`%s inet n - n - - smtpd
cleanup unix n - n - 0 cleanup
rewrite unix - - n - - trivial-rewrite
tlsmgr unix - - n 1000? 1 tlsmgr
bounce unix - - n - 0 bounce
defer unix - - n - 0 bounce
trace unix - - n - 0 bounce
verify unix - - n - 1 verify
proxymap unix - - n - - proxymap
anvil unix - - n - 1 anvil
scache unix - - n - 1 scache
error unix - - n - - error
postlog unix-dgram n - n - 1 postlogd
`, addr)
	os.WriteFile(filepath.Join(conf, "main.cf"), []byte(mainCF), 0o644)
	os.WriteFile(filepath.Join(conf, "master.cf"), []byte(masterCF), 0o644)
	out, err := exec.Command(postconf, "-c", conf, "-h", "daemon_directory").Output()
	if err != nil {
		t.Fatalf("postconf -c %s -h daemon_directory: %v", conf, err)
	}
	master := filepath.Join(strings.TrimSpace(string(out)), "master")
	needBinary(t, master)
	if out, err := exec.Command(postfix, "-c", conf, "check").CombinedOutput(); err != nil {
		t.Fatalf("postfix -c %s check: %v\n%s", conf, err, out)
	}

	hosttest.ServePostlog(t, queue, logFile)
	cmd := exec.Command(master, "-c", conf, "-d")
	var merr strings.Builder
	cmd.Stdout, cmd.Stderr = &merr, &merr
	cmd.WaitDelay = 5 * time.Second // a daemon left holding the output does not hold Wait
	if err := cmd.Start(); err != nil {
		t.Fatalf("%s: %v", master, err)
	}
	exited := make(chan struct{})
	go func() { cmd.Wait(); close(exited) }()
	t.Cleanup(func() {
		cmd.Process.Signal(os.Interrupt)
		select {
		case <-exited:
		case <-time.After(10 * time.Second):
			cmd.Process.Kill()
			<-exited
		}
		// The daemons it started, if any is left.
		hosttest.StopPostfix(conf, queue)
	})
	waitPort(t, addr, exited, func() string {
		b, _ := os.ReadFile(logFile)
		return merr.String() + string(b)
	})
	return addr, logFile
}

// jsonReport runs the CLI with --json and decodes the report.
func jsonReport(t testing.TB, args ...string) (int, *Report) {
	t.Helper()
	r := runCLI(t, append([]string{"relaytest", "--json"}, args...)...)
	var rep Report
	if err := json.Unmarshal([]byte(r.stdout), &rep); err != nil {
		t.Fatalf("relayguard %v: exit %d, JSON: %v\n%s\n%s", args, r.code, err, r.stdout, r.stderr)
	}
	return r.code, &rep
}

// Postfix with its default restrictions, tested from 127.0.0.2 (outside
// mynetworks): closed. Every relay is refused with 454 4.7.1
// (defer_unauth_destination) or a 5xx, in all three phases.
func TestPostfixDefaultIsClosed(t *testing.T) {
	addr, logFile := startPostfix(t, "")
	code, rep := jsonReport(t, "--source", "127.0.0.2", addr)
	if code != 0 || rep.Outcome != "closed" {
		t.Fatalf("exit %d outcome %s counts %v untestable %+v", code, rep.Outcome, rep.Counts, rep.Untestable)
	}
	n := len(formNames())
	if len(rep.Results) != 3*n || len(rep.Phases) != 3 || !rep.Phases[1].TLS {
		t.Errorf("%d results, phases %+v", len(rep.Results), rep.Phases)
	}
	if !strings.Contains(rep.Phases[2].Setup, "503") {
		t.Errorf("authfail setup %q: Postfix has no AUTH here and should say 503", rep.Phases[2].Setup)
	}
	for _, r := range rep.Results {
		if !(r.Verdict == Rejected || r.Verdict == Temporary && r.PolicyDenial()) {
			t.Errorf("%s: %s %+v", r.ID, r.Verdict, r.Exchanges)
		}
	}
	b, _ := os.ReadFile(logFile)
	if !strings.Contains(string(b), "Relay access denied") {
		t.Errorf("Postfix log has no relay refusal:\n%s", b)
	}
	if strings.Contains(string(b), "too many errors") {
		t.Errorf("the tester ran into Postfix's error limit:\n%s", b)
	}
}

// Postfix with mynetworks = 0.0.0.0/0 relays for anyone: OPEN, exit 1.
func TestPostfixOpenIsOpen(t *testing.T) {
	addr, _ := startPostfix(t, "mynetworks = 0.0.0.0/0")
	code, rep := jsonReport(t, "--source", "127.0.0.2", addr)
	if code != 1 || rep.Outcome != "open" {
		t.Fatalf("exit %d outcome %s counts %v", code, rep.Outcome, rep.Counts)
	}
	byID := map[string]Result{}
	for _, r := range rep.Results {
		byID[r.ID] = r
	}
	for _, ph := range []string{PhasePlain, PhaseStartTLS, PhaseAuthFail} {
		for _, name := range []string{"null-sender", "outside-sender", "sender-ip-literal", "random-subdomain",
			"uppercase-domain", "percent-hack-name", "source-route-name", "quoted-address"} {
			if r := byID[ph+"/"+name]; r.Verdict != Accepted {
				t.Errorf("%s/%s: %s %+v, want accepted", ph, name, r.Verdict, r.Exchanges)
			}
		}
	}
}
