package config

import (
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

func loadString(t *testing.T, doc, dataDir string) (*Config, error) {
	t.Helper()
	p := filepath.Join(t.TempDir(), "c.toml")
	if err := os.WriteFile(p, []byte(doc), 0o644); err != nil {
		t.Fatal(err)
	}
	c, err := Load(p)
	if err == nil {
		err = c.Finish(dataDir)
	}
	return c, err
}

// Every configuration error is one line that names the key, the value and
// what is expected, never a Go field name or a code frame.
func TestErrorsNameKeyValueAndExpectation(t *testing.T) {
	for _, tc := range []struct {
		doc  string
		want []string
	}{
		{"[limits]\ncommand_timeout = 300\n", []string{"limits.command_timeout = 300", `"300s"`, "bare number"}},
		{"[delivery]\nretry_schedule = [\"1m\", 5]\n", []string{"delivery.retry_schedule[1] = 5", "duration"}},
		{"[[guard.subnet]]\nfamily = \"ipv4\"\nbits = 24\naddresses = 3\nwindow = 60\n", []string{"guard.subnet[0].window = 60", "duration"}},
		{"[limits]\ncommand_timeout = \"5 minutes\"\n", []string{`limits.command_timeout = "5 minutes"`, `"5m"`}},
		// Negative durations that meant 0 without a word (a sweep of
		// every duration key at -1s through config check).
		{"[policy]\nidle_timeout = \"-1s\"\n", []string{"policy.idle_timeout -1s", "must not be negative"}},
		{"[spool]\ngroup_commit = \"-1s\"\n", []string{"spool.group_commit -1s", "must not be negative"}},
		// nan passed every "at least"/"not negative" check.
		{"[guard]\nbantime_factor = nan\n", []string{"guard.bantime_factor = NaN", "want a finite number"}},
		{"[accounts]\nvolume_factor = nan\n", []string{"accounts.volume_factor = NaN", "want a finite number"}},
		{"[accounts]\nbad_recipient_share = -nan\n", []string{"accounts.bad_recipient_share = NaN"}},
		{"[guard]\nbantime_factor = inf\n", []string{"guard.bantime_factor = +Inf", "want a finite number"}},
		// Days past time.Duration's ±292 years wrapped around: 213504d
		// was 25 minutes, 300000d 236 years.
		{"[guard]\nbantime = \"213504d\"\n", []string{`guard.bantime = "213504d"`, `"7d"`}},
		{"[guard]\nbantime_max = \"300000d\"\n", []string{`guard.bantime_max = "300000d"`}},
		{"[limits]\nmax_recipients = \"abc\"\n", []string{`limits.max_recipients = "abc"`, "want an integer"}},
		{"sender_binding = \"yes\"\n", []string{`sender_binding = "yes"`, "true or false"}},
		{"local_domains = \"example.com\"\n", []string{`local_domains = "example.com"`, "want a list"}},
		{"# a comment\n[limits]\nmax_recipient = 5\n", []string{"limits.max_recipient: unknown key", "did you mean max_recipients?"}},
		{"[limits\n", []string{"line 1", "column"}},
		{"local_domains = [\"bad domain!\"]\n", []string{`local_domains[0] "bad domain!"`, "want a domain name"}},
		{"relay_domains = [\"ok.test\", \"..bad\"]\n", []string{`relay_domains[1] "..bad"`}},
		{"hostname = \"mail server\"\n", []string{`hostname "mail server"`, "want a domain name"}},
		{"[[listener]]\nname = \"mx\"\naddress = \"127.0.0.1:99999\"\nmode = \"mx\"\n", []string{`listener "mx": address "127.0.0.1:99999"`, "port from 1 to 65535"}},
		{"[[listener]]\nname = \"mx\"\naddress = \"127.0.0.1\"\nmode = \"mx\"\n", []string{`address "127.0.0.1"`, "host:port"}},
		{"[admin]\nlisten = \"localhost:http\"\n", []string{`admin.listen "localhost:http"`}},
		{"[limits]\nmax_connections = -1\n", []string{"limits.max_connections -1", "at least 1"}},
		{"[limits]\nmax_connections_per_ip = 0\n", []string{"limits.max_connections_per_ip 0"}},
		{"[limits]\ngreeting_delay = \"-1s\"\n", []string{"limits.greeting_delay", "negative"}},
		{"[auth]\ncram_md5 = true\n", []string{"auth.cram_md5 = true", "does not list CRAM-MD5"}},
		{"[auth]\nmechanisms = [\"CRAM-MD5\"]\n", []string{"auth.cram_md5 is false"}},
		{"[log]\nlevel = \"loud\"\n", []string{`log.level "loud"`}},
		{"[store]\nurl = \"http://user:s3cret@redis.test/0\"\n", []string{"store.url", "redis://"}},
		{"[store]\nurl = \"http://redis.test/0?password=s3cret\"\n", []string{`store.url "http://redis.test/0?password=xxxxx"`, "redis://"}},
		{"[delivery.tls_policies]\n\"bad domain\" = \"verify\"\n", []string{`delivery.tls_policies key "bad domain"`}},
		{"[delivery]\nhelo_name = \"not a name\"\n", []string{`delivery.helo_name "not a name"`}},
		// Every address to listen on or connect to, whichever command uses
		// it, has its port checked (found by review: these passed config
		// check and failed only when the listener was opened).
		{"[tls]\nacme = true\nacme_names = [\"mail.example.com\"]\nacme_listen = \"127.0.0.1:99999\"\n", []string{`tls.acme_listen "127.0.0.1:99999"`, "port from 1 to 65535"}},
		{"[accounts]\ndovecot_policy_listen = \"127.0.0.1:99999\"\n", []string{`accounts.dovecot_policy_listen "127.0.0.1:99999"`, "port from 1 to 65535"}},
		{"[milter]\nlisten = \"127.0.0.1:99999\"\n", []string{`milter.listen "127.0.0.1:99999"`, "port from 1 to 65535"}},
		{"[report]\nsmtp_server = \"127.0.0.1:99999\"\n", []string{`report.smtp_server "127.0.0.1:99999"`, "port from 1 to 65535"}},
		{"[egress]\nalert_mail_to = \"root@example.com\"\nalert_smtp = \"localhost\"\n", []string{`egress.alert_smtp "localhost"`, "want host:port"}},
		{"[accounts]\nwebhook_url = \"ftp://example.com/\"\n", []string{"accounts.webhook_url"}},
		// A webhook's path and query are its secret (Slack's
		// /services/T/B/TOKEN): named by scheme and host alone.
		{"[accounts]\nwebhook_url = \"ftp://hooks.test/services/T0/B0/s3cret?token=s3cret\"\n", []string{`accounts.webhook_url "ftp://hooks.test/…"`}},
		{"[accounts]\nwebhook_url = \"hooks.test/services/T0/B0/s3cret\"\n", []string{"accounts.webhook_url", "not shown"}},
	} {
		_, err := loadString(t, tc.doc, t.TempDir())
		if err == nil {
			t.Errorf("%q: accepted", tc.doc)
			continue
		}
		msg := err.Error()
		if strings.Contains(msg, "\n") || strings.Contains(msg, "Config.") || strings.Contains(msg, "LimitsConfig") {
			t.Errorf("%q: error is not one line naming keys:\n%s", tc.doc, msg)
		}
		if !strings.HasPrefix(msg, "config ") {
			t.Errorf("%q: error %q does not name the configuration file", tc.doc, msg)
		}
		if strings.Contains(msg, ": config: ") {
			t.Errorf("%q: error %q says config twice", tc.doc, msg)
		}
		for _, w := range tc.want {
			if !strings.Contains(msg, w) {
				t.Errorf("%q: error %q lacks %q", tc.doc, msg, w)
			}
		}
		if strings.Contains(msg, "s3cret") {
			t.Errorf("error shows the password: %s", msg)
		}
	}
}

// Durations are strings with a unit; a bare number is refused above, and a
// valid one reads as written (never nanoseconds).
func TestDurations(t *testing.T) {
	c, err := loadString(t, "[limits]\ncommand_timeout = \"300s\"\ndata_block_timeout = \"2d\"\n", t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	if c.Limits.CommandTimeout.D().Seconds() != 300 || c.Limits.DataBlockTimeout.D().Hours() != 48 {
		t.Fatalf("durations %v %v", c.Limits.CommandTimeout.D(), c.Limits.DataBlockTimeout.D())
	}
}

// Finish makes every domain canonical once: IDNA A-labels, lower case, no
// root dot, and the same form in every table.
func TestCanonicalSite(t *testing.T) {
	c, err := loadString(t, `hostname = "MX.例え.JP."
local_domains = ["例え.jp", "Example.ORG.", "example.org"]
relay_domains = [".Sub.例え.jp.", "relay.test"]
mynetworks = ["192.0.2.7", "2001:db8::/32"]
own_addresses = ["::ffff:198.51.100.1"]
[delivery.tls_policies]
"Bank.例え.jp." = "verify"
[delivery.transports]
"例え.jp" = "lmtp:unix:lmtp.sock"
".Corp.Test" = "smtp:hub.test:25"
"*" = "discard"
`, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	s := c.Site
	if c.Hostname != "mx.xn--r8jz45g.jp" || s.Hostname != c.Hostname {
		t.Errorf("hostname %q / %q", c.Hostname, s.Hostname)
	}
	if !slices.Equal(s.LocalDomains, []string{"xn--r8jz45g.jp", "example.org"}) {
		t.Errorf("local domains %q", s.LocalDomains)
	}
	if !s.IsLocal("xn--r8jz45g.jp") || !s.IsLocal("example.org") || s.IsLocal("example.org.") {
		t.Errorf("IsLocal disagrees with the canonical list")
	}
	if !s.IsRelay("a.sub.xn--r8jz45g.jp") || s.IsRelay("sub.xn--r8jz45g.jp") || !s.IsRelay("relay.test") {
		t.Errorf("relay domains %q", s.RelayDomains)
	}
	if !s.Trusted(netip.MustParseAddr("::ffff:192.0.2.7")) || s.Trusted(netip.MustParseAddr("192.0.2.8")) {
		t.Errorf("mynetworks %v", s.MyNetworks)
	}
	if !s.IsOwn(netip.MustParseAddr("198.51.100.1")) || len(s.OwnAddresses) != 1 {
		t.Errorf("own addresses %v", s.OwnAddresses)
	}
	if c.Delivery.TLSPolicies["bank.xn--r8jz45g.jp"] != "verify" {
		t.Errorf("tls_policies %v", c.Delivery.TLSPolicies)
	}
	tr := c.Delivery.Transports
	if tr["xn--r8jz45g.jp"] != "lmtp:unix:"+filepath.Join(c.DataDir, "lmtp.sock") || tr[".corp.test"] == "" || tr["*"] != "discard" {
		t.Errorf("transports %v", tr)
	}
	never := s.NeverBan()
	if len(never) != 3 || !never[2].Contains(netip.MustParseAddr("198.51.100.1")) {
		t.Errorf("never ban %v", never)
	}
}

// Without own_addresses, the server's addresses are its interfaces' and
// its listeners'.
func TestOwnAddressesDiscovered(t *testing.T) {
	c, err := loadString(t, "[[listener]]\nname = \"mx\"\naddress = \"127.0.0.9:25\"\nmode = \"mx\"\n", t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	if !c.Site.IsOwn(netip.MustParseAddr("127.0.0.1")) || !c.Site.IsOwn(netip.MustParseAddr("127.0.0.9")) {
		t.Errorf("own addresses %v", c.Site.OwnAddresses)
	}
}

// Relative paths resolve against data_dir, and what config print renders
// keeps them relative, so a saved configuration used with another
// --data-dir moves every path with it.
func TestPathsFollowDataDir(t *testing.T) {
	first := t.TempDir()
	c, err := loadString(t, "[delivery]\nsmarthost = \"smart.test:587\"\nsmarthost_user = \"me\"\nsmarthost_password_file = \"secret/pw\"\n[guard]\nfiles = [\"/var/log/mail.log\", \"serve.log\"]\n", first)
	if err != nil {
		t.Fatal(err)
	}
	if c.TLS.CertFile != filepath.Join(first, "tls", "cert.pem") || c.Spool.Dir != filepath.Join(first, "spool") ||
		c.Delivery.SmarthostPasswordFile != filepath.Join(first, "secret", "pw") ||
		!slices.Equal(c.Guard.Files, []string{"/var/log/mail.log", filepath.Join(first, "serve.log")}) ||
		c.Delivery.LocalTransport != "maildir:"+filepath.Join(first, "mail")+"/{domain}/{local}" {
		t.Fatalf("resolved against %s: cert %s spool %s pw %s files %v local %s", first, c.TLS.CertFile, c.Spool.Dir,
			c.Delivery.SmarthostPasswordFile, c.Guard.Files, c.Delivery.LocalTransport)
	}
	printed, err := c.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	for _, pinned := range []string{filepath.Join(first, "tls"), filepath.Join(first, "spool"), filepath.Join(first, "secret")} {
		if strings.Contains(string(printed), pinned) {
			t.Errorf("config print pins %s", pinned)
		}
	}
	for _, shown := range []string{"[delivery.transports]", "[delivery.tls_policies]", `local_transport = 'maildir:mail/{domain}/{local}'`} {
		if !strings.Contains(string(printed), shown) {
			t.Errorf("config print lacks %s", shown)
		}
	}
	second := t.TempDir()
	c2, err := loadString(t, string(printed), second)
	if err != nil {
		t.Fatal(err)
	}
	if c2.TLS.CertFile != filepath.Join(second, "tls", "cert.pem") || c2.Spool.Dir != filepath.Join(second, "spool") ||
		c2.Delivery.SmarthostPasswordFile != filepath.Join(second, "secret", "pw") {
		t.Fatalf("printed config with --data-dir %s: cert %s spool %s pw %s", second, c2.TLS.CertFile, c2.Spool.Dir, c2.Delivery.SmarthostPasswordFile)
	}
}

// A relative data_dir in a configuration file is relative to the file's
// directory, whatever the working directory (/ under systemd) is when the
// file is read; --data-dir and the embedded default are relative to the
// working directory (issue 14 leftover: it followed the working directory
// of each process that read the file).
func TestRelativeDataDirFollowsTheFile(t *testing.T) {
	confDir := t.TempDir()
	p := filepath.Join(confDir, "relayguard.toml")
	if err := os.WriteFile(p, []byte("data_dir = \"state\"\n[spool]\ndir = \"q\"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, cwd := range []string{t.TempDir(), "/"} {
		t.Chdir(cwd)
		c, err := Load(p)
		if err == nil {
			err = c.Finish("")
		}
		if err != nil {
			t.Fatal(err)
		}
		if want := filepath.Join(confDir, "state"); c.DataDir != want || c.Spool.Dir != filepath.Join(want, "q") {
			t.Errorf("in %s: data_dir %s, spool.dir %s; want %s and %s/q", cwd, c.DataDir, c.Spool.Dir, want, want)
		}
		flag, err := Load(p)
		if err == nil {
			err = flag.Finish("other")
		}
		if err != nil {
			t.Fatal(err)
		}
		if want := filepath.Join(cwd, "other"); flag.DataDir != want {
			t.Errorf("in %s: --data-dir other gave %s, want %s", cwd, flag.DataDir, want)
		}
		def := Default()
		if err := def.Finish(""); err != nil {
			t.Fatal(err)
		}
		if want := filepath.Join(cwd, "relayguard-data"); def.DataDir != want {
			t.Errorf("in %s: embedded default data_dir %s, want %s", cwd, def.DataDir, want)
		}
	}
}

func TestRequireDataDir(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "absent")
	c, err := loadString(t, "", dir)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.RequireDataDir(false); err == nil || !strings.Contains(err.Error(), dir) || !strings.Contains(err.Error(), "--create-data-dir") {
		t.Fatalf("missing data dir: %v", err)
	}
	if _, err := os.Stat(dir); !os.IsNotExist(err) {
		t.Fatalf("the check created %s", dir)
	}
	if err := c.RequireDataDir(true); err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Stat(dir); err != nil || !fi.IsDir() {
		t.Fatalf("not created: %v", err)
	}
}
