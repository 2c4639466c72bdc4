// Package loggen writes synthetic but realistic Postfix, Dovecot and
// relayguard syslog traffic, deterministic for a seed, in several shapes
// (shapes.go): a small mail server's own traffic, and internet-facing
// servers under attack from hundreds of thousands of addresses. Tests
// compare relayguard report with pflogsumm on it; the benchmarks
// (bench/report, bench/guard) use it at 1M lines.
package loggen

import (
	"bufio"
	"fmt"
	"io"
	"math/rand/v2"
	"net/netip"
	"time"
)

// Options shape the generated log.
type Options struct {
	Lines int       // stop after about this many lines
	Start time.Time // first timestamp (wall clock written as is)
	Seed  uint64
	Abuse bool // also write Dovecot and relayguard lines (shape "mail")
	// Shape is one of Shapes; "" is ShapeMail.
	Shape string
	// OnAuthFailure, if set, is called with the client of every failed
	// authentication written (the attackers a guard must find).
	OnAuthFailure func(netip.Addr)
}

type gen struct {
	onFail func(netip.Addr)
	w      *bufio.Writer
	r      *rand.Rand
	t      time.Time
	n      int
	qid    int
	pid    int
}

func (g *gen) line(prog string, pid int, format string, args ...any) {
	if pid > 0 {
		fmt.Fprintf(g.w, "%s mx1 %s[%d]: ", g.t.Format(time.Stamp), prog, pid)
	} else {
		fmt.Fprintf(g.w, "%s mx1 %s: ", g.t.Format(time.Stamp), prog)
	}
	fmt.Fprintf(g.w, format, args...)
	g.w.WriteByte('\n')
	g.n++
}

func (g *gen) newQID() string {
	g.qid++
	return fmt.Sprintf("%X%05X", 0x4A+g.qid%7, g.qid)
}

func (g *gen) tick() { g.t = g.t.Add(time.Duration(g.r.IntN(4000)) * time.Millisecond) }

var (
	localUsers   = []string{"alice", "bob", "carol", "dave", "erin", "frank", "Grace"}
	remoteDoms   = []string{"example.com", "Example.NET", "mail.example.org", "lists.example.co.uk", "foo.example.de", "bar.example.io"}
	senderHosts  = []string{"mail.sender1.example.com", "smtp.sender2.example.net", "mx.example.de", "unknown", "out.lists.example.co.uk"}
	relayTargets = []string{"victim.example", "gmail.example", "yahoo.example"}
	dnsbls       = []string{"zen.spamhaus.org", "bl.spamcop.net", "b.barracudacentral.org"}
)

// Write writes the log to w.
func Write(w io.Writer, o Options) error {
	g := &gen{w: bufio.NewWriterSize(w, 1<<20), r: rand.New(rand.NewPCG(o.Seed, 0x5eed)), t: o.Start, pid: 1000, onFail: o.OnAuthFailure}
	if g.onFail == nil {
		g.onFail = func(netip.Addr) {}
	}
	if o.Shape != "" && o.Shape != ShapeMail {
		return writeShape(g, o)
	}
	g.line("postfix/master", 900, "daemon started -- version 3.7.11, configuration /etc/postfix")
	for g.n < o.Lines {
		g.tick()
		switch k := g.r.IntN(100); {
		case k < 45:
			g.inbound()
		case k < 55:
			g.pickup()
		case k < 75:
			g.reject()
		case k < 80:
			g.misc()
		default:
			if o.Abuse {
				g.abuse()
			} else {
				g.inbound()
			}
		}
	}
	return g.w.Flush()
}

func (g *gen) client() (string, string) {
	h := senderHosts[g.r.IntN(len(senderHosts))]
	ip := fmt.Sprintf("198.51.100.%d", 1+g.r.IntN(40))
	if h == "unknown" {
		ip = fmt.Sprintf("203.0.113.%d", 1+g.r.IntN(60))
	}
	return h, ip
}

func (g *gen) remoteAddr() string {
	return fmt.Sprintf("user%d@%s", g.r.IntN(30), remoteDoms[g.r.IntN(len(remoteDoms))])
}

func (g *gen) localAddr() string {
	return localUsers[g.r.IntN(len(localUsers))] + "@mx1.example.test"
}

func (g *gen) inbound() {
	g.pid++
	pid := g.pid
	h, ip := g.client()
	g.line("postfix/smtpd", pid, "connect from %s[%s]", h, ip)
	q := g.newQID()
	g.tick()
	sasl := ""
	if g.r.IntN(10) == 0 {
		sasl = fmt.Sprintf(", sasl_method=PLAIN, sasl_username=%s", localUsers[g.r.IntN(len(localUsers))])
	}
	g.line("postfix/smtpd", pid, "%s: client=%s[%s]%s", q, h, ip, sasl)
	g.line("postfix/cleanup", 500, "%s: message-id=<%d@%s>", q, g.qid, h)
	size := 500 + g.r.IntN(200000)
	if g.r.IntN(50) == 0 {
		size = 600000 + g.r.IntN(3000000)
	}
	from := g.remoteAddr()
	if g.r.IntN(15) == 0 {
		from = ""
	}
	g.line("postfix/qmgr", 501, "%s: from=<%s>, size=%d, nrcpt=1 (queue active)", q, from, size)
	g.tick()
	n := 1 + g.r.IntN(3)
	for range n {
		g.deliver(q, g.r.IntN(3) == 0)
	}
	g.line("postfix/qmgr", 501, "%s: removed", q)
	g.line("postfix/smtpd", pid, "disconnect from %s[%s] ehlo=1 mail=1 rcpt=1 data=1 quit=1 commands=5", h, ip)
}

func (g *gen) deliver(q string, remote bool) {
	delay := float64(g.r.IntN(5000)) / 100
	if remote {
		to := g.remoteAddr()
		switch k := g.r.IntN(20); {
		case k < 14:
			g.line("postfix/smtp", 600, "%s: to=<%s>, relay=mx.%s[192.0.2.%d]:25, delay=%.2f, delays=0.1/0/0.2/0.3, dsn=2.0.0, status=sent (250 2.0.0 Ok: queued as ABC%d)", q, to, "remote.example", g.r.IntN(9), delay, g.qid)
		case k < 18:
			g.line("postfix/smtp", 600, "%s: to=<%s>, relay=none, delay=%.1f, delays=0.1/0/30/0, dsn=4.4.1, status=deferred (connect to mx.remote.example[192.0.2.%d]:25: Connection timed out)", q, to, delay, g.r.IntN(9))
		default:
			g.line("postfix/smtp", 600, "%s: to=<%s>, relay=mx.remote.example[192.0.2.1]:25, delay=%.2f, delays=0.1/0/0.2/0.3, dsn=5.1.1, status=bounced (host mx.remote.example[192.0.2.1] said: 550 5.1.1 <%s>: Recipient address rejected: User unknown in virtual mailbox table (in reply to RCPT TO command))", q, to, delay, to)
			nq := g.newQID()
			g.line("postfix/bounce", 700, "%s: sender non-delivery notification: %s", q, nq)
		}
		return
	}
	to := g.localAddr()
	switch k := g.r.IntN(20); {
	case k < 1:
		g.line("postfix/local", 650, "%s: to=<%s>, orig_to=<postmaster@mx1.example.test>, relay=local, delay=%.2f, delays=0/0/0/0, dsn=2.0.0, status=sent (forwarded as %s)", q, to, delay, g.newQID())
	case k < 2:
		g.line("postfix/local", 650, "%s: to=<%s>, relay=local, delay=%.2f, delays=0/0/0/0, dsn=4.3.0, status=deferred (temporary failure. Command output: quota exceeded)", q, to, delay)
	default:
		g.line("postfix/lmtp", 650, "%s: to=<%s>, relay=mx1.example.test[private/dovecot-lmtp], delay=%.2f, delays=0/0/0/0, dsn=2.0.0, status=sent (250 2.0.0 <%s> saved)", q, to, delay, to)
	}
}

func (g *gen) pickup() {
	q := g.newQID()
	u := localUsers[g.r.IntN(len(localUsers))]
	g.line("postfix/pickup", 400, "%s: uid=1000 from=<%s>", q, u)
	g.line("postfix/cleanup", 500, "%s: message-id=<%d@mx1>", q, g.qid)
	g.line("postfix/qmgr", 501, "%s: from=<%s@mx1.example.test>, size=%d, nrcpt=1 (queue active)", q, u, 300+g.r.IntN(5000))
	g.deliver(q, g.r.IntN(2) == 0)
	g.line("postfix/qmgr", 501, "%s: removed", q)
}

func (g *gen) reject() {
	g.pid++
	h, ip := g.client()
	from := g.remoteAddr()
	helo := "helo.example"
	switch k := g.r.IntN(10); {
	case k < 3:
		t := relayTargets[g.r.IntN(len(relayTargets))]
		g.line("postfix/smtpd", g.pid, "NOQUEUE: reject: RCPT from %s[%s]: 554 5.7.1 <x%d@%s>: Relay access denied; from=<%s> to=<x%d@%s> proto=ESMTP helo=<%s>", h, ip, g.r.IntN(5), t, from, g.r.IntN(5), t, helo)
	case k < 5:
		to := fmt.Sprintf("nobody%d@mx1.example.test", g.r.IntN(6))
		g.line("postfix/smtpd", g.pid, "NOQUEUE: reject: RCPT from %s[%s]: 550 5.1.1 <%s>: Recipient address rejected: User unknown in local recipient table; from=<%s> to=<%s> proto=ESMTP helo=<%s>", h, ip, to, from, to, helo)
	case k < 7:
		l := dnsbls[g.r.IntN(len(dnsbls))]
		g.line("postfix/smtpd", g.pid, "NOQUEUE: reject: RCPT from unknown[%s]: 554 5.7.1 Service unavailable; Client host [%s] blocked using %s; https://www.spamhaus.org/query/ip/%s; from=<%s> to=<%s> proto=ESMTP helo=<%s>", ip, ip, l, ip, from, g.localAddr(), helo)
	case k < 8:
		g.line("postfix/smtpd", g.pid, "NOQUEUE: reject: RCPT from %s[%s]: 450 4.1.8 <%s>: Sender address rejected: Domain not found; from=<%s> to=<%s> proto=ESMTP helo=<%s>", h, ip, from, from, g.localAddr(), helo)
	case k < 9:
		g.line("postfix/smtpd", g.pid, "NOQUEUE: reject_warning: RCPT from %s[%s]: 450 4.7.1 Client host rejected: cannot find your hostname, [%s]; from=<%s> to=<%s> proto=ESMTP helo=<%s>", h, ip, ip, from, g.localAddr(), helo)
	default:
		q := g.newQID()
		kinds := []string{"reject", "warning", "hold", "discard"}
		g.line("postfix/cleanup", 500, "%s: %s: header Subject: Buy now %d from %s[%s]; from=<%s> to=<%s> proto=ESMTP helo=<%s>: 5.7.1 spam", q, kinds[g.r.IntN(4)], g.r.IntN(3), h, ip, from, g.localAddr(), helo)
	}
}

func (g *gen) misc() {
	h, ip := g.client()
	switch g.r.IntN(8) {
	case 0, 1:
		g.line("postfix/smtpd", g.pid, "warning: %s[%s]: SASL LOGIN authentication failed: UGFzc3dvcmQ6, sasl_username=%s", h, ip, localUsers[g.r.IntN(len(localUsers))])
		g.onFail(netip.MustParseAddr(ip))
	case 2:
		g.line("postfix/smtpd", g.pid, "warning: hostname %s does not resolve to address %s: Name or service not known", h, ip)
	case 3:
		g.line("postfix/smtp", 600, "connect to mx.remote%d.example[192.0.2.%d]:25: Connection refused", g.r.IntN(3), g.r.IntN(9))
	case 4:
		g.line("postfix/smtp", 600, "connect to mx.down.example[192.0.2.77]:25: Connection timed out")
	case 5:
		g.line("postfix/smtpd", g.pid, "fatal: open /etc/postfix/main.cf: Permission denied")
	case 6:
		g.line("postfix/master", 900, "warning: process /usr/lib/postfix/sbin/smtpd pid %d exit status 1", g.pid)
	default:
		g.line("postfix/master", 900, "reload -- version 3.7.11, configuration /etc/postfix")
	}
}

func (g *gen) abuse() {
	ip := fmt.Sprintf("203.0.113.%d", 1+g.r.IntN(60))
	u := localUsers[g.r.IntN(len(localUsers))]
	switch g.r.IntN(5) {
	case 0:
		g.line("dovecot", 0, "imap-login: Disconnected (auth failed, %d attempts in 4 secs): user=<%s>, method=PLAIN, rip=%s, lip=192.0.2.10, TLS, session=<abc>", 1+g.r.IntN(3), u, ip)
		g.onFail(netip.MustParseAddr(ip))
	case 1:
		g.line("dovecot", 0, "imap-login: Login: user=<%s>, method=PLAIN, rip=198.51.100.7, lip=192.0.2.10, mpid=123, TLS", u)
	case 2:
		g.line("relayguard", 77, "time=%s level=INFO msg=\"auth failed\" client=%s mechanism=PLAIN user=%s", g.t.Format(time.RFC3339), ip, u)
		g.onFail(netip.MustParseAddr(ip))
	case 3:
		g.line("relayguard", 77, "time=%s level=WARN msg=banned prefix=%s/32 until=%s count=1 reason=\"auth failures\"", g.t.Format(time.RFC3339), ip, g.t.Add(time.Hour).Format(time.RFC3339))
	default:
		g.line("relayguard", 77, "time=%s level=WARN msg=\"egress blocked\" uid=33 user=www-data comm=php-fpm dst=192.0.2.25:25", g.t.Format(time.RFC3339))
	}
}
