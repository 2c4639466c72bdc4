package report

import (
	"net/netip"
	"strings"
	"time"
	"unsafe"

	"github.com/relayguard/relayguard/internal/event"
	"github.com/relayguard/relayguard/internal/logwatch"
	"github.com/relayguard/relayguard/internal/maillog"
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
	once         *logwatch.Once // → publish
	ar           *arena
	pre          *parsed // the current line's message, parsed ahead (or nil)

	// The client work (clientJob: logwatch's reading of a line, the
	// pairing in once and the tables by client below it) is queued on
	// batch, the line's batch, when it is set, and done by the goroutine
	// the batch is handed to next (readLines: a third stage after the
	// counting); else at once. Its tables copy their keys into an arena of
	// their own, car.
	batch *batch
	line  int32 // the current line's index in batch
	car   *arena

	clients       addrIndex            // client address (As16) → number (all zero: unknown)
	clientStats   [][]clientStat       // by number, in blocks of clientBlock (rows never move)
	oddAddrs      map[int32]netip.Addr // the clients whose address As16 does not give back: invalid or with a zone
	users         keyIndex             // user name tried → number
	userPairs     intIndex             // (client number, user number) → number
	userPairN     []int64              // by pair number: the failures of that client as that user
	lastFail      lastFail             // authFailure's last (address, user)
	touched       int32                // what doQueued read ahead (so that the reads are not optimised away)
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
	accounts      []AccountRow // the containment's records: the first maxAccountRows signals and the first maxAccountRows suspensions and lifts
	accountSigs   int          // signals among accounts
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
	// The first user the address tried (its number + 1; 0: none yet) and
	// its failures: most addresses try one user, whose pair is then
	// counted in the row the failure was counted in, not in a table of
	// 100,000s of pairs (a cache miss each on a mixed log). Users after
	// the first are counted in abuseState.userPairs.
	user  int32
	userN int64
}

// clientBlock is how many clients' rows are allocated at a time: a botnet's
// log has 100,000s, and one growing slice of them was copied at each growth.
const clientBlock = 4096

// stat returns client i's row.
func (s *abuseState) stat(i int32) *clientStat {
	u := uint32(i) // (numbers are never negative: a shift and a mask, not a signed division)
	return &s.clientStats[u/clientBlock][u%clientBlock]
}

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
	car := &arena{}
	s := &abuseState{
		localDomains: map[string]bool{}, ar: ar, car: car,
		users:         keyIndex{ar: car},
		relayByDomain: newCounter(car), dnsbl: newCounter(car), reasons: newCounter(ar),
		postscreen: newCounter(ar), ruleRejects: newCounter(ar),
		ndnRcpt: newCounter(ar), localSenders: map[string]bool{},
		egress: map[string]*egressStat{},
	}
	for _, d := range local {
		s.localDomains[strings.ToLower(d)] = true
	}
	s.once = logwatch.NewOnce(event.Discard{}) // (publish passes its events on)
	// (a report starts 100,000s of addresses: their attempts are reused
	// from the addresses each rotation drops, not allocated afresh)
	s.once.Reuse = true
	return s
}

// logged reads one line's message as the guard does (program is the syslog
// tag, "postfix/smtpd" for Postfix under any syslog name) and counts the
// event it stands for.
func (s *abuseState) logged(program, msg string, t time.Time) {
	s.queue(clientJob{kind: jobLogged, program: program, msg: msg, t: t, pre: s.pre})
}

// clientJob is a piece of the client work (see abuseState.batch). Its
// strings point into the line it is about.
type clientJob struct {
	kind         jobKind
	program, msg string
	t            time.Time
	pre          *parsed         // the message parsed ahead, if it was
	rec          *maillog.Record // relayguard's record (jobRelay, jobOwnReject, jobEvent)
	slot         bool            // pre holds (program, msg): the job was told by its batch
}

type jobKind uint8

const (
	jobLogged       jobKind = iota // logwatch's event of (program, msg), published through once
	jobUnsummarised                // the same, then the client's abuse (clientAbuse)
	jobRejected                    // a Postfix rejection of the client: clientAbuse of its event
	jobRelay                       // relayguard's refusal to relay for rec's client
	jobOwnReject                   // relayguard's other refusal of rec's client
	jobEvent                       // rec's event (a failed login), published through once
)

// queuedJob is a clientJob queued on a batch: nearly always only its kind
// and line (the rest is the batch's: the message parsed ahead, the line's
// time, its relayguard record), else the whole job in batch.jobX. It holds
// no pointer, so that queuing writes no pointer (a write barrier each
// while the collector runs).
type queuedJob struct {
	kind jobKind
	line int32 // in the batch
	x    int32 // the job in batch.jobX, or -1
}

// queue does j, or queues it on the current line's batch.
func (s *abuseState) queue(j clientJob) {
	b := s.batch
	if b == nil {
		s.do(&j)
		return
	}
	i := s.line
	var told bool // the batch tells j
	switch j.kind {
	case jobLogged, jobUnsummarised, jobRejected:
		if k := b.evAt[i]; k >= 0 && j.pre == &b.ev[k] && j.t == b.parsed[i].Time {
			// The slot's very strings (nearly always: a question told
			// without comparing bytes), or equal ones ("postfix/" + cmd).
			p := j.pre
			told = sameString(j.program, p.program) && sameString(j.msg, p.msg) || j.program == p.program && j.msg == p.msg
		}
	default:
		k := b.ownAt[i]
		told = k >= 0 && j.rec == &b.own[k].r && j.t == b.own[k].t
	}
	if told {
		b.jobs = append(b.jobs, queuedJob{j.kind, i, -1})
		return
	}
	b.jobs = append(b.jobs, queuedJob{j.kind, i, int32(len(b.jobX))})
	b.jobX = append(b.jobX, j)
}

// sameString reports whether a and b are the same bytes in memory.
func sameString(a, b string) bool {
	return len(a) == len(b) && unsafe.StringData(a) == unsafe.StringData(b)
}

// doQueued does the jobs queued on b.
//
// On a botnet's log the row of a job's client is a cache miss in a table of
// 100,000s of addresses, which stalled each lookup in turn. The jobs are
// done in groups: the group's events are parsed first (if the reader did
// not), then the table slot of each job's client is read, in a loop of
// nothing else so that the misses overlap, then the jobs are done.
func (s *abuseState) doQueued(b *batch) {
	for start := 0; start < len(b.jobs); start += jobGroup {
		group := b.jobs[start:min(start+jobGroup, len(b.jobs))]
		if x := &s.clients; x.slots != nil {
			// (the places first, then the reads in a loop short enough
			// for all of them to be in flight at once)
			var at [jobGroup]uint32
			for g, q := range group {
				if ip := s.clientOf(b, q); ip.IsValid() {
					at[g] = x.place(addrHash(keyOfAddr(ip))) // (where addrIndex.get looks for it)
				}
			}
			var n int32
			mask := uint32(len(x.slots) - 1)
			for _, i := range at[:len(group)] {
				n += x.slots[i].n + x.slots[(i+3)&mask].n // (and the next line, where a probe goes on)
			}
			s.touched += n
		}
		for _, q := range group {
			if q.x >= 0 {
				s.do(&b.jobX[q.x])
				continue
			}
			// The job the line stands for (queue checked it is).
			j := clientJob{kind: q.kind}
			switch q.kind {
			case jobLogged, jobUnsummarised, jobRejected:
				// (the line's time from its slot: b.parsed's line, 80
				// bytes a line, was a cache miss a job on a botnet's log)
				p := &b.ev[b.evAt[q.line]]
				j.pre, j.t, j.slot = p, p.t, true
			default:
				o := &b.own[b.ownAt[q.line]]
				j.rec, j.t = &o.r, o.t
			}
			s.do(&j)
		}
	}
	b.jobs = b.jobs[:0]
	clear(b.jobX) // (its strings point into the chunks)
	b.jobX = b.jobX[:0]
}

// jobGroup is how many jobs doQueued reads the client rows of at a time.
const jobGroup = 16

// clientOf is the client address of queued job q, if the job is the line's
// (the zero Addr: none, or not the line's). A line's event is parsed here
// when the reader did not: the parse is a function of the line, and do
// finds it done.
func (s *abuseState) clientOf(b *batch, q queuedJob) netip.Addr {
	if q.x >= 0 {
		return netip.Addr{}
	}
	switch q.kind {
	case jobLogged, jobUnsummarised, jobRejected:
		p := &b.ev[b.evAt[q.line]]
		if !p.done {
			p.ok = logwatch.ParseMessageTo(&p.e, p.program, p.msg)
			p.done = true
		}
		if p.ok {
			return p.e.IP
		}
		return netip.Addr{}
	}
	return b.own[b.ownAt[q.line]].r.Client
}

// do does a piece of the client work.
func (s *abuseState) do(j *clientJob) {
	switch j.kind {
	case jobLogged, jobUnsummarised, jobRejected:
		// The line's slot holds the question (always so for a job the
		// batch told: doQueued made j from it): its answer is used in
		// place, parsed at most once (the slot is then marked as no longer
		// holding the answer, so that another question of the line parses
		// it again). Else the event is parsed on doOther's stack: one here
		// was a ~200-byte clearing per job.
		p := j.pre
		if p == nil || !j.slot && (p.program != j.program || p.msg != j.msg) {
			s.doOther(j)
			return
		}
		if !p.done {
			p.ok = logwatch.ParseMessageTo(&p.e, p.program, p.msg)
		}
		p.done = false
		if p.ok {
			s.doEvent(j, &p.e)
		}
	case jobRelay:
		r := j.rec
		dom := "<>"
		if at := strings.LastIndexByte(r.Rcpt, '@'); at >= 0 {
			dom = strings.ToLower(r.Rcpt[at+1:])
		}
		s.relayAttempt(r.Client, dom)
	case jobOwnReject:
		r := j.rec
		if r.Client.IsValid() {
			s.client(r.Client).rejects++
		}
		if list := dnsblOf(r.Rule, r.Text); list != "" {
			s.dnsbl.inc(list)
		}
	case jobEvent:
		if e, ok := j.rec.Event(); ok { // as the guard reads it
			e.Time = j.t
			s.publish(&e)
		}
	}
}

// doOther does job j of a line whose slot does not hold j's question: its
// event is parsed here, on the stack (no write barrier while the collector
// runs).
func (s *abuseState) doOther(j *clientJob) {
	var e event.Event
	if logwatch.ParseMessageTo(&e, j.program, j.msg) {
		s.doEvent(j, &e)
	}
}

// doEvent counts e, logwatch's event of job j's message, which publish
// may change in place (the pairing).
func (s *abuseState) doEvent(j *clientJob, e *event.Event) {
	if j.kind == jobRejected {
		if e.IP.IsValid() {
			s.clientAbuse(e)
		}
		return
	}
	if e.Time.IsZero() {
		e.Time = j.t
	}
	s.publish(e)
	if j.kind == jobUnsummarised && e.IP.IsValid() {
		s.clientAbuse(e)
	}
}

// parsed is a message the reading goroutine (ReadLines) found logwatch
// will be asked about: the question (program, msg) is set there, the
// answer (e, ok) by the first parse of the slot, in the client stage that
// reads it. Parsing it in the reader made the reader the pipeline's
// longest stage and sent each ~200-byte event from one core to the other.
type parsed struct {
	program, msg string
	e            event.Event
	t            time.Time // the line's time (its logline.Line's)
	ok           bool
	done         bool // e and ok are logwatch's answer (a reused slot: false)
	dovecot      bool // the question is a Dovecot line's (Program, Message): readLines queues its job without add
}

// publish counts an event as the guard does: through the pairing of failed
// logins (logwatch.Once, which drops or changes e as it would before
// passing it on), then authentication failures and logins. Relay attempts,
// DNS list and other rejections are counted with the rejection's pflogsumm
// key (smtpdReject).
func (s *abuseState) publish(e *event.Event) {
	if !s.once.Pair(e) {
		return
	}
	switch e.Kind {
	case event.AuthFailure:
		s.authFailure(e.IP, e.User, int64(max(e.Attempts, 1))) // (e.Count(): a copy of the event)
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
	var k addrKey // (the table's key has no pointer: nothing for the collector to trace)
	if ip.IsValid() {
		k = keyOfAddr(ip)
	}
	i, ok := s.clients.get(k)
	if !ok {
		if i%clientBlock == 0 {
			s.clientStats = append(s.clientStats, make([]clientStat, clientBlock))
		}
		*s.stat(i) = clientStat{addr: k.as16()}
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
	// The lines of one login (Dovecot's passdb line per attempt, then the
	// login process's summary) name the same address and user one after
	// the other: their client and pair numbers are kept (numbers never
	// change), and three table lookups saved.
	f := &s.lastFail
	if f.ok && f.ip == ip && f.user == user {
		st := s.stat(f.client)
		st.auth += n
		switch {
		case f.pair >= 0:
			s.userPairN[f.pair] += n
		case f.pair == pairInRow:
			st.userN += n
		}
		return
	}
	i := s.clientNumber(ip)
	st := s.stat(i)
	st.auth += n
	// (field by field: the struct written whole was built on the stack and
	// copied in 16-byte moves, each stalled on the stores before it)
	f.ok, f.ip, f.user, f.client, f.pair = true, ip, "", i, -1
	if user == "" {
		return
	}
	u, _ := s.users.get(user)
	f.user = s.users.key(u) // (the table's copy: user points into the line)
	switch st.user {
	case 0:
		st.user, st.userN = u+1, n
		f.pair = pairInRow
		return
	case u + 1:
		st.userN += n
		f.pair = pairInRow
		return
	}
	j, ok := s.userPairs.get(uint64(i)<<32 | uint64(u))
	if !ok {
		s.userPairN = append(s.userPairN, 0)
	}
	s.userPairN[j] += n
	f.pair = j
}

// pairInRow is lastFail.pair for a pair counted in its client's row
// (clientStat.user).
const pairInRow = -2

// lastFail is the last failed authentication authFailure counted: its
// address and user, and their numbers (pair -1: no user; pairInRow: the
// client's row counts the pair).
type lastFail struct {
	ok           bool
	ip           netip.Addr
	user         string
	client, pair int32
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
	s.queue(clientJob{kind: jobRejected, program: program, msg: msg, t: t, pre: s.pre})
}

// unsummarised counts the abuse of a Postfix line that pflogsumm's
// sections do not read (another instance's syslog name): everything but
// the rejection reasons, which are pflogsumm's.
func (s *abuseState) unsummarised(program, msg string, t time.Time) {
	s.queue(clientJob{kind: jobUnsummarised, program: program, msg: msg, t: t, pre: s.pre})
}

// clientAbuse counts a relay attempt (once per client: the subnet table
// adds relay attempts and other rejections), a DNS list refusal or another
// rejection of the client e names.
func (s *abuseState) clientAbuse(e *event.Event) {
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
