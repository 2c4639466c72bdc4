package audit_test

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/relayguard/relayguard/internal/audit"
	"github.com/relayguard/relayguard/internal/dnsutil/dnstest"
	"github.com/relayguard/relayguard/internal/hosttest"
	"github.com/relayguard/relayguard/internal/msgauth"
)

// badZones are the DNS of a host whose identity is wrong everywhere
// (fixed false) or put right (fixed true). The host is 192.0.0.26 and
// 192.0.0.27, its HELO name mx.bad.rgtest, its domains bad.rgtest,
// two.rgtest and none.rgtest; dkimRecord is the record of its DKIM key.
func badZones(fixed bool, dkimRecord, otherRecord string) map[string][]string {
	if !fixed {
		return map[string][]string{
			"rgtest": {
				"mx.bad IN A 192.0.0.99",    // the HELO name is another host
				"other.bad IN A 192.0.0.98", // the PTR name of .27 points elsewhere
				`bad IN TXT "v=spf1 ip4:192.0.2.200 -all"`,
				`_dmarc.bad IN TXT "v=DMARC1; p=none"`,
				`sel._domainkey.bad IN TXT "` + otherRecord + `"`, // another key's record
				`two IN TXT "v=spf1 ip4:192.0.0.26 -all"`,
				`two IN TXT "v=spf1 ip4:192.0.0.27 -all"`,
			},
			// no PTR for .26
			"0.0.192.in-addr.arpa": {"27 IN PTR other.bad.rgtest."},
		}
	}
	return map[string][]string{
		"rgtest": {
			"mx.bad IN A 192.0.0.26",
			"mx.bad IN A 192.0.0.27",
			"other.bad IN A 192.0.0.27",
			`bad IN TXT "v=spf1 ip4:192.0.0.26 ip4:192.0.0.27 -all"`,
			`_dmarc.bad IN TXT "v=DMARC1; p=reject"`,
			`_mta-sts.bad IN TXT "v=STSv1; id=20261206"`,
			`sel._domainkey.bad IN TXT "` + dkimRecord + `"`,
			`two IN TXT "v=spf1 ip4:192.0.0.26 ip4:192.0.0.27 -all"`,
			`none IN TXT "v=spf1 ip4:192.0.0.26 ip4:192.0.0.27 -all"`,
		},
		"0.0.192.in-addr.arpa": {
			"26 IN PTR mx.bad.rgtest.",
			"27 IN PTR other.bad.rgtest.",
		},
	}
}

// TestIdentityFindings: a host whose identity is wrong in every way the
// identity checks know, against a real NSD behind a real unbound: one
// address without PTR, one whose PTR name does not lead back to it, a
// HELO name that is another host's, an SPF record that does not authorize
// the host, a domain with two SPF records and one with none, DMARC
// p=none, no MTA-STS, a DKIM key whose published record is another key's;
// relayguard's certificate expired and for another name, and the
// certificate a (stopped) Postfix instance names not valid yet. Each is
// reported with its severity and fix. With the DNS put right and the
// certificates renewed, the next audit reports none of them; what is
// left is the HELO name differing from the second address's PTR name
// (low), which the corrected DNS keeps on purpose.
func TestIdentityFindings(t *testing.T) {
	t.Parallel()
	dnstest.NeedReal(t)
	hosttest.NeedPostfix(t)
	h := newHost(t, "", "")
	key, err := msgauth.GenerateKey(msgauth.AlgEd25519)
	if err != nil {
		t.Fatal(err)
	}
	keyFile := filepath.Join(h.dir, "dkim", "sel.key")
	if err := msgauth.WriteKey(keyFile, key); err != nil {
		t.Fatal(err)
	}
	other, _ := msgauth.GenerateKey(msgauth.AlgEd25519)
	rec, _ := msgauth.Record(key.Public())
	otherRec, _ := msgauth.Record(other.Public())

	var upstream atomic.Value
	upstream.Store(startDNS(t, badZones(false, rec, otherRec)))
	dnsForwarder(t, h.net.Server, func() string { return upstream.Load().(string) })

	rgCert, rgKey := writeCert(t, h.dir, "wrong.example.rgtest", time.Now().Add(-48*time.Hour))
	pfCert, pfKey := writeCertValid(t, h.dir, "mx.bad.rgtest", time.Now().Add(72*time.Hour), time.Now().Add(90*24*time.Hour))
	pf := filepath.Join(h.dir, "pf")
	os.MkdirAll(pf, 0o755)
	os.WriteFile(filepath.Join(pf, "main.cf"), []byte(fmt.Sprintf("compatibility_level = 3.6\nmyhostname = mx.bad.rgtest\nmydestination = $myhostname, localhost\nsmtpd_tls_cert_file = %s\nsmtpd_tls_key_file = %s\n", pfCert, pfKey)), 0o644)
	os.WriteFile(filepath.Join(pf, "master.cf"), []byte("smtp      inet  n       -       n       -       -       smtpd\n"), 0o644)
	h.writeConfig(`hostname = "mx.bad.rgtest"
local_domains = ["bad.rgtest", "two.rgtest", "none.rgtest"]
own_addresses = ["192.0.0.26", "192.0.0.27"]`, fmt.Sprintf(`[dnsbl]
resolvers = ["127.0.0.1:53"]
[tls]
cert_file = %q
key_file = %q
[[dkim.key]]
domain = "bad.rgtest"
selector = "sel"
key_file = %q
`, rgCert, rgKey, keyFile))
	args := []string{"--areas", "identity", "--catalog=false", "--postfix-config", pf}

	rep, code, stderr := h.audit(args...)
	if code != audit.ExitFindings {
		t.Fatalf("exit %d\n%s\n%s", code, stderr, dump(rep))
	}
	if len(rep.Problems) != 0 {
		t.Errorf("problems: %+v", rep.Problems)
	}
	want := []struct {
		check   string
		sev     audit.Severity
		subject string // in the title, subject or evidence
		fix     string
	}{
		{"identity.no-ptr", audit.High, "192.0.0.26", "PTR to mx.bad.rgtest"},
		{"identity.fcrdns", audit.High, "other.bad.rgtest", "other.bad.rgtest IN A 192.0.0.27"},
		{"identity.helo", audit.Medium, "mx.bad.rgtest", "mx.bad.rgtest IN A 192.0.0.26"},
		{"identity.spf-not-authorized", audit.High, "192.0.0.26", "ip4:192.0.0.26"},
		{"identity.spf-not-authorized", audit.High, "192.0.0.27", "ip4:192.0.0.27"},
		{"identity.spf-multiple", audit.High, "two.rgtest", "merge"},
		{"identity.no-spf", audit.Medium, "none.rgtest", `none.rgtest TXT "v=spf1 ip4:192.0.0.26 ip4:192.0.0.27 -all"`},
		{"identity.dmarc-none", audit.Low, "bad.rgtest", "p=quarantine"},
		{"identity.no-dmarc", audit.Medium, "two.rgtest", "_dmarc.two.rgtest"},
		{"identity.no-mta-sts", audit.Low, "bad.rgtest", "_mta-sts.bad.rgtest"},
		{"identity.dkim", audit.High, "differs from " + keyFile, "publish the record of " + keyFile},
		{"identity.no-dkim", audit.Low, "none.rgtest", "relayguard dkim keygen none.rgtest"},
		{"identity.cert-expired", audit.Critical, "relayguard [tls] cert_file " + rgCert, "renew"},
		{"identity.cert-name", audit.Low, "wrong.example.rgtest", "mx.bad.rgtest"},
		{"identity.cert-not-yet-valid", audit.High, "Postfix " + pf + " smtpd_tls_cert_file " + pfCert, "renew"},
		{"identity.cert-self-signed", audit.Low, "wrong.example.rgtest", "public CA"},
	}
	for _, w := range want {
		f := mustFind(t, rep, w.check, w.sev, w.subject)
		if !strings.Contains(f.Fix, w.fix) {
			t.Errorf("%s %s: fix %q lacks %q", w.check, w.subject, f.Fix, w.fix)
		}
	}
	for _, f := range find(rep, "identity.cert-name") {
		if strings.Contains(f.Subject, "mx.bad.rgtest") {
			t.Errorf("the certificate for the HELO name reported as misnamed: %+v", f)
		}
	}
	mustNotFind(t, rep, "identity.helo-ptr") // the HELO name is not this host's: nothing to compare

	// Put right: the DNS published as the fixes say, the certificates
	// renewed in place.
	upstream.Store(startDNS(t, badZones(true, rec, otherRec)))
	for _, c := range [][2]string{{rgCert, rgKey}, {pfCert, pfKey}} {
		nc, nk := writeCert(t, h.dir, "mx.bad.rgtest", time.Now().Add(90*24*time.Hour))
		if err := os.Rename(nc, c[0]); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(nk, c[1]); err != nil {
			t.Fatal(err)
		}
	}
	rep, _, stderr = h.audit(args...)
	if len(rep.Problems) != 0 {
		t.Errorf("problems after the fixes: %+v\n%s", rep.Problems, stderr)
	}
	for _, c := range []string{"identity.no-ptr", "identity.fcrdns", "identity.helo", "identity.spf-not-authorized", "identity.spf-multiple",
		"identity.no-spf", "identity.dmarc-none", "identity.dkim", "identity.cert-expired", "identity.cert-name", "identity.cert-not-yet-valid"} {
		mustNotFind(t, rep, c)
	}
	for _, f := range find(rep, "identity.no-mta-sts") {
		if f.Subject == "bad.rgtest" {
			t.Errorf("MTA-STS published but reported: %+v", f)
		}
	}
	f := mustFind(t, rep, "identity.helo-ptr", audit.Low, "192.0.0.27 → other.bad.rgtest")
	if f.Subject != "mx.bad.rgtest" {
		t.Errorf("helo-ptr: %+v", f)
	}
}
