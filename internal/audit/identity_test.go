package audit_test

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/relayguard/relayguard/internal/audit"
	"github.com/relayguard/relayguard/internal/dnsutil/dnstest"
	"github.com/relayguard/relayguard/internal/hosttest"
)

// rgtestZones are the test's DNS: the host mx.example.rgtest at
// 192.0.0.25 with forward-confirmed reverse DNS, SPF for it, MTA-STS but
// no DMARC; a block list bl.rgtest (test point 127.0.0.2 listed), a dead
// list (nothing listed, not even its test point) and one that lists
// everything. (Unbound serves the .test and documentation reverse zones
// itself, so the test uses names under rgtest and 192.0.0.25.)
func rgtestZones(listed bool) map[string][]string {
	rg := []string{
		"mx.example IN A 192.0.0.25",
		`example IN TXT "v=spf1 ip4:192.0.0.25 -all"`,
		`_mta-sts.example IN TXT "v=STSv1; id=20260101"`,
		"2.0.0.127.bl IN A 127.0.0.2",
		"*.all IN A 127.0.0.2",
	}
	if listed {
		rg = append(rg, "25.0.0.192.bl IN A 127.0.0.2")
	}
	return map[string][]string{
		"rgtest":               rg,
		"0.0.192.in-addr.arpa": {"25 IN PTR mx.example.rgtest."},
	}
}

// startDNS runs NSD with the zones behind a fresh unbound and returns the
// unbound's address.
func startDNS(t *testing.T, zones map[string][]string) string {
	t.Helper()
	nsd := dnstest.StartNSD(t, zones)
	var stubs []dnstest.Stub
	for z := range zones {
		stubs = append(stubs, dnstest.Stub{Zone: z, Addrs: []string{nsd.Addr}})
	}
	return dnstest.StartUnbound(t, stubs...).Addr
}

// TestBlocklistedOwnAddress: the host's own address is listed on a DNS
// list served by a real NSD behind a real unbound. The audit asks the
// configured lists after the health checker looked at them: the dead list
// and the one listing everything are skipped (and reported as broken
// lists in relayguard's configuration), the listing is reported, the
// reverse DNS, HELO and SPF checks pass against the same DNS, and the
// missing DMARC record is reported. Once the listing is gone from DNS,
// the next audit no longer reports it.
func TestBlocklistedOwnAddress(t *testing.T) {
	t.Parallel()
	dnstest.NeedReal(t)
	var upstream atomic.Value
	upstream.Store(startDNS(t, rgtestZones(true)))
	h := newHost(t, `hostname = "mx.example.rgtest"
local_domains = ["example.rgtest"]
own_addresses = ["192.0.0.25"]`, `[dnsbl]
resolvers = ["127.0.0.1:53"]
zones = ["bl.rgtest=127.0.0.2", "dead.rgtest", "all.rgtest"]
`)
	hosttest.Run(t, "ip", "-n", h.net.Server, "addr", "add", "192.0.0.25/32", "dev", "vs")
	dnsForwarder(t, h.net.Server, func() string { return upstream.Load().(string) })

	rep, code, stderr := h.audit("--areas", "identity,relayguard", "--catalog=false")
	if code != audit.ExitFindings {
		t.Fatalf("exit %d\n%s\n%s", code, stderr, dump(rep))
	}
	f := mustFind(t, rep, "identity.blocklisted", audit.High, "bl.rgtest")
	if f.Subject != "192.0.0.25" {
		t.Errorf("subject %q", f.Subject)
	}
	if n := len(find(rep, "identity.blocklisted")); n != 1 {
		t.Errorf("%d listings reported, want 1 (the dead and the list-everything lists are skipped):\n%s", n, dump(rep))
	}
	if !slices.ContainsFunc(rep.Notes, func(n string) bool {
		return strings.Contains(n, "skipped as unhealthy") && strings.Contains(n, "dead.rgtest") && strings.Contains(n, "all.rgtest")
	}) {
		t.Errorf("no note of the skipped lists: %q", rep.Notes)
	}
	mustFind(t, rep, "relayguard.dnsbl-dead", audit.Medium, "dead.rgtest")
	mustFind(t, rep, "relayguard.dnsbl-lists-everything", audit.High, "all.rgtest")
	mustFind(t, rep, "identity.no-dmarc", audit.Medium, "example.rgtest")
	for _, c := range []string{"identity.no-ptr", "identity.fcrdns", "identity.helo", "identity.helo-ptr", "identity.no-spf", "identity.spf-not-authorized", "identity.no-mta-sts"} {
		mustNotFind(t, rep, c)
	}
	if len(rep.Problems) != 0 {
		t.Errorf("problems: %+v", rep.Problems)
	}

	// The same broken lists in a Postfix configuration (a stopped
	// instance), checked live by the health checker.
	pf := filepath.Join(h.dir, "pf")
	os.MkdirAll(pf, 0o755)
	os.WriteFile(filepath.Join(pf, "main.cf"), []byte("compatibility_level = 3.6\nmyhostname = mx.example.rgtest\n"+
		"smtpd_recipient_restrictions = reject_unauth_destination, reject_rbl_client bl.rgtest=127.0.0.2, reject_rbl_client all.rgtest\n"+
		"postscreen_dnsbl_sites = dead.rgtest*2\n"), 0o644)
	os.WriteFile(filepath.Join(pf, "master.cf"), []byte("smtp      inet  n       -       n       -       -       smtpd\n"), 0o644)
	rep, _, stderr = h.audit("--areas", "postfix", "--postfix-config", pf)
	mustFind(t, rep, "postfix.dnsbl-lists-everything", audit.High, "all.rgtest")
	mustFind(t, rep, "postfix.dnsbl-dead", audit.Medium, "dead.rgtest")
	for _, f := range rep.Findings {
		if strings.HasPrefix(f.Check, "postfix.dnsbl") && strings.Contains(f.Subject+strings.Join(f.Evidence, " "), "bl.rgtest=") {
			t.Errorf("the healthy list reported: %+v\n%s", f, stderr)
		}
	}

	// Delisted: a fresh NSD and unbound without the listing.
	upstream.Store(startDNS(t, rgtestZones(false)))
	rep, _, _ = h.audit("--areas", "identity", "--catalog=false")
	mustNotFind(t, rep, "identity.blocklisted")
}

// TestCouldNotAudit: with the resolver down, the DNS checks cannot be
// done; the audit says which and exits 2 rather than calling the host
// clean, unless a finding reaches --fail-on. A bad option is exit 2 too.
func TestCouldNotAudit(t *testing.T) {
	t.Parallel()
	h := newHost(t, `hostname = "mx.example.rgtest"
local_domains = ["example.rgtest"]
own_addresses = ["192.0.0.25"]`, "[dnsbl]\nresolvers = [\"127.0.0.1:53\"]\n")
	rep, code, _ := h.audit("--areas", "identity", "--catalog=false")
	if code != audit.ExitIncomplete || len(rep.Problems) == 0 {
		t.Fatalf("exit %d, problems %+v\n%s", code, rep.Problems, dump(rep))
	}
	checks := map[string]bool{}
	for _, p := range rep.Problems {
		checks[p.Check] = true
		if !strings.Contains(p.Error, "127.0.0.1:53") {
			t.Errorf("problem without the resolver named: %+v", p)
		}
	}
	for _, c := range []string{"ptr", "helo", "dns"} {
		if !checks[c] {
			t.Errorf("no problem for check %s: %+v", c, rep.Problems)
		}
	}
	if _, code, _ = h.audit("--areas", "identity", "--catalog=false", "--fail-on", "low"); code != audit.ExitFindings {
		t.Errorf("--fail-on low with a low finding: exit %d", code)
	}
	if _, code, stderr := h.auditRaw("--fail-on", "bogus"); code != audit.ExitIncomplete || !strings.Contains(stderr, `severity "bogus"`) {
		t.Errorf("bad --fail-on: exit %d %q", code, stderr)
	}
}
