package report

import (
	"os"
	"strings"
	"testing"
)

// rejectBenchLines are the rejections of bench/report/genlog's attack,
// botnet and mixed shapes, one of each kind (~110,000 of their lines).
var rejectBenchLines = []string{
	"NOQUEUE: reject: RCPT from unknown[210.130.9.164]: 554 5.7.1 <victim296@victim.example>: Relay access denied; from=<admin@s6731.io> to=<victim296@victim.example> proto=ESMTP helo=<WIN-CD75C>",
	"NOQUEUE: reject: RCPT from unknown[196.107.132.16]: 550 5.1.1 <user16@mx1.example.test>: Recipient address rejected: User unknown in local recipient table; from=<postmaster@s34339.net> to=<user16@mx1.example.test> proto=ESMTP helo=<WIN-9E367>",
	"NOQUEUE: reject: RCPT from unknown[82.143.142.88]: 554 5.7.1 Service unavailable; Client host [82.143.142.88] blocked using b.barracudacentral.org; from=<sales@s43856.org> to=<erin@mx1.example.test> proto=ESMTP helo=<WIN-7B0B1>",
	"NOQUEUE: reject: RCPT from unknown[92.63.15.111]: 554 5.7.1 Service unavailable; Client host [92.63.15.111] blocked using bl.spamcop.net; from=<user@s66759.de> to=<dave@mx1.example.test> proto=ESMTP helo=<WIN-36F93>",
	"NOQUEUE: reject: RCPT from unknown[61.12.201.9]: 450 4.1.8 <info@s1520.example>: Sender address rejected: Domain not found; from=<info@s1520.example> to=<bob@mx1.example.test> proto=ESMTP helo=<WIN-A1B2C>",
	"NOQUEUE: reject: RCPT from unknown[104.90.152.167]: 554 5.7.1 Service unavailable; Client host [104.90.152.167] blocked using zen.spamhaus.org; from=<admin@s21603.de> to=<carol@mx1.example.test> proto=ESMTP helo=<WIN-B7C0D>",
}

// BenchmarkProcReject condenses the usual rejections as the reader does
// (gimmeDomain uncached).
func BenchmarkProcReject(b *testing.B) {
	for b.Loop() {
		for _, l := range rejectBenchLines {
			procReject(l, false, false, false, gimmeDomain)
		}
	}
}

// refProcReject is procReject as it was at d039ca8, before it read the
// recipient and the sender only for the rows that show them.
func refProcReject(line string, verbose, ignoreCase, addFrom bool, dom func(string) string) rejectKey {
	typ, from, rmdr, _ := rejHead(line)
	reas := rmdr
	if !verbose {
		switch typ {
		case "RCPT", "DATA", "CONNECT":
			reas = rejBlock(rejAddr(rejReason(rejProto(rejAngle(reas)))))
		case "MAIL":
			reas = rejMail(reas)
		default:
			reas = rejOther(reas)
		}
	}
	to, ok, sender, sok := toAndFrom(rmdr)
	if !ok {
		if to, ok = rejToUnknown(rmdr); !ok {
			if to, ok = rejToLoose(rmdr); !ok {
				to = "<>"
			}
		}
	}
	if ignoreCase {
		to = strings.ToLower(to)
	}
	if !sok {
		sender = "<>"
	}
	if ignoreCase {
		sender = strings.ToLower(sender)
	}
	switch {
	case strings.HasPrefix(reas, "Sender address rejected:"):
		return rejectKey{typ, reas, sender}
	case strings.HasPrefix(reas, "Recipient address rejected:") || strings.HasPrefix(reas, "User unknown ") || reas == "User unknown":
		data := to
		if addFrom {
			f := sender
			if f == "" {
				f = dom(from)
			}
			data += "  (" + f + ")"
		}
		return rejectKey{typ, reas, data}
	case strings.IndexByte(reas, ';') < 0:
		// (each of the three below needs a ';': one search of a short
		// reason where the three were ~280 instructions a rejection)
	case strings.Contains(reas, "Improper use of SMTP command pipelining;") && rePipelin.MatchString(reas):
		reas = rePipelin.ReplaceAllString(reas, "$1")
		src := ""
		if m := reFromSrc.FindStringSubmatch(line); m != nil {
			src = m[1]
		}
		return rejectKey{typ, reas, src}
	case strings.Contains(reas, "Message size exceeds fixed limit;") && reSizeLim.MatchString(reas):
		reas = reSizeLim.ReplaceAllString(reas, "$1")
	case strings.Contains(reas, "Server configuration ") && reSrvConf.MatchString(reas):
		reas = "(Local) " + reSrvConf.ReplaceAllString(reas, "$1")
	}
	data := dom(from)
	if addFrom {
		data += "  (" + sender + ")"
	}
	return rejectKey{typ, reas, data}
}

// rejectSeeds are rejection messages for procReject's differential test:
// each reply kind of its rules, with and without the sender and recipient
// fields, upper-case addresses, fields without their '>', a second
// keyword in the reply.
var rejectSeeds = func() []string {
	replies := []string{
		"554 5.7.1 <Victim@Example.COM>: Relay access denied; from=<A@B.example> to=<Victim@Example.COM> proto=ESMTP helo=<x>",
		"550 5.1.1 <U@X>: Recipient address rejected: User unknown in local recipient table; from=<S@Y> to=<U@X> proto=ESMTP helo=<h>",
		"550 5.1.1 <U@X>: Recipient address rejected: User unknown; from=<> to=<U@X>",
		"550 5.1.1 <U@X>: Recipient address rejected: x; to=<U",
		"550 5.1.1 <U@X>: Recipient address rejected: x; proto=SMTP",
		"550 <Nobody@X>: User unknown in virtual alias table; from=<S@Y>",
		"550 <Nobody@X>: User unknown ; to=<a,b> from=<F@G>",
		"450 4.1.8 <S@Y>: Sender address rejected: Domain not found; from=<S@Y> to=<b@c> proto=ESMTP helo=<h>",
		"450 4.1.8 <S@Y>: Sender address rejected: Domain not found; to=<b@c>",
		"554 5.7.1 Service unavailable; Client host [192.0.2.1] blocked using zen.spamhaus.org; from=<A@B> to=<c@d> proto=ESMTP helo=<h>",
		"503 5.5.0 Improper use of SMTP command pipelining; from=<A@B> to=<c@d>",
		"552 5.3.4 Message size exceeds fixed limit; proto=ESMTP helo=<x>",
		"451 4.3.5 Server configuration error; from=<A@B>",
		"503 5.5.0 Protocol error; x",
		"554 5.7.1 <x>: y>: z; a",
		"554 5.7.1 x hold: MAIL from y: z; from=<Q@R>",
		"User unknown",
		"",
	}
	var out []string
	for _, kw := range []string{"reject", "reject_warning", "hold", "discard"} {
		for _, typ := range []string{"RCPT", "MAIL", "DATA", "CONNECT", "END-OF-MESSAGE"} {
			for _, client := range []string{"unknown[192.0.2.7]", "Mail.Example.COM[2001:db8::1]"} {
				for _, r := range replies {
					out = append(out, "NOQUEUE: "+kw+": "+typ+" from "+client+": "+r)
				}
			}
		}
	}
	return out
}()

func checkProcReject(t *testing.T, s string) {
	t.Helper()
	dom := func(c string) string { return "D(" + c + ")" }
	for o := range 8 {
		verbose, ignoreCase, addFrom := o&1 != 0, o&2 != 0, o&4 != 0
		got := procReject(s, verbose, ignoreCase, addFrom, dom)
		if want := refProcReject(s, verbose, ignoreCase, addFrom, dom); got != want {
			t.Fatalf("procReject(%q, verbose %v, -i %v, add-from %v) = %q, was %q", s, verbose, ignoreCase, addFrom, got, want)
		}
	}
}

// TestProcRejectSame holds procReject to the code before it: the seeds
// above, the fast matchers' seeds and the fixture's messages, under each
// combination of --verbose-msg-detail, -i and --rej-add-from.
func TestProcRejectSame(t *testing.T) {
	for _, s := range append(rejectSeeds, fastSeeds...) {
		checkProcReject(t, s)
	}
	b, err := os.ReadFile("testdata/fixture.log")
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range strings.Split(string(b), "\n") {
		if i := strings.Index(l, "]: "); i >= 0 {
			checkProcReject(t, l[i+3:])
		}
	}
}

func FuzzProcReject(f *testing.F) {
	for _, s := range rejectSeeds {
		f.Add(s)
	}
	f.Fuzz(checkProcReject)
}
