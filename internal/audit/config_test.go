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

	"github.com/relayguard/relayguard/internal/accounts"
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
// suspended by the operator, a Postfix user suspended by the compromise
// detection, one sending 50 times its baseline, one whose name is being
// guessed, one that never logged in (bob did, in relayguard's log; dave
// in the detection's record). --fix edits relayguard.toml in
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
	// The accounts are 40 days old.
	db, err := store.OpenSQLite(context.Background(), h.data)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := db.Exec(`UPDATE userdb_accounts SET created = ?`, time.Now().Add(-40*24*time.Hour).Unix()); err != nil {
		t.Fatal(err)
	}
	db.Close()
	// The compromise detection's state, through its own store: dave logged
	// in (to Postfix) and sent 10 messages in his busiest hour three days
	// ago and 500 this hour; 12 addresses failed to log in as alice; the
	// Postfix user frank was suspended for a login spread.
	st, err := store.Open(context.Background(), h.data, "", nil)
	if err != nil {
		t.Fatal(err)
	}
	as, err := accounts.NewStore(context.Background(), st, 30*24*time.Hour, nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx, now := context.Background(), time.Now()
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	_, err = as.AddLogin(ctx, "dave", netip.MustParsePrefix("198.51.100.0/24"), now, time.Hour)
	must(err)
	_, err = as.AddSent(ctx, "dave", now.Add(-72*time.Hour).Truncate(time.Hour), 10)
	must(err)
	_, err = as.AddSent(ctx, "dave", now.Truncate(time.Hour), 500)
	must(err)
	for i := range 12 {
		_, err = as.AddFailure(ctx, "alice", netip.AddrFrom4([4]byte{203, 0, 113, byte(i + 1)}), now, time.Hour)
		must(err)
	}
	_, err = as.Suspend(ctx, accounts.Suspension{User: "frank", Since: now, Signal: "login_spread", Evidence: "9 networks within 1h", By: "mx.example.test (watch)"})
	must(err)
	st.Close()
	logFile := filepath.Join(h.dir, "mail.log")
	f, err := os.Create(logFile)
	if err != nil {
		t.Fatal(err)
	}
	maillog.New(slog.New(slog.NewTextHandler(f, nil))).AuthOK(context.Background(),
		maillog.Conn{CID: "c1", Client: netip.MustParseAddr("198.51.100.7"), Listener: "sub"}, "PLAIN", "bob")
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
		{"accounts.suspended", audit.Info, "frank (login_spread"},
		{"accounts.never-used", audit.Low, "alice"},
		{"accounts.volume", audit.High, "500 messages"},
		{"accounts.guessed", audit.Medium, "12 addresses"},
	} {
		f := mustFind(t, rep, c.check, c.sev, c.want)
		if strings.HasPrefix(c.check, "relayguard.") && c.check != "relayguard.permit-before-reject" && f.AutoFix != "safe" {
			t.Errorf("%s: auto fix %q", c.check, f.AutoFix)
		}
	}
	if f := find(rep, "accounts.never-used")[0]; strings.Contains(strings.Join(f.Evidence, " "), "bob") || strings.Contains(strings.Join(f.Evidence, " "), "dave") {
		t.Errorf("bob and dave logged in: %v", f.Evidence)
	}
	if f := find(rep, "accounts.suspended")[0]; !strings.Contains(strings.Join(f.Evidence, " "), "carol") {
		t.Errorf("carol (relayguard user suspend) not listed: %v", f.Evidence)
	}
	if fs := find(rep, "accounts.volume"); len(fs) != 1 || fs[0].Subject != "dave" {
		t.Errorf("volume: %+v", fs)
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
