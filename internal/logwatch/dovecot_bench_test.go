package logwatch

import (
	"fmt"
	"os"
	"strings"
	"testing"

	"github.com/relayguard/relayguard/internal/event"
	"github.com/relayguard/relayguard/internal/logline"
)

// dovecotBenchLines are Dovecot's common lines as syslog gives them
// (program "dovecot"): passdb failures, login summaries and logins, in the
// proportions of bench/report/genlog's mixed shape (4 : 2 : 1).
func dovecotBenchLines() [][2]string {
	var out [][2]string
	for i := range 700 {
		ip := fmt.Sprintf("%d.%d.%d.%d", 11+i%200, i%256, (i*7)%256, 1+i%250)
		if i%10 == 9 {
			ip = fmt.Sprintf("2001:db8:%x:%x::%x", i, i*3, i%97+1)
		}
		sess := fmt.Sprintf("%08x", uint32(i)*2654435761)
		proc := [...]string{"imap-login", "pop3-login", "submission-login"}[i%3]
		switch i % 7 {
		case 0, 1, 2, 3:
			out = append(out, [2]string{"dovecot", "auth: passwd-file(webmaster," + ip + ",<" + sess + ">): unknown user"})
		case 4, 5:
			out = append(out, [2]string{"dovecot", proc + ": Disconnected (auth failed, " + fmt.Sprint(1+i%3) + " attempts in " + fmt.Sprint(2+2*(i%3)) +
				" secs): user=<webmaster>, method=PLAIN, rip=" + ip + ", lip=192.0.2.10, TLS, session=<" + sess + ">"})
		default:
			out = append(out, [2]string{"dovecot", proc + ": Login: user=<alice>, method=PLAIN, rip=" + ip + ", lip=192.0.2.10, mpid=31075, TLS, session=<" + sess + ">"})
		}
	}
	return out
}

// BenchmarkParseDovecot is the cost of reading one of Dovecot's common
// lines into an event (ParseMessageTo, as the report calls it).
func BenchmarkParseDovecot(b *testing.B) {
	lines := dovecotBenchLines()
	var e event.Event
	b.ResetTimer()
	for i := range b.N {
		l := lines[i%len(lines)]
		ParseMessageTo(&e, l[0], l[1])
	}
}

func BenchmarkParseDovecotKinds(b *testing.B) {
	lines := dovecotBenchLines()
	for _, k := range []struct{ name, has string }{{"passdb", "auth: "}, {"failed", "(auth failed"}, {"login", "Login: "}} {
		var sel [][2]string
		for _, l := range lines {
			if strings.Contains(l[1], k.has) {
				sel = append(sel, l)
			}
		}
		b.Run(k.name, func(b *testing.B) {
			var e event.Event
			for i := range b.N {
				l := sel[i%len(sel)]
				ParseMessageTo(&e, l[0], l[1])
			}
		})
	}
}

// BenchmarkParseDovecotLog parses the Dovecot lines of the log named by
// REPORT_SAME_LOG (e.g. bench/report/genlog's mixed shape), those holding
// DOVECOT_BENCH_HAS if set, in turn; skipped without it. Under cachegrind
// with two -benchtime counts it gives the parse's instructions a line.
func BenchmarkParseDovecotLog(b *testing.B) {
	name := os.Getenv("REPORT_SAME_LOG")
	if name == "" {
		b.Skip("REPORT_SAME_LOG not set")
	}
	data, err := os.ReadFile(name)
	if err != nil {
		b.Fatal(err)
	}
	has := os.Getenv("DOVECOT_BENCH_HAS")
	var lines [][2]string
	var p logline.Parser
	for l := range strings.Lines(string(data)) {
		if pl, ok := p.Parse(l); ok && Dovecot(pl.Program) && strings.Contains(pl.Message, has) {
			lines = append(lines, [2]string{pl.Program, pl.Message})
		}
	}
	if len(lines) == 0 {
		b.Fatal("no Dovecot line")
	}
	var e event.Event
	b.ResetTimer()
	for i := range b.N {
		l := lines[i%len(lines)]
		ParseMessageTo(&e, l[0], l[1])
	}
}
