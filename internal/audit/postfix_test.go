package audit_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/relayguard/relayguard/internal/audit"
	"github.com/relayguard/relayguard/internal/hosttest"
)

// TestPostfixLint lints a Postfix configuration that is not running (named
// with --postfix-config), read by the real postconf: a bare permit in
// smtpd_relay_restrictions and no reject_unauth_destination anywhere,
// mynetworks computed from mynetworks_style = subnet on a host with a /24,
// a submission service that offers AUTH before TLS through its -o
// overrides, the Outlook AUTH= line, the backscatter settings, soft_bounce
// and a policy service that never sees authenticated senders. Each finding
// has its severity and fix; --fix --yes applies the postconf changes and
// the next audit no longer reports them.
func TestPostfixLint(t *testing.T) {
	t.Parallel()
	hosttest.NeedPostfix(t)
	h := newHost(t, "", "")
	hosttest.Run(t, "ip", "-n", h.net.Server, "addr", "add", "10.9.8.1/24", "dev", "vs")
	etc := filepath.Join(h.dir, "pf")
	os.MkdirAll(etc, 0o755)
	main := `compatibility_level = 3.6
myhostname = mx.example.test
mydestination = $myhostname, example.test
mynetworks_style = subnet
smtpd_relay_restrictions = permit_sasl_authenticated, permit
smtpd_recipient_restrictions = permit_mynetworks, permit_sasl_authenticated, check_policy_service inet:127.0.0.1:10031, permit_mx_backup
local_recipient_maps =
smtpd_reject_unlisted_recipient = no
broken_sasl_auth_clients = yes
soft_bounce = yes
`
	master := `smtp      inet  n       -       n       -       -       smtpd
submission inet n       -       n       -       -       smtpd
  -o smtpd_sasl_auth_enable=yes
  -o smtpd_tls_auth_only=no
pickup    unix  n       -       n       60      1       pickup
`
	os.WriteFile(filepath.Join(etc, "main.cf"), []byte(main), 0o644)
	os.WriteFile(filepath.Join(etc, "master.cf"), []byte(master), 0o644)

	rep, code, stderr := h.audit("--areas", "postfix", "--postfix-config", etc)
	if code != audit.ExitFindings {
		t.Fatalf("exit %d\n%s\n%s", code, stderr, dump(rep))
	}
	want := []struct {
		check string
		sev   audit.Severity
		text  string
		fix   string
	}{
		{"postfix.open-relay-config", audit.Critical, `"permit"`, "-e 'smtpd_relay_restrictions=permit_mynetworks, permit_sasl_authenticated, reject_unauth_destination'"},
		{"postfix.mynetworks-wide", audit.Medium, "10.9.8.0/24", "-e 'mynetworks_style=host'"},
		{"postfix.tls-auth-only", audit.High, "submission/inet", "-P 'submission/inet/smtpd_tls_auth_only=yes'"},
		{"postfix.broken-sasl-auth-clients", audit.Low, "broken_sasl_auth_clients", "-e 'broken_sasl_auth_clients=no'"},
		{"postfix.backscatter-unlisted-recipient", audit.High, "smtpd_reject_unlisted_recipient", "-e 'smtpd_reject_unlisted_recipient=yes'"},
		{"postfix.backscatter-local-recipients", audit.High, "local_recipient_maps", "local_recipient_maps=proxy:unix:passwd.byname $alias_maps"},
		{"postfix.soft-bounce", audit.Medium, "soft_bounce", "-e 'soft_bounce=no'"},
		{"postfix.policy-after-sasl", audit.Medium, "check_policy_service", "before permit_sasl_authenticated"},
		{"postfix.permit-mx-backup", audit.Medium, "permit_mx_backup", "relay_domains"},
	}
	for _, w := range want {
		f := mustFind(t, rep, w.check, w.sev, w.text)
		if !strings.Contains(f.Fix, w.fix) {
			t.Errorf("%s: fix %q lacks %q", w.check, f.Fix, w.fix)
		}
		if strings.HasPrefix(f.Fix, "postconf") && (f.AutoFix != "needs --yes" || strings.Contains(f.Fix, "reload")) {
			t.Errorf("%s: %q (%s): a stopped instance is not reloaded, and Postfix is changed only with --yes", w.check, f.Fix, f.AutoFix)
		}
	}
	if !strings.Contains(mustFind(t, rep, "postfix.open-relay-config", audit.Critical, "").Subject, "not running") {
		t.Errorf("subject does not say the instance is stopped")
	}

	_, _, stderr = h.audit("--areas", "postfix", "--postfix-config", etc, "--fix", "--yes")
	rep, _, _ = h.audit("--areas", "postfix", "--postfix-config", etc)
	for _, w := range want {
		if w.check == "postfix.policy-after-sasl" || w.check == "postfix.permit-mx-backup" {
			continue // no automatic fix: the operator reorders
		}
		if fs := find(rep, w.check); len(fs) > 0 {
			t.Errorf("%s still reported after --fix --yes:\n%s\n%s", w.check, stderr, dump(rep))
		}
	}
}

// TestPostfixLintRelayDomains lints a second kind of stopped instance: one
// relay list permits before reject_unauth_destination (only the other keeps
// the relay closed), relay_domains without relay_recipient_maps, and a
// luser_relay catching mail to unknown users. The operator runs the printed
// fixes (the relay-recipient list made first) and reorders the list; the
// next audit reports none of them.
func TestPostfixLintRelayDomains(t *testing.T) {
	t.Parallel()
	hosttest.NeedPostfix(t)
	h := newHost(t, "", "")
	etc := filepath.Join(h.dir, "pf2")
	os.MkdirAll(etc, 0o755)
	os.WriteFile(filepath.Join(etc, "main.cf"), []byte(`compatibility_level = 3.6
myhostname = mx2.example.test
mydestination = $myhostname
smtpd_relay_restrictions = permit_sasl_authenticated, permit
smtpd_recipient_restrictions = permit_mynetworks, reject_unauth_destination
relay_domains = relay.example.test
luser_relay = catchall
`), 0o644)
	os.WriteFile(filepath.Join(etc, "master.cf"), []byte("smtp      inet  n       -       n       -       -       smtpd\n"), 0o644)

	rep, code, stderr := h.audit("--areas", "postfix", "--postfix-config", etc)
	if code != audit.ExitFindings {
		t.Fatalf("exit %d\n%s\n%s", code, stderr, dump(rep))
	}
	mustNotFind(t, rep, "postfix.open-relay-config") // smtpd_recipient_restrictions refuses
	pb := mustFind(t, rep, "postfix.permit-before-reject", audit.Medium, "permit_sasl_authenticated, permit")
	if !strings.Contains(pb.Title, "smtpd_relay_restrictions") || !strings.Contains(pb.Fix, "reject_unauth_destination before the permit") {
		t.Errorf("permit-before-reject: %+v", pb)
	}
	if fs := find(rep, "postfix.permit-before-reject"); len(fs) != 1 {
		t.Errorf("smtpd_recipient_restrictions reported too: %+v", fs)
	}
	rr := mustFind(t, rep, "postfix.backscatter-relay-recipients", audit.Medium, "relay.example.test")
	lr := mustFind(t, rep, "postfix.luser-relay", audit.Medium, "catchall")

	// The operator's fixes, as printed (the list of valid relay
	// recipients written first), and the reordered list.
	os.WriteFile(filepath.Join(etc, "relay_recipients"), []byte("info@relay.example.test OK\n"), 0o644)
	for _, fix := range []string{rr.Fix[strings.Index(rr.Fix, "postconf"):], lr.Fix,
		"postconf -c " + etc + " -e 'smtpd_relay_restrictions = permit_sasl_authenticated, reject_unauth_destination'"} {
		runFix(t, fix)
	}
	rep, _, _ = h.audit("--areas", "postfix", "--postfix-config", etc)
	for _, c := range []string{"postfix.permit-before-reject", "postfix.backscatter-relay-recipients", "postfix.luser-relay", "postfix.open-relay-config"} {
		mustNotFind(t, rep, c)
	}
}
