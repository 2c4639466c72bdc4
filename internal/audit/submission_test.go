package audit_test

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/relayguard/relayguard/internal/audit"
	"github.com/relayguard/relayguard/internal/hosttest"
)

// TestOpenSubmissionVRFYNoTLS stands up a Postfix without TLS whose
// submission port (587) takes mail without AUTH and which answers VRFY
// (252 for postmaster, 550 for an unknown user: it tells them apart). The
// audit reports the open submission port (high), VRFY (low) and no
// STARTTLS (medium) on both ports. Run with --no-outside, the relay battery
// runs from the host's own address, which Postfix trusts
// (mynetworks_style = host): the relay is reported as relay-from-host
// (high), not as an open relay. The fixes the findings print are run as
// printed (a shell runs them, as an operator pasting them would); the next
// audit reports neither the open submission port nor VRFY.
func TestOpenSubmissionVRFYNoTLS(t *testing.T) {
	t.Parallel()
	h := newHost(t, "", "")
	d := hosttest.StartDovecot(t, hosttest.DovecotConfig{Netns: h.net.Server, Users: map[string]string{"alice": "s3cret-pass"}})
	// example.test is local, with postmaster its one user; mynetworks is
	// what mynetworks_style = host computes on this host.
	p := h.startPostfix(fmt.Sprintf(`mydestination = example.test
relay_domains =
local_recipient_maps = inline:{ postmaster=ok }
mynetworks = 127.0.0.0/8 192.0.2.1/32 [::1]/128 [2001:db8::1]/128
smtpd_sasl_type = dovecot
smtpd_sasl_path = %s
`, d.AuthSocket),
		"submission inet n       -       n       -       -       smtpd\n")

	rep, code, stderr := h.audit("--areas", "listeners")
	if code != audit.ExitFindings {
		t.Fatalf("exit %d\n%s\n%s", code, stderr, dump(rep))
	}
	sub := mustFind(t, rep, "listener.open-submission", audit.High, ":587")
	if !strings.Contains(sub.Fix, "-P 'submission/inet/smtpd_client_restrictions=permit_sasl_authenticated,reject'") {
		t.Errorf("open submission fix: %q", sub.Fix)
	}
	if fs := find(rep, "listener.open-submission"); len(fs) != 1 {
		t.Errorf("port 25 is not a submission port: %+v", fs)
	}
	vrfy := mustFind(t, rep, "listener.vrfy", audit.Low, "252")
	if !strings.Contains(strings.Join(vrfy.Evidence, " "), "unknown user → 550") || !strings.Contains(vrfy.Fix, "disable_vrfy_command = yes") {
		t.Errorf("vrfy: %+v", vrfy)
	}
	mustFind(t, rep, "listener.no-tls", audit.Medium, ":25 ")
	mustFind(t, rep, "listener.no-tls", audit.Medium, ":587")
	mustNotFind(t, rep, "listener.open-relay")
	mustNotFind(t, rep, "listener.expn") // Postfix has no EXPN

	// From the host itself, Postfix's trust of its own addresses shows.
	rep, _, stderr = h.audit("--areas", "listeners", "--no-outside")
	f := mustFind(t, rep, "listener.relay-from-host", audit.High, "192.0.2.1")
	if !strings.Contains(f.Fix, "postconf -c "+p.Etc) {
		t.Errorf("relay-from-host fix: %q", f.Fix)
	}
	mustNotFind(t, rep, "listener.open-relay")
	if l := listener(t, rep, 25); l.View != "host" {
		t.Errorf("--no-outside: view %q\n%s", l.View, stderr)
	}

	// The operator pastes the printed fixes.
	for _, fix := range []string{sub.Fix, vrfy.Fix} {
		runFix(t, fix)
	}
	hosttest.Eventually(t, "Postfix reloaded twice", func() bool {
		b, _ := os.ReadFile(p.Log)
		return strings.Count(string(b), "reload") >= 2
	})
	rep, _, _ = h.audit("--areas", "listeners")
	mustNotFind(t, rep, "listener.open-submission")
	mustNotFind(t, rep, "listener.vrfy")
	if l := listener(t, rep, 587); l.Probe == nil || l.Probe.NoAuthRcpt.Code/100 != 5 {
		t.Errorf("587 after the fix: %+v", l.Probe)
	}
}

// runFix runs a fix as printed, through a shell, as an operator pasting it
// would (Postfix's commands on the PATH). Its output goes to a file: a
// daemon it starts must not hold the test's pipe open.
func runFix(t *testing.T, fix string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "sh", "-ec", fix)
	cmd.Env = append(os.Environ(), "PATH="+hosttest.PostfixBin+":"+os.Getenv("PATH"))
	if err := hosttest.RunDaemon(cmd); err != nil {
		t.Fatalf("the printed fix: %v", err)
	}
}
