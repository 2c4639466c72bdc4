package report

import (
	"os"
	"regexp"
	"strings"
	"testing"
	"time"
)

func reSub(re *regexp.Regexp, s string) string { return re.ReplaceAllString(s, "$1") }

func reGroup(re *regexp.Regexp, s string) (string, bool) {
	m := re.FindStringSubmatch(s)
	if m == nil {
		return "", false
	}
	return m[1], true
}

// checkFast compares every hand-written matcher with the regular
// expression it replaces, on one input.
func checkFast(t *testing.T, s string) {
	t.Helper()
	if m := reRejHead.FindStringSubmatch("postfix/smtpd[1]: " + s); m != nil {
		typ, from, rmdr, ok := rejHead(s)
		if !ok || typ != m[1] || from != m[2] || rmdr != m[3] {
			t.Errorf("rejHead(%q) = %q %q %q %v, regexp %q", s, typ, from, rmdr, ok, m[1:])
		}
	} else if _, _, _, ok := rejHead(s); ok {
		t.Errorf("rejHead(%q) matched, regexp did not", s)
	}
	pairs := []struct {
		name string
		fast func(string) string
		re   func(string) string
	}{
		{"rejAngle", rejAngle, func(s string) string { return reRejAngle.ReplaceAllString(s, "$1$2") }},
		{"rejProto", rejProto, func(s string) string { return reSub(reRejProto, s) }},
		{"rejReason", rejReason, func(s string) string { return reSub(reRejReason, s) }},
		{"rejAddr", rejAddr, func(s string) string { return reSub(reRejAddr, s) }},
		{"rejMail", rejMail, func(s string) string { return reSub(reRejMail, s) }},
		{"rejOther", rejOther, func(s string) string { return reSub(reRejOther, s) }},
		{"gimmeDomain", gimmeDomain, gimmeDomainRE},
		{"cleanTail", cleanTail, func(s string) string { return reCleanTail.ReplaceAllString(s, "") }},
		{"rejBlock", rejBlock, func(s string) string {
			if loc := reRejBlock.FindStringIndex(s); loc != nil {
				return s[:loc[0]] + "blocked" + s[loc[1]:]
			}
			return s
		}},
	}
	for _, p := range pairs {
		if f, r := p.fast(s), p.re(s); f != r {
			t.Errorf("%s(%q) = %q, regexp gives %q", p.name, s, f, r)
		}
	}
	groups := []struct {
		name string
		fast func(string) (string, bool)
		re   *regexp.Regexp
	}{
		{"to", func(s string) (string, bool) { to, ok, _, _ := toAndFrom(s); return to, ok }, reRejTo1},
		{"from", func(s string) (string, bool) { _, _, from, ok := toAndFrom(s); return from, ok }, reRejFrom},
		{"rejToUnknown", rejToUnknown, reRejTo2},
		{"rejToLoose", rejToLoose, reRejTo3},
	}
	for _, g := range groups {
		fv, fok := g.fast(s)
		rv, rok := reGroup(g.re, s)
		if fv != rv || fok != rok {
			t.Errorf("%s(%q) = %q %v, regexp %q %v", g.name, s, fv, fok, rv, rok)
		}
	}
	if f, ok := saidHead(s); ok != reSaidHead.MatchString(s) || f != reSaidHead.ReplaceAllString(s, "") {
		t.Errorf("saidHead(%q) = %q", s, f)
	}
	if f, ok := colonHead(s); ok != reColonHead.MatchString(s) || f != reColonHead.ReplaceAllString(s, "") {
		t.Errorf("colonHead(%q) = %q", s, f)
	}
}

var fastSeeds = []string{
	// rejHead's candidates: several keywords, more than it keeps, keywords
	// glued to a word or at the start, and ones whose tail does not fit.
	"reject: RCPT from a: x", "xreject: RCPT from a: x reject: B from c: y hold: C from d:  discard: D from :e: z",
	"a reject: X from b: 1 reject: X from b: 2 reject: X from b: 3 reject: X from b: 4 reject: X from b: 5 reject: X from b: 6 reject: X from b: 7 reject: X from b: 8 reject: X from b: 9 hold: Y from c: 10",
	"a reject: X from b: 1 reject: X from b: 2 reject: X from b: 3 reject: X from b: 4 reject: X from b: 5 reject: X from b: 6 reject: X from b: 7 reject: X from b: 8 reject: X from b: 9 hold: Y frm c: 10",
	"reject_warning: RCPT from unknown[1.2.3.4]: 450 a: b; reject_warning:  from x: y", "hold:: A from b: c", "discard: A from b:c",
	// rejHead passes over "KEYWORD: TYPE from FROM: " after a candidate
	// that fits: FROM a keyword (a candidate there, that fits or not),
	// TYPE a keyword, a keyword in the reply or the HELO that fits or
	// not, an IPv6 client's colons, truncated lines.
	"reject: RCPT from reject: MAIL from b: c", "reject: RCPT from reject: c", "reject: RCPT from hold: X from y: z",
	"reject: reject: from from b: c", "reject: reject: X from b: c", "hold: A from hold: B from hold: C from d: e",
	"hold: A from discard: B from reject_warning: C from d: e f", "discard: A from discard: ",
	"NOQUEUE: reject: RCPT from unknown[2001:db8::1]: 554 5.7.1 <a@b>: Relay access denied; from=<x> to=<y> proto=ESMTP helo=<reject: X from y: z>",
	"NOQUEUE: reject: RCPT from unknown[2001:db8::1]: 554 5.7.1 <a@b>: Relay access denied; from=<x> to=<y> proto=ESMTP helo=<reject: X from y:z>",
	"NOQUEUE: reject: RCPT from a[1.2.3.4]: 550 mail from x: denied; hold: it from there: now",
	"NOQUEUE: reject: RCPT from a[1.2.3.4]: 550 mail from x: denied; hold: it from there:now",
	"NOQUEUE: reject: RCPT from unknown[2001:db8::", "NOQUEUE: reject: RCPT from", "NOQUEUE: reject:", "NOQUEUE: reject: ", "reject: RCPT from a:",
	"reject: RCPT from a: ", "xhold: A from b: c reject: B from c: d", "x reject_warning: A from b: c", "reject_warning: A from b: c hold: x",
	"4B00001: discard: END-OF-MESSAGE from a[1.2.3.4]: 5.7.1 discard: x from y: z", "reject: A from b: c\treject: D from e: f",
	"reject: A from b\t: c reject: D from e:\tf", "hold: A from b: c; hold:  from e: f", ":: reject: A from b: c", "d: hold: A from :: c",
	"mail.Example.co.uk[192.0.2.1]", "a.b.com[1.2.3.4]:25", "x.y.ab.cd[10.0.0.1]",
	"NOQUEUE: reject: RCPT from unknown[203.0.113.5]: 554 5.7.1 <spam@target.example>: Relay access denied; from=<s@spam.example> to=<spam@target.example> proto=ESMTP helo=<x>",
	"554 5.7.1 Service unavailable; Client host [198.51.100.99] blocked using zen.spamhaus.org; https://x; from=<a@b> to=<c@d>",
	"552 5.3.4 Message size exceeds fixed limit; proto=ESMTP helo=<x>",
	"450 4.1.8 <a@b>: Sender address rejected: Domain not found; from=<a@b> to=<c@d>",
	"550 5.1.1 <nobody@x>: Recipient address rejected: User unknown in local recipient table; from=<> to=<nobody@x>",
	"503 5.5.0 Protocol error; x",
	"554 <x>: y>: z; a",
	"450 <a>: b: c; d",
	"reject: X from y: z reject: MAIL from a[1.2.3.4]: 550 no",
	"to=<> to=<b> from=<> from=<c>",
	// toAndFrom's one pass: a prefix inside the other's value, a '<' with
	// no '>' after it, empty values, the prefixes glued to a word.
	"from=<a to=<b>", "to=<x from=<y", "to=<> from=<a> to=<b>", "from=<> to=<>", "xto=<a> xfrom=<b>", "from=<to=<a>>", "to=<a from=<>",
	// rejBlock's " blocked" found at its 'b'.
	"client a blockedblocked", "Client host x  blocked", "Sender address xblocked y blocked", "client blocked blocked",
	"550 <u@x>: User unknown in virtual alias table; to=<u",
	"host x said: 550 y said: 551 z",
	"a: : b ; c, d",
	"Sender address rejected: ",
	"Recipient address rejected: a:b",
	"x client a blocked y",
	"",
	":",
	"; ,",
	"reject: RCPT from :: x",
	"x hold: A from b: c",
	"x discard: A from b:c: d",
	"reject: CONNECT from unknown[198.51.100.93]: 554 5.7.1 <unknown[198.51.100.93]>: Client host rejected: Access denied; proto=SMTP",
	"hold: A from b: c",
	"Subject: viagra from unknown[198.51.100.94]; from=<a@b.example> to=<bob@local.test>",
	"a from x; from=<b> from y; from=<c>",
	"a from ; from=<b>",
	"a from x y; from=<b>",
}

func TestFastMatchersAgree(t *testing.T) {
	for _, s := range fastSeeds {
		checkFast(t, s)
	}
	// Every line of the fixture, and its messages, as further cases.
	b, err := os.ReadFile("testdata/fixture.log")
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range strings.Split(string(b), "\n") {
		checkFast(t, l)
		if i := strings.Index(l, ": "); i >= 0 {
			checkFast(t, l[i+2:])
		}
	}
}

func FuzzFastMatchers(f *testing.F) {
	for _, s := range fastSeeds {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		if strings.ContainsAny(s, "\n\v") || !isValidUTF8(s) {
			return // the regexps' "." stops at newlines; logs are split on them
		}
		checkFast(t, s)
	})
}

func isValidUTF8(s string) bool { return strings.ToValidUTF8(s, "\uFFFD") == s }

func TestPerlNum(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want float64
	}{{"0.12", 0.12}, {"3630", 3630}, {"1.5", 1.5}, {"0", 0}, {"", 0}, {"x", 0}, {"12x", 12},
		{"-1.5", -1.5}, {"1.2.3", 1.2}, {"0.1234567890123456789", 0.1234567890123456789}, {".5", 0.5}} {
		if got := perlNum(tc.in); got != tc.want {
			t.Errorf("perlNum(%q) = %v, want %v", tc.in, got, tc.want)
		}
	}
}

func TestClockCache(t *testing.T) {
	berlin, err := time.LoadLocation("Europe/Berlin")
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatal("no tzdata (CI installs Debian package tzdata):", err)
		}
		t.Skip("no tzdata:", err)
	}
	var c clockCache
	start := time.Date(2026, 10, 24, 20, 0, 0, 0, time.UTC) // spans the 25 October change
	for i := 0; i < 3*24*3600; i += 97 {
		for _, loc := range []*time.Location{berlin, time.UTC, time.FixedZone("", 19800)} {
			tm := start.Add(time.Duration(i) * time.Second).In(loc)
			hr, day := c.clock(tm)
			whr, wday := clock(tm)
			if hr != whr || day != wday {
				t.Fatalf("clock(%v) = %d %d, want %d %d", tm, hr, day, whr, wday)
			}
		}
	}
}

// gimmeDomain's shortcut for "unknown[ADDR]" must give what pflogsumm's
// expressions give.
func TestGimmeDomainShortcut(t *testing.T) {
	for _, s := range []string{
		"unknown[192.0.2.1]", "unknown[2001:db8::1]", "unknown[1.2.3]", "unknown[]", "unknown[a]b]",
		"unknown[1.2.3.4]:25", "unknown[(x)]", "unknown[1/2]", "unknown[IPv6:2001:db8::5]",
		"mail.example.com[192.0.2.7]", "unknown", "unknown[", "Unknown[10.1.1.1]",
		"Mail.Example.COM[192.0.2.7]", "a.b.co.uk[1.2.3.4]", "x.co.uk[1.2.3.4]", "co.uk[1.2.3.4]", "a.bb.cc[1.1.1.1]",
		"a..com[1.1.1.1]", ".b.com[1.1.1.1]", "b.com[1.1.1.1]", "a.b.c.com.de[9.9.9.9]", "a.b.abcd.de[1.2.3.4]",
		"h.x.y[1.2.3.4]", "h.x.yy[1.2.3.4]", "h.x.yyyy[1.2.3.4]", "host[1.2.3.4]", "h.ex.com[1234.1.1.1]",
		"h.ex.com[1.2.3.4]:25", "h.ex.com[1.2.3]", "h.ex.com[1.2.3.4", "ä.ex.com[1.2.3.4]", "a.b.äö.de[1.2.3.4]",
		"[1.2.3.4]", "h.ex.com[2001:db8::1]", "h.ex.com[1.2.3.4][5.6.7.8]", "h.e[x.com[1.2.3.4]",
		"mail.s635.io[22ee:1360:92a8:ddfc:3da5:699:948a:5c43]", "Mail.Ex.CO.UK[2001:db8::2]", "h.ex.com[2001:db8::1]:25",
		"h.ex.com[2001:db8::1]x", "h.ex.com[]", "h.ex.com[2001]db8]", "h.ex(com[2001:db8::1]", "h.ex.com[a/b]",
		"h/ex.com[2001:db8::1]", "h.ex.com[fe80::1%eth0]", "h.ex.com[[::1]]", "h.e]x.com[::1]", "unknown[::1]]",
		"[2001:db8::1]", "unknown[2001:db8::1]:25", "h.ex.com[\n]", "h\n.ex.com[::1]", "ä.ex.com[::1]",
	} {
		if got, want := gimmeDomain(s), gimmeDomainRE(s); got != want {
			t.Errorf("gimmeDomain(%q) = %q, expressions give %q", s, got, want)
		}
	}
}

// normalizeHost joins the reversed labels as pflogsumm's split and join do.
func TestNormalizeHost(t *testing.T) {
	for in, want := range map[string]string{
		"192.0.2.1":           "\xc0\x00\x02\x01",
		"Mail.Example.COM":    "comexamplemail",
		"user@Example.org":    "orgexampleuser",
		"a..b.":               "ba",
		".leading":            "leading",
		"2001:db8::1":         "2001:db8::1",
		"host.example x y":    "examplehost",
		"ÄBC.example":         "exampleäbc",
		"":                    "",
		"256.1.1.1":           "\x00\x01\x01\x01",
		"1.2.3.4.5":           "54321",
		"unknown[192.0.2.1]:": "1]:20unknown[192", // not a dotted quad: labels
	} {
		if got := normalizeHost(in); got != want {
			t.Errorf("normalizeHost(%q) = %q, want %q", in, got, want)
		}
	}
}

// checkIndexEither holds indexEither to a byte loop, from every start.
func checkIndexEither(t *testing.T, s string, a, b byte) {
	t.Helper()
	for p := 0; p <= len(s)+1; p++ {
		want := p
		for want < len(s) && s[want] != a && s[want] != b {
			want++
		}
		if got := indexEither(s, p, a, b); got != want {
			t.Fatalf("indexEither(%q, %d, %q, %q) = %d, want %d", s, p, a, b, got, want)
		}
	}
}

// TestIndexEither: matches in every byte of a word, at word boundaries,
// in the tail, none; bytes just above and below the ones sought (the
// borrow of the zero-byte test).
func TestIndexEither(t *testing.T) {
	for _, s := range []string{"", ";", "abc", "abcdefgh", "abcdefg;", ";bcdefgh", "abcdefghijklmno:", "abcdefgh:ijk",
		"554 5.7.1 <a@b>: Relay access denied; from=<x>", "\x00\x01:;<=\xff\x80\x3a\x3b", ":::;;;;:::", "9;:<" + strings.Repeat("x", 40) + ",",
		strings.Repeat("\x3a\x3b\x39\x3c", 5), strings.Repeat("\x00", 17) + ";"} {
		checkIndexEither(t, s, ':', ';')
		checkIndexEither(t, s, ';', ',')
		checkIndexEither(t, s, ',', ',')
		checkIndexEither(t, s, 0, 0xff)
	}
}

func FuzzIndexEither(f *testing.F) {
	f.Add("554 5.7.1 Service unavailable; Client host [192.0.2.1] blocked using zen", byte(';'), byte(','))
	f.Fuzz(func(t *testing.T, s string, a, b byte) { checkIndexEither(t, s, a, b) })
}

// refRejectCandidate is rejectCandidate as it was before wordEnd: a loop
// to the first word's end, then the keyword tests.
func refRejectCandidate(msg string) (bool, int) {
	i := 0
	for i < len(msg) && msg[i] != ':' && msg[i] != ' ' && msg[i] != '\t' {
		i++
	}
	switch msg[:i] {
	case "reject", "reject_warning", "hold", "discard":
		return true, i
	}
	r := msg[i:]
	return strings.HasPrefix(r, ": reject: ") || strings.HasPrefix(r, ": reject_warning: ") ||
		strings.HasPrefix(r, ": hold: ") || strings.HasPrefix(r, ": discard: "), i
}

func checkWordEnd(t *testing.T, s string) {
	t.Helper()
	want, end := refRejectCandidate(s)
	if got := wordEnd(s); got != end {
		t.Fatalf("wordEnd(%q) = %d, want %d", s, got, end)
	}
	if got := rejectCandidate(s); got != want {
		t.Fatalf("rejectCandidate(%q) = %v, want %v", s, got, want)
	}
}

// TestWordEndSame puts each end byte (':', ' ', '\t') and its neighbours
// at every offset of the first three words, before every keyword.
func TestWordEndSame(t *testing.T) {
	for n := 0; n < 26; n++ {
		for _, fill := range []byte{'A', 0x00, 0x80, 0xff, ':' + 1, ' ' - 1, '\t' + 1, ';'} {
			w := strings.Repeat(string(fill), n)
			for _, tail := range []string{"", ":", " ", "\t", ": reject: x", ": reject_warning: x", ": hold: x", ": discard: x",
				": hold:", ": rejected: x", ":reject: x", " reject: x", ": discard: ", ": h", ": r"} {
				checkWordEnd(t, w+tail)
			}
		}
	}
	for _, s := range []string{"reject", "reject: x", "reject_warning\tx", "hold", "discard x", "NOQUEUE: reject: RCPT from x",
		"4B00001: reject: header x", "4B00001: client=x", "warning: x", "connect from x"} {
		checkWordEnd(t, s)
	}
}

func FuzzWordEnd(f *testing.F) {
	f.Add("NOQUEUE: reject: RCPT from unknown[192.0.2.1]: 554 x")
	f.Add("4B00001: hold: header x")
	f.Fuzz(checkWordEnd)
}

// refRejHeadRest is rejHeadRest as it was before colonOrLow: a byte loop
// to the first ": " or space.
func refRejHeadRest(r string) (typ, from, rmdr string, ok bool) {
	j := 0
	for j < len(r) && !isSpace(r[j]) {
		j++
	}
	if j == 0 || !strings.HasPrefix(r[j:], " from ") {
		return "", "", "", false
	}
	t := r[:j]
	r = r[j+len(" from "):]
	for j := 0; j < len(r) && !isSpace(r[j]); j++ {
		if j >= 1 && r[j] == ':' && j+1 < len(r) && r[j+1] == ' ' {
			return t, r[:j], r[j+2:], true
		}
	}
	return "", "", "", false
}

func checkRejHeadRest(t *testing.T, s string) {
	t.Helper()
	gt, gf, gr, gok := rejHeadRest(s)
	wt, wf, wr, wok := refRejHeadRest(s)
	if gt != wt || gf != wf || gr != wr || gok != wok {
		t.Fatalf("rejHeadRest(%q) = %q %q %q %v, want %q %q %q %v", s, gt, gf, gr, gok, wt, wf, wr, wok)
	}
}

// TestRejHeadRestSame puts a colon, a colon and a space, every byte below
// '!' and the bytes around them at every offset of a client's first three
// words.
func TestRejHeadRestSame(t *testing.T) {
	for n := 0; n < 26; n++ {
		for c := 0; c < 256; c++ {
			if c > '!' && c != ':' && c != ';' && c != 0x7f && c != 0x80 && c != 0xff {
				continue
			}
			name := []byte(strings.Repeat("u", n))
			for _, tail := range []string{"", " ", ": ", ":", "x: 554 y", ": : z", "]: 554 5.7.1 x"} {
				checkRejHeadRest(t, "RCPT from "+string(name)+string(rune(c))+tail)
				checkRejHeadRest(t, "RCPT from "+string(name)+string([]byte{byte(c)})+tail)
			}
		}
	}
	for _, s := range []string{"RCPT from unknown[192.0.2.1]: 554 5.7.1 <a@b>: Relay access denied; from=<x> to=<a@b>",
		"CONNECT from a: b", "RCPT from :x: y", "RCPT from x", "RCPT  from x: y", "from x: y", "RCPT from ", "RCPT from : "} {
		checkRejHeadRest(t, s)
	}
}

func FuzzRejHeadRest(f *testing.F) {
	f.Add("RCPT from unknown[192.0.2.1]: 554 5.7.1 <a@b>: Relay access denied")
	f.Add("DATA from h.example[2001:db8::1]:25: x")
	f.Fuzz(checkRejHeadRest)
}

// TestIndexBlocked holds indexBlocked to strings.Index.
func TestIndexBlocked(t *testing.T) {
	for _, s := range []string{"", " ", "blocked", " blocked", "xblocked", "xblocked blocked", "a  blocked", "blocked blocked",
		"Client host [192.0.2.1] blocked using zen.spamhaus.org", " blocke", "x blockedblocked", "blockedx blocked", "  blocked "} {
		if got, want := indexBlocked(s), strings.Index(s, " blocked"); got != want {
			t.Errorf("indexBlocked(%q) = %d, want %d", s, got, want)
		}
	}
}

// TestProcRejectSpecial holds procReject's pipelining, size-limit and
// server-configuration rules (reached only with a ';' kept in the reason:
// verbose, or a reason rejReason leaves whole) and the usual lines next
// to them, verbose and not (with --rej-add-from), to the keys the code
// before the ';' test gave.
func TestProcRejectSpecial(t *testing.T) {
	dom := func(s string) string { return "D(" + s + ")" }
	for _, tc := range []struct {
		line    string
		verbose bool
		want    rejectKey
	}{
		{"NOQUEUE: reject: RCPT from a[1.2.3.4]: 503 Improper use of SMTP command pipelining; from=<a@b> to=<c@d>", false, rejectKey{"RCPT", "Improper use of SMTP command pipelining", "a[1.2.3.4]"}},
		{"NOQUEUE: reject: RCPT from a[1.2.3.4]: 503 Improper use of SMTP command pipelining; from=<a@b> to=<c@d>", true, rejectKey{"RCPT", "Improper use of SMTP command pipelining", "a[1.2.3.4]"}},
		{"NOQUEUE: reject: RCPT from a[1.2.3.4]: 552 Message size exceeds fixed limit; proto=ESMTP", false, rejectKey{"RCPT", "Message size exceeds fixed limit", "D(a[1.2.3.4])"}},
		{"NOQUEUE: reject: RCPT from a[1.2.3.4]: 552 Message size exceeds fixed limit; proto=ESMTP", true, rejectKey{"RCPT", "Message size exceeds fixed limit", "D(a[1.2.3.4])  (<>)"}},
		{"NOQUEUE: reject: RCPT from a[1.2.3.4]: 451 Server configuration error; from=<a@b>", false, rejectKey{"RCPT", "(Local) Server configuration error", "D(a[1.2.3.4])"}},
		{"NOQUEUE: reject: RCPT from a[1.2.3.4]: 451 Server configuration error; from=<a@b>", true, rejectKey{"RCPT", "(Local) Server configuration error", "D(a[1.2.3.4])  (a@b)"}},
		{"NOQUEUE: reject: CONNECT from a[1.2.3.4]: 451 Server configuration problem; x", false, rejectKey{"CONNECT", "(Local) Server configuration problem", "D(a[1.2.3.4])"}},
		{"NOQUEUE: reject: CONNECT from a[1.2.3.4]: 451 Server configuration problem; x", true, rejectKey{"CONNECT", "(Local) Server configuration problem", "D(a[1.2.3.4])  (<>)"}},
		{"NOQUEUE: reject: DATA from a[1.2.3.4]: 552 Message size exceeds fixed limit, from=<a@b>", false, rejectKey{"DATA", "552 Message size exceeds fixed limit, from=<a@b>", "D(a[1.2.3.4])"}},
		{"NOQUEUE: reject: DATA from a[1.2.3.4]: 552 Message size exceeds fixed limit, from=<a@b>", true, rejectKey{"DATA", "552 Message size exceeds fixed limit, from=<a@b>", "D(a[1.2.3.4])  (a@b)"}},
		{"NOQUEUE: reject: RCPT from a[1.2.3.4]: 554 5.7.1 <x@y>: Relay access denied; from=<a@b> to=<x@y> proto=ESMTP helo=<h>", false, rejectKey{"RCPT", "Relay access denied", "D(a[1.2.3.4])"}},
		{"NOQUEUE: reject: RCPT from a[1.2.3.4]: 554 5.7.1 <x@y>: Relay access denied; from=<a@b> to=<x@y> proto=ESMTP helo=<h>", true, rejectKey{"RCPT", "554 5.7.1 <x@y>: Relay access denied; from=<a@b> to=<x@y> proto=ESMTP helo=<h>", "D(a[1.2.3.4])  (a@b)"}},
		{"NOQUEUE: reject: MAIL from a[1.2.3.4]: 552 5.3.4 Message size exceeds fixed limit; proto=ESMTP helo=<x>", false, rejectKey{"MAIL", "5.3.4 Message size exceeds fixed limit", "D(a[1.2.3.4])"}},
		{"NOQUEUE: reject: MAIL from a[1.2.3.4]: 552 5.3.4 Message size exceeds fixed limit; proto=ESMTP helo=<x>", true, rejectKey{"MAIL", "552 5.3.4 Message size exceeds fixed limit; proto=ESMTP helo=<x>", "D(a[1.2.3.4])  (<>)"}},
	} {
		if got := procReject(tc.line, tc.verbose, false, tc.verbose, dom); got != tc.want {
			t.Errorf("procReject(%q, verbose %v) = %q, want %q", tc.line, tc.verbose, got, tc.want)
		}
	}
}

// pflogsumm's expressions that the hand-written matchers (fastmatch.go,
// reject.go's rejHead, rejReason, toAndFrom, rejBlock, ...) replaced: the
// references the tests hold them to. They were compiled in reject.go at
// every command's start although only the tests use them.
var (
	reRejHead   = regexp.MustCompile(`^.* \b(?:reject(?:_warning)?|hold|discard): (\S+) from (\S+?): (.*)$`)
	reRejAngle  = regexp.MustCompile(`^(\d{3} <).*?(>:)`)
	reRejProto  = regexp.MustCompile(`^(?:\d{3} \d\.\d\.\d )(Protocol error);.*$`)
	reRejReason = regexp.MustCompile(`^(?:.*?[:;] )(?:\[[^\]]+\] )?([^;,]+)[;,].*$`)
	reRejAddr   = regexp.MustCompile(`^((?:Sender|Recipient) address rejected: [^:]+):.*$`)
	reRejBlock  = regexp.MustCompile(`(client|Client host|Sender address) .+? blocked`)
	reRejMail   = regexp.MustCompile(`^\d{3} (?:<.+>: )?([^;:]+)[;:]?.*$`)
	reRejOther  = regexp.MustCompile(`^(?:.*[:;] )?([^,]+).*$`)
	reRejTo1    = regexp.MustCompile(`to=<([^>]+)>`)
	reRejTo2    = regexp.MustCompile(`\d{3} <([^>]+)>: User unknown `)
	reRejTo3    = regexp.MustCompile(`to=<(.*?)(?:[, ]|$)`)
	reRejFrom   = regexp.MustCompile(`from=<([^>]+)>`)
	reCleanTail = regexp.MustCompile(`( from \S+?)?; from=<.*$`)
	reSaidHead  = regexp.MustCompile(`^.* said: `)
	reColonHead = regexp.MustCompile(`^.*?: *`)
)

// reCleanup is pflogsumm's expression for a cleanup check's verdict, the
// reference cleanupVerdict is held to.
var reCleanup = regexp.MustCompile(`.*?\b((?:milter-)?reject|warning|hold|discard): (header|body|END-OF-MESSAGE) (.*)$`)

func checkCleanupVerdict(t *testing.T, s string) {
	t.Helper()
	v, part, text, ok := cleanupVerdict(s)
	m := reCleanup.FindStringSubmatch(s)
	if ok != (m != nil) || m != nil && (v != m[1] || part != m[2] || text != m[3]) {
		t.Fatalf("cleanupVerdict(%q) = %q %q %q %v, regexp %q", s, v, part, text, ok, m)
	}
}

var cleanupSeeds = []string{
	"4B00040: discard: header Subject: Buy now 1 from mx.example.de[198.51.100.29]; from=<user8@foo.example.de> to=<erin@mx1.example.test> proto=ESMTP helo=<helo.example>: 5.7.1 spam",
	"4B00040: milter-reject: END-OF-MESSAGE from a[1.2.3.4]: 5.7.1 x; from=<a> to=<b>",
	"4B00040: warning: body x hold: header y", "4B00040: hold: body ", "4B00040: hold: body", "reject: header x",
	"xreject: header x", "x-reject: header x", "_hold: body y", "9discard: body y", "ühold: body y", "milter-reject: header a",
	"xmilter-reject: header a", "x milter-reject: header a", "milter_reject: header a", "reject: headers x", "reject:  header x",
	"reject: Header x", "warning: END-OF-MESSAGEx", "warning: END-OF-MESSAGE ", "a: warning: x: hold: header y: discard: body z",
	"a: warningg: header x: hold: header y", "hold: header a\nreject: body b", "hold: header a\nb", "reject: body \n",
	"\nreject: body x", "hold: header a\nxhold: body b\nc", ":", "", ": header ", "d: header x", "discard: body ok\thold: body no",
}

// TestCleanupVerdictAgree holds cleanupVerdict to reCleanup: seeds with
// several verdicts, keywords glued to words (the \b), parts not followed
// by a space, newlines, and every line of the fixture and its messages.
func TestCleanupVerdictAgree(t *testing.T) {
	for _, s := range cleanupSeeds {
		checkCleanupVerdict(t, s)
	}
	b, err := os.ReadFile("testdata/fixture.log")
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range strings.Split(string(b), "\n") {
		checkCleanupVerdict(t, l)
		if i := strings.Index(l, ": "); i >= 0 {
			checkCleanupVerdict(t, l[i+2:])
		}
	}
}

func FuzzCleanupVerdict(f *testing.F) {
	for _, s := range cleanupSeeds {
		f.Add(s)
	}
	f.Fuzz(checkCleanupVerdict)
}
