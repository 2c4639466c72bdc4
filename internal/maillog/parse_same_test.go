package maillog

import (
	"bufio"
	"bytes"
	"context"
	"log/slog"
	"math/bits"
	"net/netip"
	"os"
	"reflect"
	"strings"
	"testing"
	"time"
)

// sameCorpus is what the fast parser is held to the reference with: every
// record the writers produce (text and JSON), records cut short at every
// byte, odd quoting, and the times and levels slog may write.
func sameCorpus(t testing.TB) []string {
	var out []string
	for _, json := range []bool{false, true} {
		var buf bytes.Buffer
		var h slog.Handler = slog.NewTextHandler(&buf, nil)
		if json {
			h = slog.NewJSONHandler(&buf, nil)
		}
		m := New(slog.New(h))
		for _, rt := range roundTrips {
			rt.write(context.Background(), m)
		}
		sc := bufio.NewScanner(&buf)
		for sc.Scan() {
			out = append(out, sc.Text())
		}
	}
	n := len(out)
	for _, l := range out[:n] {
		for i := range len(l) {
			out = append(out, l[:i]) // cut short anywhere
		}
	}
	out = append(out,
		`time=2026-12-03T00:00:00.093Z level=INFO msg="relay access denied" cid=1 client=27.218.104.1 listener=mx rule=reject_unauth_destination code="554 5.7.1" rcpt=victim19@yahoo.example text="Relay access denied"`,
		`time=2026-12-03T00:00:01.276Z level=INFO msg="message accepted" cid=3 client=142.116.222.229 listener=mx id=0dde0a915473f2d7 user="" from=news@s5223.de nrcpt=1 size=19315`,
		`time=2026-12-03T00:00:01.276+01:00 level=WARN+2 msg=delivered id=x rcpt=a@b attempt=1 reply="250 2.0.0 \"saved\"" relay=maildir`,
		`time=2026-02-29T00:00:00Z level=info msg=banned prefix=192.0.2.0/24 until=2026-03-01T00:00:00Z`,
		`time=2024-02-29T23:59:59.123456789Z level=ERROR msg=banned prefix=192.0.2.7`,
		`time=2024-02-29T23:59:59.1234567891Z msg=banned`,
		`time=2024-13-01T00:00:00Z msg=banned`, `time=2024-04-31T00:00:00Z msg=banned`,
		`time=2024-04-30T24:00:00Z msg=banned`, `time=2024-04-30T23:60:00Z msg=banned`,
		`time=2024-04-30T23:59:60Z msg=banned`, `time=2024-04-30T23:59:59.Z msg=banned`,
		`time=2024-04-30T23:59:59,5Z msg=banned`, `time=-024-04-30T23:59:59Z msg=banned`,
		`time=2024-04-30t23:59:59z msg=banned`, `time=0000-01-01T00:00:00Z msg=banned`,
		`msg=banned msg=nonsense`, `msg=nonsense msg=banned`, `msg="queue: delivery expired"`,
		`msg="ban expired" reason=manual`, `msg=delivered text="a\"b" rcpt="x\\"`, `msg=delivered rcpt="\`,
		`msg=delivered rcpt="a\qb"`, `bare words msg=delivered more words=`, `  msg=delivered  `,
		`msg=delivered rcpt=a"b"c`, "msg=delivered\r\n", `msg="message accepted" size=x nrcpt=-3 uid=7`,
		`level=DEBUG-4 msg=egress_blocked dst=[2001:db8::1]:25 uid=0`,
		// several msg keys (the last known one decides), around a kind
		// ParseToUnless skips
		`msg=connection client=192.0.2.1 msg=delivered rcpt=a@b`, `msg=delivered rcpt=a@b msg=connection`,
		`msg=connection rcpt=a msg=nonsense`, `msg="connection closed" msg="ban expired" reason=x`,
		`msg=connection msg="connection closed" user=x`, `reason=x msg="ban expired"`, `msg="ban expired" reason=x`,
		`text="a msg=connection" rcpt=x`, `msg=connection text="a msg=delivered"`, `msg="connection"`,
		`msg="connection\" closed"`, `msg=connection\r`, `msg=banned msg=connection msg=nonsense`,
		// several time and level keys (the last that parses sets the time)
		`time=bad time=2026-12-03T00:00:00Z time=x msg=banned`, `time=2026-12-03T00:00:00Z time=2026-12-04T00:00:00Z msg=banned`,
		`time=2026-12-03T00:00:00Z time=x msg=banned level=WARN level=junk`, `msg=banned time=20x6-12-03T00:00:00Z`,
		`msg=banned time=2x26-12-03T00:00:00Z`, `msg=banned time=x026-12-03T00:00:00Z`, `msg=banned time=202x-12-03T00:00:00Z`,
		// the time and level slog writes first, and near misses of that form
		`time=2026-12-03T00:00:00.093Z level=ERROR msg=banned`, `time=2026-12-03T00:00:00.093Z level=DEBUG msg=banned`,
		`time=2026-12-03T00:00:00.093Z level=ERRX msg=banned`, `time=2026-12-03T00:00:00.093Z level=DEBUGX msg=banned`,
		`time=2026-12-03T00:00:00.093Z level=INFO+2 msg=banned`, `time=2026-12-03T00:00:00.093Z level=INFOmsg=banned`,
		`time=2026-12-03T00:00:00.09 Z level=INFO msg=banned`, `time="2026-12-03T00:00:00.09Z" level=INFO msg=banned`,
		`time=2026-12-03T00:00:00.093Z  level=INFO msg=banned`, `time=2026-12-03T00:00:00.093Z level="INFO" msg=banned`,
		`time=2026-12-03T00:00:00.093Z level=WARN`, `time=2026-12-03T00:00:00.093Z level=WARN `, `time=x026-12-03T00:00:00.093Z level=INFO msg=banned`,
		`time=2026-12-03T00:00:00.093Z level=INFO time=2026-12-04T00:00:00.093Z level=WARN msg=banned`,
		// a kind's usual keys (walkText's predicted keys) and near misses: a longer or
		// shorter key, two spaces, escapes, a cut quote, a key again,
		// another msg after them, the last keys within 17 and 9 bytes
		`time=2026-12-03T00:00:04.633Z level=WARN msg="auth failed" cid=4 client=152.173.240.87 listener=submission mechanism=PLAIN user=bob reason="invalid credentials"`,
		`time=2026-12-03T00:00:04.633Z level=WARN msg="auth failed" cidx=4 client=152.173.240.87 listener=submission mechanism=PLAIN user=bob`,
		`time=2026-12-03T00:00:04.633Z level=WARN msg="auth failed" cid=4 client=152.173.240.87 listenerx=submission mechanism=PLAIN user=bob`,
		`time=2026-12-03T00:00:04.633Z level=WARN msg="auth failed" cid=4 client=152.173.240.87 listene=submission mechanism=PLAIN user=bob`,
		`time=2026-12-03T00:00:04.633Z level=WARN msg="auth failed" cid=4  client=152.173.240.87 listener=x mechanism=PLAIN user=bob`,
		`time=2026-12-03T00:00:04.633Z level=WARN msg="auth failed" cid=4 client=1.2.3.4 listener=x mechanism=PLAIN user="a\"b c" reason="x\\"`,
		`time=2026-12-03T00:00:04.633Z level=WARN msg="auth failed" cid=4 client=1.2.3.4 listener=x mechanism=PLAIN user="bob reason=x`,
		`time=2026-12-03T00:00:04.633Z level=WARN msg="auth failed" cid=4 cid=5 client=1.2.3.4 listener=x mechanism=PLAIN user=bob`,
		`time=2026-12-03T00:00:04.633Z level=WARN msg="auth failed" cid=4 client=1.2.3.4 msg=delivered id=x rcpt=a@b attempt=1 reply=ok relay=maildir`,
		`time=2026-12-03T00:00:04.633Z level=WARN msg="auth failed" cid=4 client=1.2.3.4 msg=connection listener=x`,
		`time=2026-12-03T00:00:04.633Z level=WARN msg="auth failed" cid=4 client=1.2.3.4 listener=x mechanism=PLAIN user=bob reason=`,
		`time=2026-12-03T00:00:04.633Z level=WARN msg="auth failed" cid= client= listener= mechanism= user= reason=`,
		`msg="auth failed" cid=4 client=1.2.3.4 listener=x mechanism=PLAIN user="bob"xreason=y`, `msg="auth failed"xcid=4 client=1.2.3.4`,
		`time=2026-12-03T00:00:04.633Z level=WARN msg="auth failed" cid client=1.2.3.4`, `msg=delivered id=x rcpt=a attempt=1 reply="250 ok" relay=m`,
		`msg=delivered id=x rcpt=a attempt=1 reply="250 ok" relay=`, `msg=delivered id=x rcpt=a attempt=1 reply="250 ok" relay`,
		`msg=delivered id=x rcpt=a attempt=x reply="250 ok" relay=maildir time=2026-12-03T00:00:04Z level=WARN`,
		`msg="message accepted" cid=3 client=2001:db8::1 listener=mx id=0d user="" from=a@b nrcpt=1 size=19315`,
		`msg="message accepted" cid=3 client=1.2.3.4 listener=mx id=0d user="" from=a@b nrcpt=1 size=19315 size=7`,
		`msg=banned prefix=14.184.159.82/32 until=2026-12-04T01:01:24Z count=1 reason="5 failures"`,
		`msg=deferred id=x rcpt=a attempt=2 reply="451 x" retry_in=5m0s`, `msg=bounced id=x rcpt=a attempt=2 reply="550 x" reason=y`,
		`msg="delivery status notification queued" id=x dsn_id=y rcpt=a nrcpt=1 size=3`, `msg=unbanned prefix=1.2.3.0/24 reason=manual`,
		`msg="queue: delivered" id=x rcpt=a attempt=1 reply=ok relay=m`, `msg="ban expired" prefix=1.2.3.0/24 reason=manual`,
		// client addresses netip reads, and what it refuses
		`msg=rejected client=0.0.0.0`, `msg=rejected client=255.255.255.255`, `msg=rejected client=01.2.3.4`,
		`msg=rejected client=1.2.3.256`, `msg=rejected client=1.2.3`, `msg=rejected client=1.2.3.4.5`,
		`msg=rejected client=1.2.3.4%eth0`, `msg=rejected client=::ffff:1.2.3.4`, `msg=rejected client=1..2.3`,
		`msg=rejected client=1.2.3.0004`, `msg=rejected client=2001:db8::1`, `msg=rejected client=1.2.3.4x`,
		`msg=rejected client=.1.2.3`, `msg=rejected client=1.2.3.`, `msg=rejected client=1000.2.3.4`,
	)
	return out
}

// TestParseSameAsReference: the parser gives exactly the reference's
// Record (parse_ref_test.go: the code before it was made faster) on the
// corpus and on relayguard's lines of a log named by REPORT_SAME_LOG (the
// messages after "relayguard[pid]: "), if set. ParseTo over a record left
// from another line gives the same.
func TestParseSameAsReference(t *testing.T) {
	lines := sameCorpus(t)
	if name := os.Getenv("REPORT_SAME_LOG"); name != "" {
		f, err := os.Open(name)
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			if _, msg, ok := strings.Cut(sc.Text(), "]: time="); ok {
				lines = append(lines, "time="+msg)
			}
		}
	}
	var dirty Record
	var p Parser // (one for all the lines: its time cache hit and missed)
	for _, l := range lines {
		checkSame(t, l, &dirty, &p)
	}
	t.Logf("%d lines", len(lines))
}

func checkSame(t *testing.T, l string, dirty *Record, p *Parser) {
	t.Helper()
	want, wantOK := refParse(l)
	got, ok := Parse(l)
	if ok != wantOK || !reflect.DeepEqual(got, want) {
		t.Fatalf("Parse(%q) = %+v, %v; the reference gives %+v, %v", l, got, ok, want, wantOK)
	}
	if ok := ParseTo(dirty, l); ok != wantOK || !reflect.DeepEqual(*dirty, want) {
		t.Fatalf("ParseTo(%q) over another record = %+v, %v; want %+v, %v", l, *dirty, ok, want, wantOK)
	}
	for _, skip := range skips {
		wantOK := wantOK && !skip(want.Kind)
		if ok := ParseToUnless(dirty, l, skip); ok != wantOK || ok && !reflect.DeepEqual(*dirty, want) {
			t.Fatalf("ParseToUnless(%q) over another record = %+v, %v; want %+v, %v", l, *dirty, ok, want, wantOK)
		}
		if ok := p.ParseToUnless(dirty, l, skip); ok != wantOK || ok && !reflect.DeepEqual(*dirty, want) {
			t.Fatalf("Parser.ParseToUnless(%q) over another record = %+v, %v; want %+v, %v", l, *dirty, ok, want, wantOK)
		}
	}
}

// skips are the kinds ParseToUnless is tried with: the report's, and
// others around them.
var skips = []func(Kind) bool{
	func(k Kind) bool { return k == KindConnected || k == KindDisconnected },
	func(k Kind) bool { return k == KindDelivered || k == KindUnbanned },
	func(k Kind) bool { return k != KindBanned },
	func(Kind) bool { return false },
}

// TestParseAddrSameAsNetip: the dotted quads read by hand are the ones
// netip.ParseAddr reads, with the same address.
func TestParseAddrSameAsNetip(t *testing.T) {
	for _, s := range []string{"0.0.0.0", "1.2.3.4", "255.255.255.255", "256.1.1.1", "01.1.1.1", "1.1.1.01",
		"1.1.1.0", "10.0.0.10", "1.1.1", "1.1.1.1.", "1.1.1.1.1", "1..1.1", "", ".", "1.1.1.1 ", "1.1.1.1%x",
		"::1", "::ffff:10.1.2.3", "1234.1.1.1", "1.1.1.1234", "00.1.1.1", "0.0.0.00", "9.99.199.249"} {
		checkAddr(t, s)
	}
}

func checkAddr(t *testing.T, s string) {
	want, err := netip.ParseAddr(s)
	got, ok := parseAddr(s)
	if ok != (err == nil) || ok && got != want.Unmap() {
		t.Fatalf("parseAddr(%q) = %v, %v; netip gives %v, %v", s, got, ok, want, err)
	}
}

func FuzzParseAddr(f *testing.F) {
	for _, s := range []string{"1.2.3.4", "255.255.255.255", "01.2.3.4", "::ffff:1.2.3.4", "1.2.3.4.5"} {
		f.Add(s)
	}
	f.Fuzz(checkAddr)
}

// FuzzMarks: the lowest of marks' marks is the first byte of a word that
// is a or b, as a loop finds it; and hasMsgKey is strings.Contains.
func FuzzMarks(f *testing.F) {
	f.Add("key=valu", byte('='), byte(' '), "a msg=b")
	f.Add("time=2026-12-03T00:00:00.093Z level=INFO ", byte(' '), byte(' '), "")
	f.Add("\x00\x01=\xff\x80 \x7f=", byte('='), byte('\\'), "mmsg msg= g=")
	f.Fuzz(func(t *testing.T, s string, a, b byte, key string) {
		if hasMsgKey(key) != strings.Contains(key, "msg=") {
			t.Fatalf("hasMsgKey(%q) = %v", key, hasMsgKey(key))
		}
		if len(s) < 8 {
			return
		}
		want := 8
		for i := range 8 {
			if s[i] == a || s[i] == b {
				want = i
				break
			}
		}
		m := marks(load8([]byte(s), 0), a, b)
		if got := bits.TrailingZeros64(m) >> 3; got != want {
			t.Fatalf("marks(%q, %q, %q): first %d, want %d", s[:8], a, b, got, want)
		}
	})
}
func FuzzParseSameAsReference(f *testing.F) {
	for _, l := range sameCorpus(f) {
		f.Add(l)
	}
	var dirty Record
	var p Parser
	f.Fuzz(func(t *testing.T, l string) { checkSame(t, l, &dirty, &p) })
}

// TestParseTimeSameAsTimeParse: every day of four years around a leap
// year and the days past each month's end, with 0 to 10 fraction digits
// and other zones, read as time.Parse(time.RFC3339Nano) reads them.
func TestParseTimeSameAsTimeParse(t *testing.T) {
	var c timeCache // (every time after the one before: hits and misses)
	check := func(s string) {
		want, err := time.Parse(time.RFC3339Nano, s)
		got, ok := parseTime(s)
		if ok != (err == nil) || got != want && !reflect.DeepEqual(got, want) {
			t.Fatalf("parseTime(%q) = %v, %v; time.Parse gives %v, %v", s, got, ok, want, err)
		}
		for range 2 {
			if got, ok := c.parseTime(s); ok != (err == nil) || !reflect.DeepEqual(got, want) {
				t.Fatalf("timeCache.parseTime(%q) = %v, %v; time.Parse gives %v, %v", s, got, ok, want, err)
			}
		}
	}
	// the cache's hits: one hour's times, the minute and second of every
	// form, after an hour's and another hour's
	for _, h := range []string{"2026-12-03T00", "2024-02-29T23"} {
		for _, ms := range []string{":00:00Z", ":59:59.999999999Z", ":60:00Z", ":00:60Z", ":5x:00Z", ":00:0xZ", ":00:00.Z", ":00:00.1234567891Z", ":00:00.12x4Z",
			":00:00+01:00", ":00:00", "-00:00Z", ":00:00.5z", ":00:00.000Z", ":30:07.093Z"} {
			check(h + ms)
		}
	}
	for y := 1999; y <= 2001; y++ {
		for m := 1; m <= 13; m++ {
			for d := 0; d <= 32; d++ {
				base := strings.Replace(strings.Replace(strings.Replace("YYYY-MM-DDT23:59:59", "YYYY", itoa(y, 4), 1), "MM", itoa(m, 2), 1), "DD", itoa(d, 2), 1)
				check(base + "Z")
				check(base + ".5Z")
				check(base + "+02:00")
			}
		}
	}
	for _, frac := range []string{"", ".", ".1", ".12", ".123", ".1234", ".12345", ".123456", ".1234567", ".12345678", ".123456789", ".1234567891", ".x"} {
		check("2026-12-03T00:00:01" + frac + "Z")
		check("2026-12-03T00:00:01" + frac + "-07:00")
	}
	for _, s := range []string{"2026-12-03T24:00:00Z", "2026-12-03T23:60:00Z", "2026-12-03T23:59:60Z", "2026-12-03 23:59:59Z", "2026-12-03T23:59:59", "", "Z", "+026-12-03T23:59:59Z", "2026-1a-03T23:59:59Z"} {
		check(s)
	}
}

// FuzzParseTimeCache: a timeCache reads a then b then a as time.Parse does.
func FuzzParseTimeCache(f *testing.F) {
	f.Add("2026-12-03T00:00:00.093Z", "2026-12-03T00:59:59Z")
	f.Add("2024-02-29T23:59:59.123456789Z", "2024-02-29T23:00:60Z")
	f.Fuzz(func(t *testing.T, a, b string) {
		var c timeCache
		for _, s := range []string{a, b, a, b} {
			want, err := time.Parse(time.RFC3339Nano, s)
			if got, ok := c.parseTime(s); ok != (err == nil) || !reflect.DeepEqual(got, want) {
				t.Fatalf("timeCache.parseTime(%q) = %v, %v; time.Parse gives %v, %v", s, got, ok, want, err)
			}
		}
	})
}

func FuzzParseTime(f *testing.F) {
	f.Add("2026-12-03T00:00:00.093Z")
	f.Add("2024-02-29T23:59:59.123456789Z")
	f.Fuzz(func(t *testing.T, s string) {
		want, err := time.Parse(time.RFC3339Nano, s)
		got, ok := parseTime(s)
		if ok != (err == nil) || !reflect.DeepEqual(got, want) {
			t.Fatalf("parseTime(%q) = %v, %v; time.Parse gives %v, %v", s, got, ok, want, err)
		}
	})
}

func itoa(n, width int) string {
	s := ""
	for ; width > 0; width-- {
		s = string(rune('0'+n%10)) + s
		n /= 10
	}
	return s
}
