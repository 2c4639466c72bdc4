package report

import (
	"context"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/relayguard/relayguard/internal/event"
	"github.com/relayguard/relayguard/internal/logline"
	"github.com/relayguard/relayguard/internal/logwatch"
	"github.com/relayguard/relayguard/internal/report/loggen"
)

// guardView is what the guard's pipeline (watch --replay: logwatch's
// parsers, then logwatch.Once) makes of a log: failed authentication
// attempts per address, relay attempts per client, DNS list refusals per
// list.
func guardView(t *testing.T, path string) (auth, relay, dnsbl map[string]int64) {
	t.Helper()
	auth, relay, dnsbl = map[string]int64{}, map[string]int64{}, map[string]int64{}
	rec := &event.Recorder{}
	once := logwatch.NewOnce(rec)
	ctx := context.Background()
	if _, err := logwatch.ReplayFile(ctx, path, func(evs []event.Event) {
		for _, e := range evs {
			once.Publish(ctx, e)
		}
	}); err != nil {
		t.Fatal(err)
	}
	for _, e := range rec.Events {
		switch {
		case e.Kind == event.AuthFailure:
			auth[e.IP.String()] += int64(e.Count())
		case e.Kind == event.RelayDenied:
			relay[e.IP.String()]++
		case e.Kind == event.DNSBLReject && e.Rule == "reject_rbl_client":
			dnsbl[e.Detail]++
		}
	}
	return auth, relay, dnsbl
}

// TestAbuseAgreesWithGuard feeds one log through the guard's pipeline and
// through the report and compares who failed to authenticate how often,
// who tried to relay and which DNS lists refused: the report's abuse view
// reads the guard's events, so the two cannot disagree (issue 14). The log
// mixes generated traffic, lines of a real Postfix with Dovecot SASL and
// auth_verbose (each failed login logged twice), Dovecot's own log file,
// PAM, relayguard's own records and, when installed, fail2ban's sample logs
// for Postfix and Dovecot.
func TestAbuseAgreesWithGuard(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "mail.log")
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	if err := loggen.Write(f, loggen.Options{Lines: 20000, Start: now.AddDate(0, 0, -1).Truncate(time.Hour), Seed: 11, Abuse: true}); err != nil {
		t.Fatal(err)
	}
	stamp := func(d time.Duration) string { return now.Add(d).Format(time.Stamp) }
	for _, l := range []string{
		stamp(1*time.Second) + " auth: Info: passwd-file(alice@example.test,100.64.0.2): Password mismatch",
		stamp(3*time.Second) + " mx postfix/smtpd[26043]: warning: unknown[100.64.0.2]: SASL PLAIN authentication failed: (reason unavailable), sasl_username=alice@example.test",
		stamp(7*time.Second) + " auth: Info: passwd-file(bob@example.test,100.64.0.2): unknown user",
		stamp(17*time.Second) + " mx postfix/smtpd[26043]: warning: unknown[100.64.0.2]:4711: SASL PLAIN authentication failed: Connection lost to authentication server, sasl_username=bob@example.test",
		stamp(20*time.Second) + " auth: Info: passwd-file(alice@example.test,100.64.0.3,<mWy5>): Password mismatch",
		stamp(26*time.Second) + " auth: Info: passwd-file(alice@example.test,100.64.0.3,<mWy5>): Password mismatch",
		stamp(28*time.Second) + " imap-login: Info: Disconnected: Aborted login by logging out (auth failed, 2 attempts in 8 secs): user=<alice@example.test>, method=PLAIN, rip=100.64.0.3, lip=192.0.2.1, session=<mWy5>",
		stamp(30*time.Second) + " mx auth: pam_unix(dovecot:auth): authentication failure; logname= uid=0 euid=0 tty=dovecot ruser=carol rhost=100.64.0.4  user=carol",
		stamp(30*time.Second) + " mx dovecot: auth-worker(311): pam(carol,100.64.0.4,<Pq>): pam_authenticate() failed: Authentication failure (Password mismatch?)",
		stamp(32*time.Second) + " mx dovecot: pop3-login: Disconnected (auth failed, 1 attempts in 2 secs): user=<carol>, method=PLAIN, rip=100.64.0.4, lip=192.0.2.1, session=<Pq>",
		stamp(33*time.Second) + " mx dovecot: submission-login: Login: user=<carol>, method=PLAIN, rip=100.64.0.9, lip=192.0.2.1, mpid=4, session=<Z>",
		stamp(34*time.Second) + " mx postfix/submission/smtpd[77]: warning: unknown[2001:db8::77]: SASL LOGIN authentication failed: UGFzc3dvcmQ6",
		stamp(35*time.Second) + " mx postfix/smtpd[78]: NOQUEUE: reject: RCPT from unknown[IPv6:2001:db8::78]: 554 5.7.1 <x@victim.example>: Relay access denied; from=<a@b.example> to=<x@victim.example> proto=ESMTP helo=<x>",
		stamp(36*time.Second) + ` mx relayguard[9]: time=` + now.Add(36*time.Second).UTC().Format(time.RFC3339) + ` level=INFO msg="auth failed" client=198.51.100.60 mechanism=PLAIN user=mallory`,
	} {
		f.WriteString(l + "\n")
	}
	for _, s := range []string{"postfix", "dovecot"} {
		b, err := os.ReadFile("/usr/lib/python3/dist-packages/fail2ban/tests/files/logs/" + s)
		if err != nil {
			continue // fail2ban is not installed: the rest still runs
		}
		f.Write(b)
	}
	f.Close()

	auth, relay, dnsbl := guardView(t, path)
	o := DefaultOptions()
	o.AbuseLimit = -1 // every address, to compare with the guard's
	a := NewAnalyzer(o)
	if err := a.ReadFiles(context.Background(), []string{path}, func() *logline.Parser { return &logline.Parser{} }); err != nil {
		t.Fatal(err)
	}
	ab := a.Summary().Abuse
	rAuth, rRelay, rDNSBL := map[string]int64{}, map[string]int64{}, map[string]int64{}
	for _, r := range ab.AuthByAddress {
		rAuth[r.Key] = r.Failures
	}
	for _, r := range ab.RelayByClient {
		rRelay[r.Key] = r.Count
	}
	for _, r := range ab.DNSBL {
		rDNSBL[r.Key] = r.Count
	}
	compare := func(what string, guard, report map[string]int64) {
		t.Helper()
		if maps.Equal(guard, report) {
			t.Logf("%s: %d keys agree", what, len(guard))
			return
		}
		keys := slices.Sorted(maps.Keys(guard))
		for k := range report {
			if _, ok := guard[k]; !ok {
				keys = append(keys, k)
			}
		}
		var diff []string
		for _, k := range keys {
			if guard[k] != report[k] {
				diff = append(diff, k+": guard "+strconv.FormatInt(guard[k], 10)+", report "+strconv.FormatInt(report[k], 10))
			}
		}
		t.Errorf("%s: guard and report disagree:\n%s", what, strings.Join(diff, "\n"))
	}
	compare("auth failures by address", auth, rAuth)
	compare("relay attempts by client", relay, rRelay)
	compare("DNS list refusals by list", dnsbl, rDNSBL)
	// The shapes above are counted once per attempt.
	for ip, n := range map[string]int64{"100.64.0.2": 2, "100.64.0.3": 2, "100.64.0.4": 1, "2001:db8::77": 1, "198.51.100.60": 1} {
		if rAuth[ip] != n {
			t.Errorf("report: %s failed %d times, want %d", ip, rAuth[ip], n)
		}
	}
	if rRelay["2001:db8::78"] != 1 {
		t.Errorf("report: relay attempt of an IPv6 client not counted: %v", rRelay)
	}
}
