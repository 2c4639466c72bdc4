package policy

import (
	"context"
	"crypto"
	"encoding/json"
	"io"
	"log/slog"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-msgauth/authres"
	"github.com/emersion/go-msgauth/dkim"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/relayguard/relayguard/internal/config"
	"github.com/relayguard/relayguard/internal/deliver/delivertest"
	"github.com/relayguard/relayguard/internal/dnsutil"
	"github.com/relayguard/relayguard/internal/dnsutil/dnstest"
	"github.com/relayguard/relayguard/internal/msgauth"
	"github.com/relayguard/relayguard/internal/msgauth/authtest"
)

// dmarcWorld is the DNS of the DMARC corpus: three signing domains, their
// SPF and DMARC records, and a domain without DMARC.
type dmarcWorld struct {
	zones []authtest.Zone
	keys  map[string]crypto.Signer
}

func newDMARCWorld(t *testing.T) *dmarcWorld {
	t.Helper()
	w := &dmarcWorld{keys: map[string]crypto.Signer{}}
	// Domains under real public suffixes (the documentation names of RFC
	// 2606 and the like): both sides find the organizational domain in the
	// Public Suffix List, which has no entry for .test.
	extra := map[string][]string{
		"example.com":  {`@ IN TXT "v=spf1 ip4:192.0.2.10 -all"`, `_dmarc IN TXT "v=DMARC1; p=reject"`},
		"example.net":  {`@ IN TXT "v=spf1 ip4:198.51.100.7 -all"`},
		"example.org":  {`@ IN TXT "v=spf1 ip4:192.0.2.20 -all"`, `_dmarc IN TXT "v=DMARC1; p=quarantine; adkim=s; aspf=s"`},
		"example.info": {`_dmarc IN TXT "v=DMARC1; p=none; sp=reject"`},
		"example.edu":  {`@ IN TXT "v=spf1 -all"`},
	}
	algs := map[string]string{"example.com": msgauth.AlgRSA, "example.net": msgauth.AlgEd25519, "example.org": msgauth.AlgRSA, "example.info": msgauth.AlgRSA}
	for _, d := range []string{"example.com", "example.net", "example.org", "example.info", "example.edu"} {
		z := authtest.Zone{Name: d, Records: extra[d]}
		if alg, ok := algs[d]; ok {
			k, err := msgauth.GenerateKey(alg)
			if err != nil {
				t.Fatal(err)
			}
			rec, _ := msgauth.Record(k.Public())
			z.Records = append(z.Records, msgauth.ZoneLine("k1", d, rec))
			w.keys[d] = k
		}
		w.zones = append(w.zones, z)
	}
	return w
}

// sign signs msg as domain d whatever its From: says (a forger signs with
// a key of its own domain).
func (w *dmarcWorld) sign(t *testing.T, d, msg string) string {
	t.Helper()
	var out strings.Builder
	err := dkim.Sign(&out, strings.NewReader(msg), &dkim.SignOptions{Domain: d, Selector: "k1", Signer: w.keys[d],
		HeaderCanonicalization: dkim.CanonicalizationRelaxed, BodyCanonicalization: dkim.CanonicalizationRelaxed,
		HeaderKeys: []string{"From", "To", "Subject", "Date", "Message-ID"}})
	if err != nil {
		t.Fatalf("signing as %s: %v", d, err)
	}
	return out.String()
}

// signWithLength signs msg as domain d with a body length tag (l=) over
// the body as it is, with dkimpy (go-msgauth does not write l=), and then
// appends text to the body, as a forger re-using a signed message would.
func (w *dmarcWorld) signWithLength(t *testing.T, d, msg, appended string) string {
	t.Helper()
	dir := t.TempDir()
	key, file := filepath.Join(dir, "k.pem"), filepath.Join(dir, "m.eml")
	if err := msgauth.WriteKey(key, w.keys[d]); err != nil {
		t.Fatal(err)
	}
	os.WriteFile(file, []byte(msg), 0o600)
	out, err := exec.Command("/usr/bin/python3", "-c", `import dkim, sys
m = open(sys.argv[2], "rb").read()
sys.stdout.buffer.write(dkim.sign(m, b"k1", sys.argv[3].encode(), open(sys.argv[1], "rb").read(), length=True,
    include_headers=[b"from", b"to", b"subject", b"date", b"message-id"], canonicalize=(b"relaxed", b"relaxed")) + m)
`, key, file, d).Output()
	if err != nil || !strings.Contains(string(out), " l=") {
		t.Fatalf("dkimpy signing with l=: %v\n%s", err, out)
	}
	return string(out) + appended
}

type dmarcCase struct {
	Name     string `json:"name"`
	File     string `json:"file"`
	IP       string `json:"ip"`
	MailFrom string `json:"mail_from"`
	Helo     string `json:"helo"`
	msg      string
	// what RFC 7489 says, checked before comparing with authheaders
	spf, dkim, dmarc, policy string
	// ownWay: why authheaders is not asked (a forger's message we judge
	// more strictly than it does)
	ownWay string
}

func dmarcCorpus(t *testing.T, w *dmarcWorld) []dmarcCase {
	m := func(from, subject string) string {
		return "From: " + from + "\r\nTo: rcpt@mx.example.test\r\nSubject: " + subject + "\r\nDate: Sat, 05 Dec 2026 10:00:00 +0000\r\nMessage-ID: <" + strings.ReplaceAll(subject, " ", "-") + "@corpus.test>\r\n\r\nHello,\r\nthis is " + subject + ".\r\n"
	}
	signedBroken := w.sign(t, "example.com", m("a@example.com", "broken body hash"))
	signedBroken = strings.Replace(signedBroken, "this is broken", "this is changed", 1)
	return []dmarcCase{
		{Name: "signed", IP: "203.0.113.5", MailFrom: "bounce@example.net", Helo: "mta.example.net",
			msg: w.sign(t, "example.com", m("Alice <a@example.com>", "signed")), spf: "fail", dkim: "pass", dmarc: "pass", policy: "reject"},
		{Name: "unsigned-spf-aligned", IP: "192.0.2.10", MailFrom: "a@example.com", Helo: "mta.example.com",
			msg: m("a@example.com", "unsigned spf aligned"), spf: "pass", dkim: "none", dmarc: "pass", policy: "reject"},
		{Name: "unsigned", IP: "203.0.113.5", MailFrom: "a@example.com", Helo: "mta.example.edu",
			msg: m("a@example.com", "unsigned"), spf: "fail", dkim: "none", dmarc: "fail", policy: "reject"},
		{Name: "forged-from", IP: "198.51.100.7", MailFrom: "x@example.net", Helo: "mta.example.net",
			msg: w.sign(t, "example.net", m("CEO <ceo@example.com>", "forged from")), spf: "pass", dkim: "pass", dmarc: "fail", policy: "reject"},
		{Name: "broken-body-hash", IP: "203.0.113.5", MailFrom: "a@example.com", Helo: "mta.example.edu",
			msg: signedBroken, spf: "fail", dkim: "fail", dmarc: "fail", policy: "reject"},
		{Name: "subdomain-relaxed", IP: "203.0.113.5", MailFrom: "", Helo: "mta.example.edu",
			msg: w.sign(t, "example.info", m("news@news.example.info", "subdomain relaxed")), spf: "none", dkim: "pass", dmarc: "pass", policy: "reject"},
		{Name: "subdomain-unsigned", IP: "203.0.113.5", MailFrom: "news@news.example.info", Helo: "mta.example.edu",
			msg: m("news@news.example.info", "subdomain unsigned"), spf: "none", dkim: "none", dmarc: "fail", policy: "reject"},
		{Name: "strict-dkim", IP: "203.0.113.5", MailFrom: "x@example.org", Helo: "mta.example.edu",
			msg: w.sign(t, "example.org", m("a@news.example.org", "strict dkim")), spf: "fail", dkim: "pass", dmarc: "fail", policy: "quarantine"},
		{Name: "quarantine-spf-pass", IP: "192.0.2.20", MailFrom: "a@example.org", Helo: "mta.example.org",
			msg: m("a@example.org", "quarantine spf pass"), spf: "pass", dkim: "none", dmarc: "pass", policy: "quarantine"},
		{Name: "no-dmarc", IP: "203.0.113.5", MailFrom: "a@example.edu", Helo: "mta.example.edu",
			msg: m("a@example.edu", "no dmarc"), spf: "fail", dkim: "none", dmarc: "none", policy: ""},
		// A forger's tricks: an author of its own beside the forged one; a
		// From: that does not parse but reads as the forged domain; a
		// message signed with l= and a text appended after the signed
		// body (go-msgauth fails such signatures, dkimpy passes them).
		{Name: "two-authors", IP: "198.51.100.7", MailFrom: "x@example.net", Helo: "mta.example.net",
			msg: w.sign(t, "example.net", m("x@example.net, CEO <ceo@example.com>", "two authors")),
			spf: "pass", dkim: "pass", dmarc: "fail", policy: "reject", ownWay: "authheaders judges the first author only"},
		{Name: "unparseable-from", IP: "198.51.100.7", MailFrom: "x@example.net", Helo: "mta.example.net",
			msg: w.sign(t, "example.net", m("CEO <ceo@example.com>>", "unparseable from")),
			spf: "pass", dkim: "pass", dmarc: "fail", policy: "reject", ownWay: "authheaders finds no author domain"},
		{Name: "body-length-tag", IP: "203.0.113.5", MailFrom: "a@example.com", Helo: "mta.example.edu",
			msg: w.signWithLength(t, "example.com", m("a@example.com", "body length tag"), "PS: the bank account changed, pay to IBAN XX00 EVIL.\r\n"),
			spf: "fail", dkim: "fail", dmarc: "fail", policy: "reject", ownWay: "dkimpy honours l= (RFC 6376 §8.2 warns against it)"},
	}
}

// ours runs check_dmarc for one case and reads the verdicts back out of
// the Authentication-Results field it produced.
func ours(t *testing.T, e *Engine, c dmarcCase) (Verdict, map[string]string) {
	t.Helper()
	req := &Request{Stage: StageEndOfData, ClientAddress: netip.MustParseAddr(c.IP), Helo: c.Helo, Sender: c.MailFrom,
		Message: func() (io.ReadCloser, error) { return io.NopCloser(strings.NewReader(c.msg)), nil }}
	v := e.Check(context.Background(), req)
	got := map[string]string{}
	if v.Action == Reject || v.Action == Defer {
		return v, got
	}
	name, value, ok := strings.Cut(v.AuthResults, ":")
	if !ok || name != "Authentication-Results" || !strings.HasSuffix(value, "\r\n") {
		t.Fatalf("%s: no Authentication-Results field in %+v", c.Name, v)
	}
	id, results, err := authres.Parse(strings.ReplaceAll(strings.TrimSpace(value), "\r\n\t", " "))
	if err != nil || id != "mx.example.test" {
		t.Fatalf("%s: our field does not parse (%v, id %q):\n%s", c.Name, err, id, v.AuthResults)
	}
	for _, r := range results {
		switch r := r.(type) {
		case *authres.SPFResult:
			got["spf"] = string(r.Value)
		case *authres.DKIMResult:
			if got["dkim"] == "" {
				got["dkim"] = string(r.Value)
			}
		case *authres.DMARCResult:
			got["dmarc"] = string(r.Value)
		case *authres.GenericResult:
			if r.Method == "dkim" && got["dkim"] == "" {
				got["dkim"] = string(r.Value)
			}
		}
	}
	// authres keeps no policy.dmarc for a dmarc result: read it from the field.
	if m := policyRE.FindStringSubmatch(v.AuthResults); m != nil {
		got["policy"] = m[1]
	}
	return v, got
}

var policyRE = regexp.MustCompile(`policy\.dmarc=([a-z]+)`)

const authheadersScript = `
import json, sys
from authheaders import check_spf, check_dkim, check_dmarc
out = {}
for c in json.load(open(sys.argv[1])):
    msg = open(c["file"], "rb").read()
    s = check_spf(c["ip"], c["mail_from"], c["helo"])
    d = check_dkim(msg)
    m = check_dmarc(msg, s, d)
    out[c["name"]] = {"spf": s.result, "dkim": d.result, "dmarc": m.result, "policy": m.policy or ""}
print(json.dumps(out))
`

// check_dmarc's SPF, DKIM and DMARC verdicts on a corpus the test builds
// (signed, unsigned, forged From:, broken body hash, subdomains, strict
// alignment, no DMARC record) agree with authheaders/dkimpy/pyspf run on
// the same messages against the same zones served by NSD; and the
// dispositions follow [policy.dmarc]: p=reject is refused with 550 5.7.1,
// p=quarantine is accepted with X-Relayguard-Quarantine.
func TestDMARCAgreesWithAuthheaders(t *testing.T) {
	delivertest.Need(t, "python3")
	w := newDMARCWorld(t)
	nsd := dnstest.StartNSDFiles(t, authtest.Files(w.zones))
	cases := dmarcCorpus(t, w)

	dir := t.TempDir()
	for i := range cases {
		cases[i].File = filepath.Join(dir, cases[i].Name+".eml")
		if err := os.WriteFile(cases[i].File, []byte(cases[i].msg), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	var asked []dmarcCase
	for _, c := range cases {
		if c.ownWay == "" {
			asked = append(asked, c)
		}
	}
	list, _ := json.Marshal(asked)
	os.WriteFile(filepath.Join(dir, "cases.json"), list, 0o644)
	os.WriteFile(filepath.Join(dir, "ah.py"), []byte(authheadersScript), 0o644)
	out, err := authtest.RunWithDNS(t, w.zones, nil, "/usr/bin/python3", filepath.Join(dir, "ah.py"), filepath.Join(dir, "cases.json"))
	if err != nil {
		t.Fatalf("authheaders: %v\n%s", err, out)
	}
	var ref map[string]map[string]string
	if err := json.Unmarshal([]byte(out[strings.LastIndex(strings.TrimSpace(out), "\n")+1:]), &ref); err != nil {
		t.Fatalf("authheaders output: %v\n%s", err, out)
	}

	res, err := dnsutil.New([]string{nsd.Addr}, 2*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	eng := dmarcEngine(t, res, func(c *config.DMARCConfig) { c.Reject = config.DMARCNone; c.Quarantine = config.DMARCNone })
	for _, c := range cases {
		_, got := ours(t, eng, c)
		want := map[string]string{"spf": c.spf, "dkim": c.dkim, "dmarc": c.dmarc, "policy": c.policy}
		for k, v := range want {
			if got[k] != v {
				t.Errorf("%s: our %s=%q, RFC 7489 wants %q (field %v)", c.Name, k, got[k], v, got)
			}
			r := ref[c.Name][k]
			if c.ownWay != "" {
				continue
			}
			if k == "dkim" && c.dkim == "none" {
				continue // authheaders says fail for an unsigned message
			}
			if k == "policy" && c.dmarc == "none" {
				continue
			}
			if got[k] != r {
				t.Errorf("%s: our %s=%q, authheaders %q", c.Name, k, got[k], r)
			}
		}
	}

	// The same corpus with the default [policy.dmarc]: p=reject failures
	// refused, p=quarantine failures tagged, the rest accepted untagged.
	eng = dmarcEngine(t, res, nil)
	for _, c := range cases {
		v, _ := ours(t, eng, c)
		switch {
		case c.dmarc == "fail" && c.policy == "reject":
			expect(t, c.Name, v, Reject, 550, "check_dmarc", "rejected by the DMARC policy of ", "(p=reject)")
			if v.Enhanced != "5.7.1" || v.AuthResults != "" {
				t.Errorf("%s: %+v", c.Name, v)
			}
		case c.dmarc == "fail":
			if v.Action != Dunno || !strings.HasPrefix(v.Prepend, "X-Relayguard-Quarantine: dmarc=fail") || v.AuthResults == "" {
				t.Errorf("%s: quarantine: %+v", c.Name, v)
			}
		default:
			if v.Action != Dunno || v.Prepend != "" || v.AuthResults == "" {
				t.Errorf("%s: accepted: %+v", c.Name, v)
			}
		}
	}
}

func dmarcEngine(t *testing.T, res Resolver, edit func(c *config.DMARCConfig)) *Engine {
	t.Helper()
	cfg := config.Default()
	cfg.Hostname = "MX.example.test"
	cfg.Policy.EndOfDataRestrictions = []string{"permit_sasl_authenticated", "check_dmarc"}
	cfg.DNSBL.HealthInterval = 0
	if edit != nil {
		edit(&cfg.Policy.DMARC)
	}
	if err := cfg.Finish(t.TempDir()); err != nil {
		t.Fatal(err)
	}
	e, err := New(cfg.Site, cfg.Policy, cfg.DNSBL, Deps{Resolver: res, Registerer: prometheus.NewRegistry(), Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	return e
}

// DNS failures are never read as a verdict: a DMARC record or an aligned
// DKIM key that cannot be looked up makes a temperror (451 4.7.1 by
// default, accepted with dmarc=temperror when temperror = "dunno"), not a
// fail or a none; without the message (the Postfix policy service) the
// check has no opinion and sends no query; a message that cannot be read
// is a 451; check_dmarc outside end_of_data_restrictions is a config error.
func TestDMARCFailures(t *testing.T) {
	w := newDMARCWorld(t)
	dns := dnstest.Start(t)
	for _, z := range w.zones {
		for _, l := range strings.Split(z.Text(), "\n") {
			if l == "" || strings.HasPrefix(l, "$") || strings.Contains(l, " SOA ") {
				continue
			}
			f := strings.Fields(l)
			name := f[0]
			if name == "@" {
				name = z.Name + "."
			} else if !strings.HasSuffix(name, ".") {
				name += "." + z.Name + "."
			}
			dns.Add(t, name+" 300 "+strings.Join(f[1:], " "))
		}
	}
	res, err := dnsutil.New([]string{dns.Addr}, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	cases := dmarcCorpus(t, w)
	byName := map[string]dmarcCase{}
	for _, c := range cases {
		byName[c.Name] = c
	}
	eng := dmarcEngine(t, res, nil)
	soft := dmarcEngine(t, res, func(c *config.DMARCConfig) { c.TempError = "dunno" })

	// The DMARC record of example.com cannot be looked up.
	dns.ServFail("_dmarc.example.com", true)
	v, _ := ours(t, eng, byName["unsigned"])
	expect(t, "dmarc record servfail", v, Defer, 451, "check_dmarc", "DMARC temporary error for example.com")
	v, got := ours(t, soft, byName["unsigned"])
	if v.Action != Dunno || got["dmarc"] != "temperror" {
		t.Errorf("temperror = dunno: %+v %v", v, got)
	}
	dns.ServFail("_dmarc.example.com", false)

	// The key of a signature aligned with the From: domain cannot be
	// looked up and SPF fails: not a DMARC fail, a temperror.
	dns.ServFail("k1._domainkey.example.com", true)
	v, got = ours(t, soft, byName["signed"])
	if v.Action != Dunno || got["dkim"] != "temperror" || got["dmarc"] != "temperror" {
		t.Errorf("key servfail: %+v %v", v, got)
	}
	v, _ = ours(t, eng, byName["signed"])
	expect(t, "key servfail", v, Defer, 451, "check_dmarc")

	// No message: no opinion, no query.
	before := dns.Queries.Load()
	req := &Request{Stage: StageEndOfData, ClientAddress: netip.MustParseAddr("203.0.113.5"), Helo: "h.example.edu", Sender: "a@example.com"}
	if v := eng.Check(context.Background(), req); v.Action != Dunno || v.AuthResults != "" {
		t.Errorf("without a message: %+v", v)
	}
	if n := dns.Queries.Load() - before; n != 0 {
		t.Errorf("without a message: %d DNS queries", n)
	}
	// An unreadable message.
	req.Message = func() (io.ReadCloser, error) { return nil, os.ErrPermission }
	v = eng.Check(context.Background(), req)
	expect(t, "unreadable", v, Defer, 451, "check_dmarc")

	cfg := config.Default()
	cfg.Policy.RecipientRestrictions = []string{"check_dmarc"}
	if err := cfg.Finish(t.TempDir()); err == nil || !strings.Contains(err.Error(), "end_of_data_restrictions") {
		t.Errorf("check_dmarc at RCPT: %v", err)
	}
}
