package report

import (
	"context"
	"net/netip"
	"strings"
	"time"

	"github.com/relayguard/relayguard/internal/event"
	"github.com/relayguard/relayguard/internal/logwatch"
)

// abuseState collects what pflogsumm does not show: who is guessing
// passwords, who tries to relay, which DNSBLs reject, signs of backscatter,
// and relayguard's own ban and egress decisions.
//
// Who failed to authenticate, who tried to relay, which DNS lists refused
// whom and who logged in come from the guard's own events: the lines are
// parsed by logwatch's parsers (the ones `watch` bans with), and the lines
// several processes write for one failed login are paired by
// logwatch.Once, so that the report and the guard can never disagree on
// who failed how often.
type abuseState struct {
	localDomains map[string]bool
	once         *logwatch.Once // → Publish
	ar           *arena
	pre          *parsed // the current line's message, parsed ahead (or nil)

	clients       addrIndex            // client address (As16) → number (all zero: unknown)
	clientStats   [][]clientStat       // by number, in blocks of clientBlock (rows never move)
	oddAddrs      map[int32]netip.Addr // the clients whose address As16 does not give back: invalid or with a zone
	users         keyIndex             // user name tried → number
	userPairs     intIndex             // (client number, user number) → number
	userPairN     []int64              // by pair number: the failures of that client as that user
	relayByDomain *counter             // target domain → relay attempts
	dnsbl         *counter             // list → rejections
	reasons       *counter             // rejection reason → count (chart)
	postscreen    *counter             // postscreen event kind → count
	ruleRejects   *counter             // relayguard rule → count
	ndnPerHour    [24]int64
	ndns          int64
	ndnRcpt       *counter        // NDN recipient → delivery attempts
	localSenders  map[string]bool // senders seen on such messages
	bans          []Ban
	banCount      int64
	egress        map[string]*egressStat
	egressCount   int64
	actors        map[string]*actorStat // local user or login → its sending (actors.go)
	accepted      int64                 // relayguard "message accepted"
	logins        int64                 // Dovecot successful logins
}

// clientStat is what one client address did: failed authentications,
// relay attempts and other rejections. The users it tried are counted in
// abuseState.userPairs, by (address, user) (no map or list per address: a
// botnet's log has hundreds of thousands of addresses, and a list walked
// at each failure was a cache miss per user an address had tried). One
// table for the three, keyed by the address itself, costs one lookup per
// event and no string per address until the report is written.
type clientStat struct {
	auth, relay, rejects int64
	addr                 [16]byte // the address, As16 (no pointer for the collector to trace)
}

// clientBlock is how many clients' rows are allocated at a time: a botnet's
// log has 100,000s, and one growing slice of them was copied at each growth.
const clientBlock = 4096

// stat returns client i's row.
func (s *abuseState) stat(i int32) *clientStat { return &s.clientStats[i/clientBlock][i%clientBlock] }

// clientCount is the number of distinct clients.
func (s *abuseState) clientCount() int32 { return s.clients.n }

// addrOf returns client i's address.
func (s *abuseState) addrOf(i int32) netip.Addr {
	if a, ok := s.oddAddrs[i]; ok {
		return a
	}
	return netip.AddrFrom16(s.stat(i).addr).Unmap()
}

type egressStat struct {
	count int64
	dsts  *counter
}

func newAbuseState(local []string, ar *arena) *abuseState {
	s := &abuseState{
		localDomains: map[string]bool{}, ar: ar,
		users:         keyIndex{ar: ar},
		relayByDomain: newCounter(ar), dnsbl: newCounter(ar), reasons: newCounter(ar),
		postscreen: newCounter(ar), ruleRejects: newCounter(ar),
		ndnRcpt: newCounter(ar), localSenders: map[string]bool{},
		egress: map[string]*egressStat{},
	}
	for _, d := range local {
		s.localDomains[strings.ToLower(d)] = true
	}
	s.once = logwatch.NewOnce(s)
	return s
}

// logged reads one line's message as the guard does (program is the syslog
// tag, "postfix/smtpd" for Postfix under any syslog name) and counts the
// event it stands for.
func (s *abuseState) logged(program, msg string, t time.Time) (event.Event, bool) {
	e, ok := s.parse(program, msg)
	if !ok {
		return e, false
	}
	if e.Time.IsZero() {
		e.Time = t
	}
	s.once.Publish(context.Background(), e)
	return e, true
}

// parsed is a message parsed by logwatch ahead of the counting, by the
// reading goroutine (ReadLines).
type parsed struct {
	program, msg string
	e            event.Event
	ok           bool
}

// parse is logwatch.ParseMessage, or its result computed ahead for this
// very line.
func (s *abuseState) parse(program, msg string) (event.Event, bool) {
	if p := s.pre; p != nil && p.program == program && p.msg == msg {
		return p.e, p.ok
	}
	return logwatch.ParseMessage(program, msg)
}

// Publish implements event.Sink for the events logwatch.Once passes on:
// authentication failures and logins. Relay attempts, DNS list and other
// rejections are counted with the rejection's pflogsumm key (smtpdReject).
func (s *abuseState) Publish(_ context.Context, e event.Event) {
	switch e.Kind {
	case event.AuthFailure:
		s.authFailure(e.IP, e.User, int64(e.Count()))
	case event.LoginSuccess:
		s.logins++
	case event.AuthSuccess:
		if e.Source == "dovecot" { // submission-login
			s.logins++
		}
	}
}

// client returns ip's row, created on first use; the pointer is valid
// until the next call.
func (s *abuseState) client(ip netip.Addr) *clientStat { return s.stat(s.clientNumber(ip)) }

// clientNumber returns ip's number, its row created on first use.
func (s *abuseState) clientNumber(ip netip.Addr) int32 {
	ip = ip.Unmap()
	var k [16]byte // (the table's key has no pointer: nothing for the collector to trace)
	if ip.IsValid() {
		k = ip.As16()
	}
	i, ok := s.clients.get(k)
	if !ok {
		if i%clientBlock == 0 {
			s.clientStats = append(s.clientStats, make([]clientStat, clientBlock))
		}
		*s.stat(i) = clientStat{addr: k}
		if !ip.IsValid() || ip.Zone() != "" {
			if s.oddAddrs == nil {
				s.oddAddrs = map[int32]netip.Addr{}
			}
			s.oddAddrs[i] = ip
		}
	}
	return i
}

// authFailure records n failed authentications from ip as user.
func (s *abuseState) authFailure(ip netip.Addr, user string, n int64) {
	if !ip.IsValid() {
		return
	}
	i := s.clientNumber(ip)
	s.stat(i).auth += n
	if user == "" {
		return
	}
	u, _ := s.users.get(user)
	j, ok := s.userPairs.get(uint64(i)<<32 | uint64(u))
	if !ok {
		s.userPairN = append(s.userPairN, 0)
	}
	s.userPairN[j] += n
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

// smtpdReject files a Postfix rejection (of smtpd or postscreen, cmd)
// under the abuse views, as the guard reads it: a relay attempt, a DNS list
// refusal or another rejection of a client.
func (s *abuseState) smtpdReject(program, msg string, k rejectKey, t time.Time) {
	s.reject(k, t)
	if e, ok := s.parse(program, msg); ok && e.IP.IsValid() {
		s.clientAbuse(e)
	}
}

// unsummarised counts the abuse of a Postfix line that pflogsumm's
// sections do not read (another instance's syslog name): everything but
// the rejection reasons, which are pflogsumm's.
func (s *abuseState) unsummarised(program, msg string, t time.Time) {
	if e, ok := s.logged(program, msg, t); ok && e.IP.IsValid() {
		s.clientAbuse(e)
	}
}

// clientAbuse counts a relay attempt (once per client: the subnet table
// adds relay attempts and other rejections), a DNS list refusal or another
// rejection of the client e names.
func (s *abuseState) clientAbuse(e event.Event) {
	switch e.Kind {
	case event.RelayDenied:
		s.relayAttempt(e.IP, rcptDomain(e.Detail))
	case event.DNSBLReject:
		if e.Rule == "reject_rbl_client" {
			s.dnsbl.inc(e.Detail)
		}
		s.client(e.IP).rejects++
	case event.Reject:
		s.client(e.IP).rejects++
	}
}

// rcptDomain is the lower-cased domain of a refused relay recipient ("<>"
// when the line names none).
func rcptDomain(to string) string {
	if to == "" {
		return "<>"
	}
	if at := strings.LastIndexByte(to, '@'); at >= 0 {
		return strings.ToLower(to[at+1:])
	}
	return strings.ToLower(to)
}

// reject counts a rejection by reason.
func (s *abuseState) reject(k rejectKey, t time.Time) {
	reason := k.reason
	if k.typ == "cleanup" {
		reason = k.reason + " checks"
	}
	if reason == "" {
		reason = "(unknown)"
	}
	s.reasons.inc(reason)
}

// relayAttempt counts an attempt of client (the zero Addr: unknown) to
// relay to domain.
func (s *abuseState) relayAttempt(client netip.Addr, domain string) {
	s.client(client).relay++
	s.relayByDomain.inc(domain)
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
	for rcpt, c := range s.ndnRcpt.all() {
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
