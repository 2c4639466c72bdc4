package loggen

import (
	"context"
	"fmt"
	"log/slog"
	"net/netip"
	"strings"
	"time"

	"github.com/relayguard/relayguard/internal/maillog"
)

// Shapes are the workloads the generator writes besides the default small
// mail server's ("mail"). Each is an internet-facing server as the
// benchmarks must survive it, not the traffic the project's own tests like:
//
//   - attack: a mail server under a botnet. ~10 % of the sessions are
//     normal mail (from 20,000 senders spread over the IPv4 space), the
//     rest are SASL password guessing, relay attempts, DNSBL and unknown
//     user rejections. Half of the attacks come from a pool of long-lived
//     attackers (5,000 addresses, clustered in /24s and IPv6 /64s), half
//     from one-shot addresses drawn from the whole IPv4 space (15 % IPv6,
//     each in its own /64). On 1,000,000 lines: ~60,000 messages, ~140,000
//     AUTH failures and ~125,000 rejections from ~150,000 distinct
//     addresses.
//   - botnet: the same with 90 % one-shot attackers and almost no mail:
//     hundreds of thousands of distinct addresses (≈ 300,000 on 1,000,000
//     lines), the worst case for any table keyed by client.
//   - mixed: Postfix, Dovecot (IMAP/POP3/submission logins and failures,
//     auth worker lines) and relayguard serve's own records in one syslog
//     file, with the attack shape's address populations. relayguard's
//     records are written by internal/maillog's writers, so they are the
//     real format whatever it becomes.
const (
	ShapeMail   = "mail"
	ShapeAttack = "attack"
	ShapeBotnet = "botnet"
	ShapeMixed  = "mixed"
)

// Shapes lists every shape, the default first.
var Shapes = []string{ShapeMail, ShapeAttack, ShapeBotnet, ShapeMixed}

// profile is the mix of one shape, in percent of sessions.
type profile struct {
	normal, auth, reject, misc int // Postfix sessions
	dovecot, own               int // Dovecot logins and relayguard serve sessions (mixed)
	oneShot                    int // percent of attacks from a fresh address
	v6                         int // percent of fresh addresses that are IPv6
	attackers, senders         int // pool sizes
}

var profiles = map[string]profile{
	ShapeAttack: {normal: 30, auth: 25, reject: 40, misc: 5, oneShot: 85, v6: 15, attackers: 5000, senders: 20000},
	ShapeBotnet: {normal: 3, auth: 55, reject: 40, misc: 2, oneShot: 90, v6: 20, attackers: 20000, senders: 5000},
	ShapeMixed:  {normal: 10, auth: 20, reject: 25, misc: 5, dovecot: 25, own: 15, oneShot: 60, v6: 15, attackers: 5000, senders: 20000},
}

// shaped writes the high-cardinality shapes.
type shaped struct {
	*gen
	p         profile
	attackers []netip.Addr // long-lived: clustered in /24s and /64s
	senders   []netip.Addr // legitimate clients
	own       *maillog.Logger
	cid       int
}

// timeHandler stamps records with the generator's clock (not time.Now) and
// writes them behind a syslog header, as journald or rsyslog would.
type timeHandler struct {
	slog.Handler
	g *gen
}

func (h timeHandler) Handle(ctx context.Context, r slog.Record) error {
	r.Time = h.g.t
	fmt.Fprintf(h.g.w, "%s mx1 relayguard[77]: ", h.g.t.Format(time.Stamp))
	h.g.n++
	return h.Handler.Handle(ctx, r)
}

func (h timeHandler) WithAttrs(as []slog.Attr) slog.Handler {
	return timeHandler{h.Handler.WithAttrs(as), h.g}
}

func writeShape(g *gen, o Options) error {
	p, ok := profiles[o.Shape]
	if !ok {
		return fmt.Errorf("loggen: unknown shape %q (want one of %s)", o.Shape, strings.Join(Shapes, ", "))
	}
	s := &shaped{gen: g, p: p}
	// Long-lived attackers: a fifth alone, the rest in /24s of 5 and IPv6
	// /64s of 4 (subnet aggregation's prey).
	for len(s.attackers) < p.attackers {
		switch k := len(s.attackers) % 10; {
		case k < 2:
			s.attackers = append(s.attackers, s.fresh4())
		case k < 8:
			base := s.fresh4().As4()
			for range 5 {
				base[3] = byte(1 + s.r.IntN(254))
				s.attackers = append(s.attackers, netip.AddrFrom4(base))
			}
		default:
			base := s.fresh6().As16()
			for range 4 {
				for i := 8; i < 16; i++ {
					base[i] = byte(s.r.UintN(256))
				}
				s.attackers = append(s.attackers, netip.AddrFrom16(base))
			}
		}
	}
	s.attackers = s.attackers[:p.attackers]
	for range p.senders {
		s.senders = append(s.senders, s.fresh())
	}
	if p.own > 0 {
		h := slog.NewTextHandler(g.w, &slog.HandlerOptions{Level: slog.LevelDebug})
		s.own = maillog.New(slog.New(timeHandler{h, g}))
	}
	g.line("postfix/master", 900, "daemon started -- version 3.7.11, configuration /etc/postfix")
	total := p.normal + p.auth + p.reject + p.misc + p.dovecot + p.own
	for g.n < o.Lines {
		g.t = g.t.Add(time.Duration(s.r.IntN(600)) * time.Millisecond) // ~1 day per 1M lines
		k := s.r.IntN(total)
		switch {
		case k < p.normal:
			s.message()
		case k < p.normal+p.auth:
			s.authFailure()
		case k < p.normal+p.auth+p.reject:
			s.rejectSession()
		case k < p.normal+p.auth+p.reject+p.misc:
			g.misc()
		case k < p.normal+p.auth+p.reject+p.misc+p.dovecot:
			s.dovecotSession()
		default:
			s.ownSession()
		}
	}
	return g.w.Flush()
}

// tickShort is the time between the lines of one session.
func (s *shaped) tickShort() { s.t = s.t.Add(time.Duration(s.r.IntN(150)) * time.Millisecond) }

// fresh4 is an address drawn from the whole public IPv4 space.
func (s *shaped) fresh4() netip.Addr {
	for {
		v := s.r.Uint32()
		a := netip.AddrFrom4([4]byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)})
		if b := a.As4(); b[0] == 0 || b[0] == 10 || b[0] == 127 || b[0] >= 224 || b[3] == 0 || b[3] == 255 ||
			a.IsPrivate() || (b[0] == 100 && b[1]&0xc0 == 64) || (b[0] == 169 && b[1] == 254) {
			continue
		}
		return a
	}
}

// fresh6 is an address in a random /64 of 2000::/3.
func (s *shaped) fresh6() netip.Addr {
	var b [16]byte
	hi, lo := s.r.Uint64(), s.r.Uint64()
	hi = hi&^(uint64(7)<<61) | uint64(1)<<61 // 2000::/3
	for i := range 8 {
		b[i] = byte(hi >> (56 - 8*i))
		b[8+i] = byte(lo >> (56 - 8*i))
	}
	return netip.AddrFrom16(b)
}

func (s *shaped) fresh() netip.Addr {
	if s.r.IntN(100) < s.p.v6 {
		return s.fresh6()
	}
	return s.fresh4()
}

// attacker is the address of the next attack: fresh or long-lived.
func (s *shaped) attacker() netip.Addr {
	if s.r.IntN(100) < s.p.oneShot {
		return s.fresh()
	}
	// Long-lived attackers are not equally busy: a few are very active.
	i := int(float64(len(s.attackers)) * s.r.Float64() * s.r.Float64())
	return s.attackers[i]
}

func senderDomain(i int) string {
	tlds := [...]string{"com", "net", "org", "de", "co.uk", "io"}
	return fmt.Sprintf("s%d.%s", i, tlds[i%len(tlds)])
}

// message is a normal inbound message from a legitimate sender.
func (s *shaped) message() {
	s.pid++
	pid := s.pid
	i := s.r.IntN(len(s.senders))
	ip := s.senders[i].String()
	dom := senderDomain(i)
	h := "mail." + dom
	if i%7 == 0 {
		h = "unknown"
	}
	s.line("postfix/smtpd", pid, "connect from %s[%s]", h, ip)
	q := s.newQID()
	s.tickShort()
	s.line("postfix/smtpd", pid, "%s: client=%s[%s]", q, h, ip)
	s.line("postfix/cleanup", 500, "%s: message-id=<%d.%d@%s>", q, s.qid, s.r.Uint32(), dom)
	from := fmt.Sprintf("%s%d@%s", []string{"news", "info", "noreply", "john", "billing"}[s.r.IntN(5)], s.r.IntN(50), dom)
	s.line("postfix/qmgr", 501, "%s: from=<%s>, size=%d, nrcpt=1 (queue active)", q, from, 800+s.r.IntN(80000))
	s.tickShort()
	for range 1 + s.r.IntN(2) {
		s.deliver(q, s.r.IntN(5) == 0)
	}
	s.line("postfix/qmgr", 501, "%s: removed", q)
	s.line("postfix/smtpd", pid, "disconnect from %s[%s] ehlo=1 mail=1 rcpt=1 data=1 quit=1 commands=5", h, ip)
}

var guessed = []string{"admin", "info", "test", "support", "sales", "webmaster", "postmaster", "contact", "alice", "bob", "office", "user"}

// authFailure is a password-guessing session: one to three SASL failures.
func (s *shaped) authFailure() {
	s.pid++
	pid := s.pid
	a := s.attacker()
	ip := a.String()
	s.line("postfix/smtpd", pid, "connect from unknown[%s]", ip)
	n := 1
	if s.r.IntN(4) == 0 {
		n += s.r.IntN(3)
	}
	for range n {
		s.tickShort()
		mech := [...]string{"LOGIN", "PLAIN", "LOGIN"}[s.r.IntN(3)]
		s.line("postfix/smtpd", pid, "warning: unknown[%s]: SASL %s authentication failed: UGFzc3dvcmQ6", ip, mech)
		s.onFail(a)
	}
	s.line("postfix/smtpd", pid, "lost connection after AUTH from unknown[%s]", ip)
	s.line("postfix/smtpd", pid, "disconnect from unknown[%s] ehlo=1 auth=0/%d commands=1/%d", ip, n, n+1)
}

// rejectSession is a relay attempt, a DNSBL refusal, an unknown
// recipient or an unresolvable sender domain.
func (s *shaped) rejectSession() {
	s.pid++
	pid := s.pid
	a := s.attacker()
	ip := a.String()
	h := "unknown"
	s.line("postfix/smtpd", pid, "connect from %s[%s]", h, ip)
	from := fmt.Sprintf("%s@%s", guessed[s.r.IntN(len(guessed))], senderDomain(s.r.IntN(100000)))
	helo := fmt.Sprintf("WIN-%X", s.r.Uint32()&0xfffff)
	switch k := s.r.IntN(10); {
	case k < 4:
		t := fmt.Sprintf("victim%d@%s", s.r.IntN(1000), relayTargets[s.r.IntN(len(relayTargets))])
		s.line("postfix/smtpd", pid, "NOQUEUE: reject: RCPT from %s[%s]: 554 5.7.1 <%s>: Relay access denied; from=<%s> to=<%s> proto=ESMTP helo=<%s>", h, ip, t, from, t, helo)
	case k < 7:
		l := dnsbls[s.r.IntN(len(dnsbls))]
		s.line("postfix/smtpd", pid, "NOQUEUE: reject: RCPT from %s[%s]: 554 5.7.1 Service unavailable; Client host [%s] blocked using %s; from=<%s> to=<%s> proto=ESMTP helo=<%s>", h, ip, ip, l, from, s.localAddr(), helo)
	case k < 9:
		to := fmt.Sprintf("%s%d@mx1.example.test", guessed[s.r.IntN(len(guessed))], s.r.IntN(100))
		s.line("postfix/smtpd", pid, "NOQUEUE: reject: RCPT from %s[%s]: 550 5.1.1 <%s>: Recipient address rejected: User unknown in local recipient table; from=<%s> to=<%s> proto=ESMTP helo=<%s>", h, ip, to, from, to, helo)
	default:
		s.line("postfix/smtpd", pid, "NOQUEUE: reject: RCPT from %s[%s]: 450 4.1.8 <%s>: Sender address rejected: Domain not found; from=<%s> to=<%s> proto=ESMTP helo=<%s>", h, ip, from, from, s.localAddr(), helo)
	}
	s.line("postfix/smtpd", pid, "disconnect from %s[%s] ehlo=1 mail=1 rcpt=0/1 quit=1 commands=3/4", h, ip)
}

// dovecotSession is an IMAP, POP3 or submission login, failed (from an
// attacker) or successful (from a sender's address).
func (s *shaped) dovecotSession() {
	svc := [...]string{"imap", "pop3", "submission"}[s.r.IntN(3)]
	if s.r.IntN(3) == 0 {
		u := localUsers[s.r.IntN(len(localUsers))]
		ip := s.senders[s.r.IntN(len(s.senders))]
		s.line("dovecot", 0, "%s-login: Login: user=<%s>, method=PLAIN, rip=%s, lip=192.0.2.10, mpid=%d, TLS, session=<%08x>", svc, u, ip, 2000+s.r.IntN(30000), s.r.Uint32())
		return
	}
	a := s.attacker()
	u := guessed[s.r.IntN(len(guessed))]
	n := 1 + s.r.IntN(3)
	for range n {
		s.line("dovecot", 0, "auth: passwd-file(%s,%s,<%08x>): unknown user", u, a, s.r.Uint32())
		s.onFail(a)
	}
	s.tickShort()
	s.line("dovecot", 0, "%s-login: Disconnected (auth failed, %d attempts in %d secs): user=<%s>, method=PLAIN, rip=%s, lip=192.0.2.10, TLS, session=<%08x>", svc, n, 2*n, u, a, s.r.Uint32())
}

// ownSession is a relayguard serve session, written by maillog's writers:
// a message accepted and delivered, an AUTH failure, a refusal or a
// relay attempt, and now and then a ban.
func (s *shaped) ownSession() {
	ctx := context.Background()
	s.cid++
	switch k := s.r.IntN(10); {
	case k < 3:
		i := s.r.IntN(len(s.senders))
		c := maillog.Conn{CID: fmt.Sprintf("%x", s.cid), Client: s.senders[i], Listener: "mx"}
		s.own.Connected(ctx, c, false)
		id := fmt.Sprintf("%016x", s.r.Uint64())
		rcpt := s.localAddr()
		s.own.Accepted(ctx, c, maillog.Message{ID: id, From: fmt.Sprintf("news@%s", senderDomain(i)), Nrcpt: 1, Size: int64(900 + s.r.IntN(60000))})
		s.own.Delivered(ctx, maillog.Delivery{ID: id, Rcpt: rcpt, Attempt: 1, Reply: "250 2.0.0 saved", Relay: "maildir"})
		s.own.Disconnected(ctx, c, maillog.Session{Helo: "mail." + senderDomain(i), TLS: true, Messages: 1, Duration: 180 * time.Millisecond})
	case k < 7:
		a := s.attacker()
		c := maillog.Conn{CID: fmt.Sprintf("%x", s.cid), Client: a, Listener: "submission"}
		s.own.AuthFailed(ctx, c, "PLAIN", guessed[s.r.IntN(len(guessed))], "invalid credentials")
		s.onFail(a)
		if s.r.IntN(20) == 0 {
			p := netip.PrefixFrom(a, a.BitLen())
			s.own.Banned(ctx, p, s.t.Add(time.Hour), 1, "5 failures in 10m0s (last: auth_failure PLAIN from "+a.String()+" via relayguard-log)")
		}
	case k < 9:
		a := s.attacker()
		c := maillog.Conn{CID: fmt.Sprintf("%x", s.cid), Client: a, Listener: "mx"}
		t := fmt.Sprintf("victim%d@%s", s.r.IntN(1000), relayTargets[s.r.IntN(len(relayTargets))])
		s.own.RelayDenied(ctx, c, maillog.Refusal{Rule: "reject_unauth_destination", Code: "554 5.7.1", Rcpt: t, Text: "Relay access denied"})
	default:
		a := s.attacker()
		c := maillog.Conn{CID: fmt.Sprintf("%x", s.cid), Client: a, Listener: "mx"}
		l := dnsbls[s.r.IntN(len(dnsbls))]
		s.own.Rejected(ctx, c, maillog.Refusal{Rule: "dnsbl:" + l, Code: "554 5.7.1", Rcpt: s.localAddr(), Text: "Service unavailable; client [" + a.String() + "] blocked using " + l})
	}
}
