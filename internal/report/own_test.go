package report

import (
	"bytes"
	"fmt"
	"strings"
	"testing"
	"time"
	"unsafe"

	"github.com/relayguard/relayguard/internal/logline"
	"github.com/relayguard/relayguard/internal/maillog"
)

var ownCorpus = []string{
	"time=2026-12-03T00:00:01.276Z level=INFO msg=connection cid=3 client=142.116.222.229 listener=mx trusted=false\n",
	`time=2026-12-03T00:00:01.276Z level=INFO msg="connection closed" cid=3 client=142.116.222.229 listener=mx tls=false messages=1`,
	`time=2026-12-03T00:00:01.276Z level=INFO msg="message accepted" cid=3 client=142.116.222.229 listener=mx id=0dde0a915473f2d7 user="" from=news@s5223.de nrcpt=1 size=19315`,
	`msg=connection`, "msg=connection\r\n", `msg="connection"`, `msg="connection closed"`, `msg="connection\u0020closed"`,
	`msg=connection msg=banned prefix=192.0.2.1`, `msg=banned text="msg=connection"`, `text="a msg=connection" msg=banned`,
	`text="a msg=connection"`, `xmsg=connection`, `msg=connection2`, `msg="connection`, "msg=connection\tcid=1",
	`time=x msg=delivered id=1 rcpt=a@b`, `msg= connection`, `{"time":"2026-12-03T00:00:01Z","msg":"connection"}`,
}

// TestUncountedOwnCountsNothing: the reader's reading of relayguard's
// records, which skips the kinds addOwn counts nothing for
// (maillog.ParseToUnless with uncounted), gives the report AddLine gives
// (maillog.Parse of every record), in a log file of records and in syslog,
// with records of every counted kind around the skipped ones.
func TestUncountedOwnCountsNothing(t *testing.T) {
	counted := []string{
		`time=2026-12-03T00:00:02Z level=INFO msg="relay access denied" cid=1 client=27.218.104.1 listener=mx rule=reject_unauth_destination code="554 5.7.1" rcpt=victim19@yahoo.example text="Relay access denied"`,
		`time=2026-12-03T00:00:02Z level=INFO msg=rejected cid=1 client=27.218.104.2 listener=mx rule=dnsbl:zen.example code="554 5.7.1" rcpt=a@b text="blocked using zen.example"`,
		`time=2026-12-03T00:00:03Z level=WARN msg="auth failed" cid=4 client=198.51.100.7 listener=submission mechanism=PLAIN user=bob reason="invalid credentials"`,
		`time=2026-12-03T00:00:04Z level=INFO msg=delivered id=0dde0a915473f2d7 rcpt=alice@mx1.example.test attempt=1 reply="250 2.0.0 saved" relay=maildir`,
		`time=2026-12-03T00:00:05Z level=WARN msg=banned prefix=198.51.100.7/32 until=2026-12-03T01:00:05Z count=1 reason="auth failures"`,
	}
	var file, syslog bytes.Buffer
	for i, s := range append(append([]string{}, ownCorpus...), counted...) {
		s = strings.TrimRight(s, "\r\n")
		for _, msg := range []string{s, s + " msg=connection", "msg=connection " + s} {
			if maillog.IsRecord(msg) {
				fmt.Fprintln(&file, msg)
			}
			fmt.Fprintf(&syslog, "Dec  3 00:00:%02d mx1 relayguard[77]: %s\n", i%60, msg)
		}
	}
	p := &logline.Parser{Year: 2026, Loc: time.UTC}
	skipped := 0
	var r maillog.Record
	for _, log := range [][]byte{file.Bytes(), syslog.Bytes()} {
		read := goldenReport(t, NewAnalyzer(DefaultOptions()), log, true)
		a := NewAnalyzer(DefaultOptions())
		for l := range strings.Lines(string(log)) {
			a.AddLine(p, l)
			if _, msg, _ := strings.Cut(l, "]: "); maillog.ParseTo(&r, msg) && uncounted(r.Kind) {
				skipped++
			}
		}
		s := a.Summary()
		var added bytes.Buffer
		if err := s.WriteText(&added, nil); err != nil {
			t.Fatal(err)
		}
		added.WriteString("\n==== JSON ====\n")
		if err := s.WriteJSON(&added); err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(read, added.Bytes()) {
			t.Fatalf("ReadLines and AddLine differ:\n%s\n----\n%s", read, added.Bytes())
		}
		for _, want := range []string{"198.51.100.7", "zen.example", "27.218.104.1", "auth failures"} {
			if !bytes.Contains(read, []byte(want)) {
				t.Fatalf("the report does not show %q:\n%s", want, read)
			}
		}
	}
	if skipped < 20 {
		t.Fatalf("only %d records of the log are of an uncounted kind", skipped)
	}
}

// TestOwnReasonKept: the reasons ownReason keeps are the ones it makes,
// for refusals whose rule, code and text change or repeat in any order,
// read from a buffer that is overwritten after each (as a read chunk is
// reused).
func TestOwnReasonKept(t *testing.T) {
	texts := []string{"Relay access denied", "<a@b.example>: Relay access denied", "", "Service unavailable; client [192.0.2.1] blocked using zen.example"}
	rules := []string{"reject_unauth_destination", "dnsbl:zen.example", "", "dnsbl:bl.example"}
	kinds := []maillog.Kind{maillog.KindRelayDenied, maillog.KindRejected}
	for _, verbose := range []bool{false, true} {
		o := DefaultOptions()
		o.VerboseMsgDetail = verbose
		a := NewAnalyzer(o)
		buf := make([]byte, 0, 256)
		for i := range 500 {
			r := maillog.Record{Kind: kinds[i*7%len(kinds)^i/3%2]}
			buf = buf[:0]
			var at [3]int
			for f, v := range []string{rules[i*5/3%len(rules)], []string{"554 5.7.1", "454 4.7.1"}[i/5%2], texts[i*3/2%len(texts)]} {
				buf = append(buf, v...)
				at[f] = len(buf)
			}
			b := unsafe.String(unsafe.SliceData(buf), len(buf)) // (the fields point into buf)
			r.Rule, r.Code, r.Text = b[:at[0]], b[at[0]:at[1]], b[at[1]:at[2]]
			want := "relayguard: " + r.Rule
			if r.Kind == maillog.KindRelayDenied {
				want = relayReasonOf(&r, verbose)
			}
			if got := a.ownReason(&r); got != want {
				t.Fatalf("record %d (%+v): ownReason = %q, want %q", i, r, got, want)
			}
			clear(buf)
		}
	}
}
