package audit_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/relayguard/relayguard/internal/audit"
	"github.com/relayguard/relayguard/internal/hosttest"
)

// TestOpenPostfix stands up a Postfix with mynetworks = 0.0.0.0/0 listening
// on every address: the audit finds the listener with its programs and
// users, relays through it from an outside address over IPv4 and IPv6, and
// reports the open relay and the cause in main.cf, with the fix. --fix
// without --yes leaves Postfix alone; with --yes it applies the fix, and
// the next audit finds the relay closed.
func TestOpenPostfix(t *testing.T) {
	t.Parallel()
	h := newHost(t, "", "")
	p := h.startPostfix("mynetworks = 0.0.0.0/0 [::]/0\n", "")
	rep, code, stderr := h.audit("--areas", "listeners,postfix")
	t.Logf("first audit: %s", rep.Duration)
	if code != audit.ExitFindings {
		t.Fatalf("exit %d, want 1\n%s\n%s", code, stderr, dump(rep))
	}
	l := listener(t, rep, 25)
	if l.PostfixConfig != p.Etc || l.View != "outside" || !slices.Contains(l.Addrs, "0.0.0.0") || !slices.Contains(l.Addrs, "[::]") {
		t.Errorf("listener: %+v", l)
	}
	users := map[string]string{}
	for _, pr := range l.Programs {
		users[pr.Exe[strings.LastIndexByte(pr.Exe, '/')+1:]] = pr.User
	}
	// smtpd processes hold the socket only while they live; master always.
	if users["master"] != "root" || users["smtpd"] != "" && users["smtpd"] != "postfix" {
		t.Errorf("programs: %+v", l.Programs)
	}
	open := map[bool]bool{}
	for _, rr := range l.Relay {
		if rr.Outcome == "open" && rr.View == "outside" {
			open[strings.Contains(rr.Target, "[")] = true
		}
	}
	if !open[false] || !open[true] {
		t.Errorf("want open relay from outside over IPv4 and IPv6: %+v", l.Relay)
	}
	mustFind(t, rep, "listener.open-relay", audit.Critical, "OPEN RELAY")
	f := mustFind(t, rep, "postfix.mynetworks-world", audit.Critical, "0.0.0.0/0")
	if f.AutoFix != "needs --yes" || !strings.Contains(f.Fix, "postconf -c "+p.Etc+" -e 'mynetworks=127.0.0.0/8 [::1]/128'") {
		t.Errorf("fix %q (%s)", f.Fix, f.AutoFix)
	}
	// The same audit as one HTML page, rendered by Chromium.
	page := filepath.Join(h.dir, "audit.html")
	if _, code, stderr := h.auditRaw("--areas", "listeners,postfix", "--format", "html", "-o", page); code != audit.ExitFindings {
		t.Fatalf("--format html: exit %d\n%s", code, stderr)
	}
	b, err := os.ReadFile(page)
	if err != nil {
		t.Fatal(err)
	}
	checkHTMLInChromium(t, b, "audit-open-postfix", `id="listener.open-relay"`, `id="postfix.mynetworks-world"`, "OPEN RELAY")

	// The same server named as a remote host by an audit run on another
	// machine (the client namespace).
	h.net.AddClient(t, netip.MustParseAddr("198.51.100.7"))
	var out bytes.Buffer
	cmd := hosttest.Command(h.net.Client, hosttest.Relayguard(t), "--config", h.cfg, "audit", "--json", "--areas", "listeners", "192.0.2.1", "192.0.2.1:2999")
	cmd.Stdout = &out
	cmd.Run()
	var remote audit.Report
	if err := json.Unmarshal(out.Bytes(), &remote); err != nil {
		t.Fatalf("remote audit: %v\n%s", err, out.String())
	}
	rf := mustFind(t, &remote, "listener.open-relay", audit.Critical, "192.0.2.1:25 (remote")
	if !strings.Contains(rf.Fix, "on 192.0.2.1") || len(find(&remote, "listener.unexpected-mta")) != 0 {
		t.Errorf("remote finding: %+v", rf)
	}
	if !slices.ContainsFunc(remote.Problems, func(p audit.Problem) bool { return strings.Contains(p.Error, "192.0.2.1:2999") }) {
		t.Errorf("a named port that does not answer is not reported: %+v", remote.Problems)
	}

	// --fix alone does not touch Postfix's configuration.
	rep, _, stderr = h.audit("--areas", "postfix", "--fix")
	if strings.Contains(stderr, "applying: postconf") {
		t.Fatalf("--fix without --yes changed Postfix:\n%s", stderr)
	}
	skipped := false
	for _, x := range rep.Fixes {
		skipped = skipped || !x.Applied && strings.Contains(x.Skipped, "--yes") && strings.Contains(x.Show, "mynetworks")
	}
	if !skipped {
		t.Errorf("fix not listed as needing --yes: %+v", rep.Fixes)
	}
	rep, _, stderr = h.audit("--areas", "postfix", "--fix", "--yes")
	if !strings.Contains(stderr, "applying: postconf -c "+p.Etc) {
		t.Fatalf("--fix --yes did not apply the postconf fix:\n%s\n%s", stderr, dump(rep))
	}
	rep, _, _ = h.audit("--areas", "listeners,postfix")
	mustNotFind(t, rep, "listener.open-relay")
	mustNotFind(t, rep, "postfix.mynetworks-world")
	for _, rr := range listener(t, rep, 25).Relay {
		if rr.Outcome != "closed" {
			t.Errorf("after the fix: %+v", rr)
		}
	}
}

// TestExtraMTA runs a forgotten second MTA next to a closed Postfix:
// Python's aiosmtpd on port 2525, started as root and running as nobody,
// accepting every recipient. The audit finds it by its socket, names the
// program and the user, relays through it from outside, and reports both
// the unexpected MTA and the open relay with the fix (stop it). Once it is
// stopped, the next audit finds neither, and the closed Postfix next to it
// never was reported as a relay.
func TestExtraMTA(t *testing.T) {
	t.Parallel()
	hosttest.NeedRoot(t, "/usr/bin/python3")
	h := newHost(t, "", "")
	h.startPostfix("", "")
	mta := hosttest.Command(h.net.Server, "/usr/bin/python3", "-m", "aiosmtpd", "-l", "0.0.0.0:2525")
	mta.Stdout, mta.Stderr = io.Discard, io.Discard
	if err := mta.Start(); err != nil {
		t.Fatal(err)
	}
	stopped := false
	t.Cleanup(func() {
		if !stopped {
			mta.Process.Kill()
			mta.Wait()
		}
	})
	hosttest.Eventually(t, "aiosmtpd listening", func() bool {
		return hosttest.InNS(h.net.Server, func() error {
			c, err := net.Dial("tcp", "127.0.0.1:2525")
			if err == nil {
				c.Close()
			}
			return err
		}) == nil
	})
	rep, code, stderr := h.audit("--areas", "listeners")
	if code != audit.ExitFindings {
		t.Fatalf("exit %d\n%s\n%s", code, stderr, dump(rep))
	}
	l := listener(t, rep, 2525)
	if len(l.Programs) != 1 || l.Programs[0].User != "nobody" || !strings.Contains(l.Programs[0].Cmdline, "aiosmtpd") {
		t.Errorf("programs of 2525: %+v", l.Programs)
	}
	f := mustFind(t, rep, "listener.unexpected-mta", audit.Medium, "runs as nobody")
	if !strings.Contains(f.Fix, fmt.Sprint(mta.Process.Pid)) {
		t.Errorf("fix %q does not name pid %d", f.Fix, mta.Process.Pid)
	}
	mustFind(t, rep, "listener.open-relay", audit.Critical, ":2525")
	for _, f := range find(rep, "listener.open-relay") {
		if strings.Contains(f.Subject, ":25 ") {
			t.Errorf("the closed Postfix reported as open: %+v", f)
		}
	}
	if pf := listener(t, rep, 25); len(pf.Relay) == 0 || pf.Relay[0].Outcome != "closed" {
		t.Errorf("Postfix: %+v", pf.Relay)
	}

	mta.Process.Kill()
	mta.Wait()
	stopped = true
	rep, _, _ = h.audit("--areas", "listeners")
	mustNotFind(t, rep, "listener.unexpected-mta")
	mustNotFind(t, rep, "listener.open-relay")
}

// TestAuthBeforeTLS stands up Postfix with Dovecot SASL offering PLAIN,
// LOGIN and CRAM-MD5 and smtpd_tls_auth_only = no, with a certificate
// that expires in three days. The audit sees AUTH offered on the plain
// session, the CRAM-MD5 mechanism, the main.cf setting behind it and the
// expiring certificate; --fix --yes sets smtpd_tls_auth_only = yes and
// reloads Postfix, after which AUTH waits for STARTTLS; a renewed
// certificate and a reload clear the expiry finding.
func TestAuthBeforeTLS(t *testing.T) {
	t.Parallel()
	h := newHost(t, "", "[dnsbl]\nresolvers = [\"127.0.0.1:53\"]\n")
	d := hosttest.StartDovecot(t, hosttest.DovecotConfig{Netns: h.net.Server, Users: map[string]string{"alice": "s3cret-pass"},
		Extra: "auth_mechanisms = plain login cram-md5\n"})
	cert, key := writeCert(t, h.dir, "mx.example.test", time.Now().Add(3*24*time.Hour+time.Hour))
	p := h.startPostfix(d.PostfixSASL()+fmt.Sprintf("smtpd_tls_cert_file = %s\nsmtpd_tls_key_file = %s\nsmtpd_tls_security_level = may\nsmtpd_tls_auth_only = no\n", cert, key), tlsmgr)
	rep, _, stderr := h.audit("--areas", "listeners,postfix,identity", "--catalog=false")
	t.Logf("first audit: %s", rep.Duration)
	l := listener(t, rep, 25)
	if l.Probe == nil || l.Probe.TLS == nil || !slices.Contains(l.Probe.AuthPlain, "PLAIN") || !slices.Contains(l.Probe.AuthTLS, "PLAIN") {
		t.Fatalf("probe: %+v\n%s", l.Probe, stderr)
	}
	// The battery ran over IPv4 and IPv6, plain and after STARTTLS.
	fams := map[bool]bool{}
	for _, rr := range l.Relay {
		if rr.Outcome == "closed" && slices.Contains(rr.Phases, "plain") && slices.Contains(rr.Phases, "starttls") {
			fams[strings.Contains(rr.Target, "[")] = true
		}
	}
	if !fams[false] || !fams[true] {
		t.Errorf("want the battery plain and after STARTTLS over IPv4 and IPv6: %+v", l.Relay)
	}
	mustFind(t, rep, "listener.plaintext-auth", audit.High, "PLAIN")
	mustFind(t, rep, "listener.weak-auth-mechanisms", audit.Medium, "CRAM-MD5")
	f := mustFind(t, rep, "postfix.tls-auth-only", audit.High, "smtpd_tls_auth_only")
	if f.AutoFix != "needs --yes" || !strings.Contains(f.Fix, "smtpd_tls_auth_only=yes") {
		t.Errorf("fix: %q %q", f.Fix, f.AutoFix)
	}
	exp := mustFind(t, rep, "identity.cert-expiring", audit.High, "expires in 3 days")
	if len(find(rep, "identity.cert-expiring")) != 1 || !strings.Contains(strings.Join(exp.Evidence, " "), cert) || !strings.Contains(strings.Join(exp.Evidence, " "), "listener") {
		t.Errorf("one finding for the certificate the listener presents and the file holds: %+v", find(rep, "identity.cert-expiring"))
	}

	if _, _, stderr := h.audit("--areas", "postfix", "--fix", "--yes"); !strings.Contains(stderr, "smtpd_tls_auth_only=yes") {
		t.Fatalf("not applied:\n%s", stderr)
	}
	cert2, key2 := writeCert(t, h.dir, "mx.example.test", time.Now().Add(90*24*time.Hour))
	hosttest.Run(t, hosttest.PostfixBin+"/postconf", "-c", p.Etc, "-e", "smtpd_tls_cert_file="+cert2, "smtpd_tls_key_file="+key2)
	hosttest.Run(t, hosttest.PostfixBin+"/postfix", "-c", p.Etc, "reload")
	hosttest.Eventually(t, "Postfix reloaded", func() bool {
		b, _ := os.ReadFile(p.Log)
		return strings.Count(string(b), "reload") >= 2
	})
	rep, _, _ = h.audit("--areas", "listeners,postfix,identity")
	mustNotFind(t, rep, "listener.plaintext-auth")
	mustNotFind(t, rep, "postfix.tls-auth-only")
	mustNotFind(t, rep, "identity.cert-expiring")
	if l := listener(t, rep, 25); len(l.Probe.AuthPlain) != 0 || !slices.Contains(l.Probe.AuthTLS, "PLAIN") {
		t.Errorf("after the fix: AUTH before TLS %v, after %v", l.Probe.AuthPlain, l.Probe.AuthTLS)
	}
}

// TestLocalRelayAndNoSMTP: an SMTP server bound to loopback only (aiosmtpd
// on 127.0.0.1:2526, accepting every recipient) cannot be reached from
// outside, but every local program can send through it past the egress
// lockdown: the audit tests it from the host and reports a local relay
// (medium) next to the unexpected MTA. A web server on port 587 does not
// greet as SMTP and is listed (info) rather than passed over. Stopped,
// neither is reported.
func TestLocalRelayAndNoSMTP(t *testing.T) {
	t.Parallel()
	hosttest.NeedRoot(t, "/usr/bin/python3")
	h := newHost(t, "", "")
	var procs []*exec.Cmd
	for _, args := range [][]string{
		{"/usr/bin/python3", "-m", "aiosmtpd", "-n", "-l", "127.0.0.1:2526"},
		{"/usr/bin/python3", "-m", "http.server", "--bind", "0.0.0.0", "587"},
	} {
		cmd := hosttest.Command(h.net.Server, args[0], args[1:]...)
		cmd.Stdout, cmd.Stderr = io.Discard, io.Discard
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		procs = append(procs, cmd)
		t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	}
	for _, addr := range []string{"127.0.0.1:2526", "127.0.0.1:587"} {
		hosttest.Eventually(t, addr+" listening", func() bool {
			return hosttest.InNS(h.net.Server, func() error {
				c, err := net.Dial("tcp", addr)
				if err == nil {
					c.Close()
				}
				return err
			}) == nil
		})
	}
	rep, code, stderr := h.audit("--areas", "listeners")
	if code != audit.ExitFindings {
		t.Fatalf("exit %d\n%s\n%s", code, stderr, dump(rep))
	}
	f := mustFind(t, rep, "listener.local-relay", audit.Medium, "127.0.0.1:2526")
	if !strings.Contains(f.Fix, fmt.Sprint(procs[0].Process.Pid)) {
		t.Errorf("local-relay fix does not name the process: %q", f.Fix)
	}
	mustFind(t, rep, "listener.unexpected-mta", audit.Medium, "aiosmtpd")
	mustNotFind(t, rep, "listener.open-relay")
	mustNotFind(t, rep, "listener.relay-from-host")
	mustFind(t, rep, "listener.no-smtp", audit.Info, ":587")

	for _, p := range procs {
		p.Process.Kill()
		p.Wait()
	}
	rep, _, _ = h.audit("--areas", "listeners")
	for _, c := range []string{"listener.local-relay", "listener.unexpected-mta", "listener.no-smtp"} {
		mustNotFind(t, rep, c)
	}
}
