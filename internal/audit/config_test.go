package audit_test

import (
	"context"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/relayguard/relayguard/internal/audit"
	"github.com/relayguard/relayguard/internal/hosttest"
	"github.com/relayguard/relayguard/internal/maillog"
	"github.com/relayguard/relayguard/internal/store"
)

const badConfig = `# trusted networks (an operator's comment the fix must keep)
mynetworks = ["0.0.0.0/0", "127.0.0.0/8"]

[auth]
# old clients
mechanisms = ["PLAIN", "LOGIN",
  "CRAM-MD5"]
cram_md5 = true
broken_auth_clients = true

[policy]
recipient_restrictions = ["permit", "reject_unauth_destination"]

[[listener]]
name = "mx"
address = "0.0.0.0:25"
mode = "mx"

[[listener]]
name = "sub"
address = "0.0.0.0:587"
mode = "submission"
trusted_local = true
`

// TestRelayguardConfigAndAccounts lints relayguard's own configuration and
// accounts: a configuration that trusts the world, has CRAM-MD5 on, the
// Outlook AUTH= line, a bare permit in the policy's recipient
// restrictions and a network listener with plaintext AUTH before TLS;
// accounts created through the real CLI with CRAM-MD5 secrets, one
// suspended, one never seen logging in. --fix edits relayguard.toml in
// place (comments kept, the old file kept as .bak, the result a valid
// configuration) and the next audit no longer reports what it fixed; the
// bare permit, which it cannot fix, is still reported.
func TestRelayguardConfigAndAccounts(t *testing.T) {
	t.Parallel()
	h := newHost(t, "", "")
	if err := os.WriteFile(h.cfg, []byte("data_dir = \""+h.data+"\"\nhostname = \"mx.example.test\"\n"+badConfig), 0o644); err != nil {
		t.Fatal(err)
	}
	rg := hosttest.Relayguard(t)
	for _, u := range []string{"alice", "bob", "carol", "dave"} {
		cmd := hosttest.Command("", rg, "--config", h.cfg, "--create-data-dir", "user", "add", u, "--password-stdin")
		cmd.Stdin = strings.NewReader("a-long-password-" + u + "\n")
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("user add %s: %v\n%s", u, err, out)
		}
	}
	hosttest.Run(t, rg, "--config", h.cfg, "user", "suspend", "carol")
	// The accounts are 40 days old; bob logged in to relayguard, dave to
	// Postfix; alice never did.
	db, err := store.OpenSQLite(context.Background(), h.data)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := db.Exec(`UPDATE userdb_accounts SET created = ?`, time.Now().Add(-40*24*time.Hour).Unix()); err != nil {
		t.Fatal(err)
	}
	db.Close()
	logFile := filepath.Join(h.dir, "mail.log")
	f, err := os.Create(logFile)
	if err != nil {
		t.Fatal(err)
	}
	maillog.New(slog.New(slog.NewTextHandler(f, nil))).AuthOK(context.Background(),
		maillog.Conn{CID: "c1", Client: netip.MustParseAddr("198.51.100.7"), Listener: "sub"}, "PLAIN", "bob")
	f.WriteString(time.Now().Format(time.Stamp) + " mx postfix/submission/smtpd[4242]: 4Xz1Y2: client=unknown[198.51.100.8], sasl_method=PLAIN, sasl_username=dave\n")
	f.Close()

	rep, code, stderr := h.audit("--areas", "relayguard,accounts", "--log", logFile)
	if code != audit.ExitFindings {
		t.Fatalf("exit %d\n%s\n%s", code, stderr, dump(rep))
	}
	for _, c := range []struct {
		check string
		sev   audit.Severity
		want  string
	}{
		{"relayguard.mynetworks-world", audit.Critical, "0.0.0.0/0"},
		{"relayguard.cram-md5", audit.Medium, "CRAM-MD5"},
		{"relayguard.broken-auth-clients", audit.Low, "broken_auth_clients"},
		{"relayguard.permit-before-reject", audit.High, "permit"},
		{"relayguard.trusted-local-exposed", audit.High, `"sub"`},
		{"accounts.cram-md5-secret", audit.Medium, "alice, bob, carol, dave"},
		{"accounts.suspended", audit.Info, "carol"},
		{"accounts.never-used", audit.Low, "alice"},
	} {
		f := mustFind(t, rep, c.check, c.sev, c.want)
		if strings.HasPrefix(c.check, "relayguard.") && c.check != "relayguard.permit-before-reject" && f.AutoFix != "safe" {
			t.Errorf("%s: auto fix %q", c.check, f.AutoFix)
		}
	}
	if f := find(rep, "accounts.never-used")[0]; strings.Contains(strings.Join(f.Evidence, " "), "bob") || strings.Contains(strings.Join(f.Evidence, " "), "dave") {
		t.Errorf("bob and dave logged in: %v", f.Evidence)
	}

	rep, _, stderr = h.audit("--areas", "relayguard", "--fix")
	for _, x := range rep.Fixes {
		if !x.Applied {
			t.Errorf("fix not applied: %+v", x)
		}
	}
	b, _ := os.ReadFile(h.cfg)
	conf := string(b)
	for _, want := range []string{"# trusted networks (an operator's comment the fix must keep)", "# old clients",
		`mynetworks = ["127.0.0.0/8"]`, `mechanisms = ["PLAIN", "LOGIN"]`, "cram_md5 = false", "broken_auth_clients = false"} {
		if !strings.Contains(conf, want) {
			t.Errorf("fixed configuration lacks %q:\n%s", want, conf)
		}
	}
	if strings.Count(conf, "trusted_local = false") != 1 || strings.Contains(conf, "trusted_local = true") {
		t.Errorf("listener sub not fixed:\n%s", conf)
	}
	if old, err := os.ReadFile(h.cfg + ".bak"); err != nil || !strings.Contains(string(old), `"0.0.0.0/0"`) {
		t.Errorf("no backup of the old configuration: %v", err)
	}
	hosttest.Run(t, rg, "--config", h.cfg, "config", "check")
	rep, _, _ = h.audit("--areas", "relayguard")
	for _, c := range []string{"relayguard.mynetworks-world", "relayguard.cram-md5", "relayguard.broken-auth-clients", "relayguard.trusted-local-exposed"} {
		mustNotFind(t, rep, c)
	}
	mustFind(t, rep, "relayguard.permit-before-reject", audit.High, "permit")
}
