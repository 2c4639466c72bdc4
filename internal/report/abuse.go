package report

import (
	"net/netip"
	"strconv"
	"strings"
	"time"

	"github.com/relayguard/relayguard/internal/logline"
)

// abuseState collects what pflogsumm does not show: who is guessing
// passwords, who tries to relay, which DNSBLs reject, signs of backscatter,
// and relayguard's own ban and egress decisions.
type abuseState struct {
	localDomains map[string]bool

	authByAddr   map[string]*authStat
	relay        map[string]counter // client address → target domain → count
	dnsbl        counter            // list → rejections
	reasons      counter            // rejection reason → count (chart)
	rejectsByIP  counter            // client address → rejections
	postscreen   counter            // postscreen event kind → count
	ruleRejects  counter            // relayguard rule → count
	ndnPerHour   [24]int64
	ndns         int64
	ndnRcpt      counter         // NDN recipient → delivery attempts
	localSenders map[string]bool // senders seen on such messages
	bans         []Ban
	banCount     int64
	egress       map[string]*egressStat
	egressCount  int64
	accepted     int64 // relayguard "message accepted"
	logins       int64 // Dovecot successful logins
}

type authStat struct {
	count int64
	users counter
}

type egressStat struct {
	count int64
	dsts  counter
}

func newAbuseState(local []string) *abuseState {
	s := &abuseState{
		localDomains: map[string]bool{},
		authByAddr:   map[string]*authStat{}, relay: map[string]counter{},
		dnsbl: counter{}, reasons: counter{}, rejectsByIP: counter{},
		postscreen: counter{}, ruleRejects: counter{},
		ndnRcpt: counter{}, localSenders: map[string]bool{},
		egress: map[string]*egressStat{},
	}
	for _, d := range local {
		s.localDomains[strings.ToLower(d)] = true
	}
	return s
}

// authFailure records n failed authentications from addr as user.
func (s *abuseState) authFailure(addr, user string, n int64) {
	addr = cleanAddr(addr)
	if addr == "" {
		return
	}
	st := s.authByAddr[addr]
	if st == nil {
		st = &authStat{users: counter{}}
		s.authByAddr[strings.Clone(addr)] = st
	}
	st.count += n
	if user != "" {
		st.users.add(user, n)
	}
}

// cleanAddr extracts an IP address from "1.2.3.4", "[1.2.3.4]",
// "host[1.2.3.4]", "1.2.3.4:port" or "[::1]:port"; "" if there is none.
func cleanAddr(s string) string {
	if i := strings.IndexByte(s, '['); i >= 0 {
		if j := strings.IndexByte(s[i:], ']'); j > 0 {
			s = s[i+1 : i+j]
		}
	}
	if _, ok := dottedQuad(s); ok && canonicalIPv4(s) {
		return s // already in netip's form: skip parsing and formatting
	}
	if a, err := netip.ParseAddr(s); err == nil {
		return a.Unmap().String()
	}
	if ap, err := netip.ParseAddrPort(s); err == nil {
		return ap.Addr().Unmap().String()
	}
	return ""
}

// canonicalIPv4 reports whether a dotted quad has octets ≤ 255 without
// leading zeros, i.e. is exactly what netip.Addr.String would print.
func canonicalIPv4(s string) bool {
	start := 0
	for i := 0; i <= len(s); i++ {
		if i < len(s) && s[i] != '.' {
			continue
		}
		part := s[start:i]
		if len(part) > 1 && part[0] == '0' {
			return false
		}
		n := 0
		for j := 0; j < len(part); j++ {
			n = n*10 + int(part[j]-'0')
		}
		if n > 255 {
			return false
		}
		start = i + 1
	}
	return true
}

// subnetOf is the /24 of an IPv4 address or the /64 of an IPv6 address.
func subnetOf(addr string) string {
	a, err := netip.ParseAddr(addr)
	if err != nil {
		return addr
	}
	bits := 64
	if a.Is4() {
		bits = 24
	}
	p, err := a.Prefix(bits)
	if err != nil {
		return addr
	}
	return p.String()
}

// postfixWarning looks for smtpd's SASL failure warning:
// "warning: host[1.2.3.4]: SASL LOGIN authentication failed: ..., sasl_username=bob".
func (s *abuseState) postfixWarning(cmd, msg string, t time.Time) {
	if cmd != "smtpd" || !strings.Contains(msg, "authentication failed") {
		return
	}
	rest := strings.TrimPrefix(msg, "warning: ")
	i := strings.Index(rest, "]: SASL ")
	if i < 0 {
		return
	}
	user := ""
	if j := strings.Index(rest, "sasl_username="); j >= 0 {
		user = rest[j+len("sasl_username="):]
		if k := strings.IndexAny(user, ", "); k >= 0 {
			user = user[:k]
		}
	}
	s.authFailure(rest[:i+1], user, 1)
}

// postscreen counts postscreen's verdicts on clients by kind.
func (s *abuseState) postscreenVerdict(msg string, t time.Time) {
	for _, kind := range [...]string{"DNSBL rank", "PREGREET", "HANGUP", "COMMAND PIPELINING",
		"NON-SMTP COMMAND", "BARE NEWLINE", "COMMAND TIME LIMIT", "COMMAND COUNT LIMIT"} {
		if strings.HasPrefix(msg, kind+" ") {
			s.postscreen.inc(kind)
			return
		}
	}
}

// smtpdReject files a Postfix rejection under the abuse views.
func (s *abuseState) smtpdReject(msg string, k rejectKey, t time.Time) {
	relay := strings.Contains(msg, "Relay access denied")
	if relay {
		// Counted once per client, as a relay attempt below: the
		// subnet table adds relay attempts and (other) rejections.
		s.reject(k, "", t)
	} else {
		s.reject(k, clientOf(msg), t)
	}
	if relay {
		dom := "<>"
		if i := strings.Index(msg, " to=<"); i >= 0 {
			to := msg[i+5:]
			if j := strings.IndexByte(to, '>'); j >= 0 {
				to = to[:j]
			}
			if at := strings.LastIndexByte(to, '@'); at >= 0 {
				dom = strings.ToLower(to[at+1:])
			} else {
				dom = strings.ToLower(to)
			}
		}
		s.relayAttempt(clientOf(msg), dom)
	}
	if i := strings.Index(msg, " blocked using "); i >= 0 {
		list := msg[i+len(" blocked using "):]
		if j := strings.IndexAny(list, ";, "); j >= 0 {
			list = list[:j]
		}
		s.dnsbl.inc(list)
	}
}

// clientOf returns the client address of "... from host[addr]: ...".
func clientOf(msg string) string {
	i := strings.Index(msg, " from ")
	if i < 0 {
		return ""
	}
	rest := msg[i+6:]
	if j := strings.Index(rest, "]:"); j >= 0 {
		return cleanAddr(rest[:j+1])
	}
	return ""
}

// reject counts a rejection by reason and, if client is not "", by client.
func (s *abuseState) reject(k rejectKey, client string, t time.Time) {
	reason := k.reason
	if k.typ == "cleanup" {
		reason = k.reason + " checks"
	}
	if reason == "" {
		reason = "(unknown)"
	}
	s.reasons.inc(reason)
	if client != "" {
		s.rejectsByIP.inc(client)
	}
}

func (s *abuseState) relayAttempt(client, domain string) {
	if client == "" {
		client = "(unknown)"
	}
	m := s.relay[client]
	if m == nil {
		m = counter{}
		s.relay[strings.Clone(client)] = m
	}
	m.inc(domain)
}

// received notes messages submitted by an authenticated client: their
// senders are local senders for the backscatter check.
func (s *abuseState) received(q *qstate, rest string) {
	if strings.Contains(rest, "sasl_username=") {
		q.local = true
	}
}

func (s *abuseState) sender(q *qstate, addr string) {
	if q.local {
		q.local = false
		if a := strings.ToLower(addr); !s.localSenders[a] {
			s.localSenders[strings.Clone(a)] = true
		}
	}
}

// bounceNotice records "QID: sender non-delivery notification: NDNQID".
func (a *Analyzer) bounceNotice(msg string, t time.Time) {
	const marker = ": sender non-delivery notification: "
	i := strings.Index(msg, marker)
	if i < 0 {
		return
	}
	s := a.abuse
	s.ndns++
	s.ndnPerHour[t.Hour()]++
	a.q(strings.TrimSpace(msg[i+len(marker):])).ndn = true
}

func (s *abuseState) delivery(q *qstate, addr string) {
	if q == nil || !q.ndn {
		return
	}
	s.ndnRcpt.inc(strings.ToLower(addr))
}

// backscatter returns the domains that received non-delivery notices for
// senders that never sent from here (not local, never authenticated or
// picked up locally).
func (s *abuseState) backscatter() ([]CountRow, int64) {
	dom := map[string]int64{}
	var n int64
	for rcpt, cp := range s.ndnRcpt {
		c := *cp
		if s.localSenders[rcpt] {
			continue
		}
		d := rcpt
		if at := strings.LastIndexByte(rcpt, '@'); at >= 0 {
			d = rcpt[at+1:]
		}
		if s.localDomains[d] {
			continue
		}
		dom[d] += c
		n += c
	}
	return sortCounts(dom, -1), n
}

// addDovecot reads Dovecot's login-process lines:
// "imap-login: Disconnected (auth failed, 3 attempts in 10 secs): user=<bob>, method=PLAIN, rip=192.0.2.1, ..."
// and "imap-login: Login: user=<bob>, ...".
func (a *Analyzer) addDovecot(l logline.Line) {
	msg := l.Message
	s := a.abuse
	if strings.Contains(msg, "-login: Login: ") {
		s.logins++
		return
	}
	i := strings.Index(msg, "(auth failed")
	if i < 0 {
		return
	}
	n := int64(1)
	rest := msg[i+len("(auth failed"):]
	if r, ok := strings.CutPrefix(rest, ", "); ok {
		k := 0
		for k < len(r) && isDigitByte(r[k]) {
			k++
		}
		if v, err := strconv.ParseInt(r[:k], 10, 64); err == nil && v > 0 {
			n = v
		}
	}
	if !strings.Contains(msg, "rip=") {
		return
	}
	user := between(msg, "user=<", ">")
	rip := between(msg, "rip=", ",")
	s.authFailure(rip, user, n)
}

// between returns the text after start up to end (or the line's end).
func between(s, start, end string) string {
	i := strings.Index(s, start)
	if i < 0 {
		return ""
	}
	s = s[i+len(start):]
	if j := strings.Index(s, end); j >= 0 {
		return s[:j]
	}
	return s
}
