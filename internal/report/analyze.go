// Package report summarises Postfix, Dovecot and relayguard logs: the
// sections and numbers of pflogsumm 1.1.5 (same counting rules, same text
// layout) plus an abuse view (authentication failures, relay attempts, DNSBL
// rejections, backscatter, bans and egress blocks), rendered as text, JSON
// or self-contained HTML with inline SVG charts.
package report

import (
	"strconv"
	"strings"
	"time"
	"unsafe"

	"github.com/relayguard/relayguard/internal/logline"
	"github.com/relayguard/relayguard/internal/logwatch"
	"github.com/relayguard/relayguard/internal/maillog"
)

// Options select what is counted and how it is shown. Field names follow
// pflogsumm's options.
type Options struct {
	SyslogName       string // --syslog-name; default "postfix"
	IgnoreCase       bool   // -i, --ignore-case
	VerboseMsgDetail bool   // --verbose-msg-detail
	SMTPDStats       bool   // --smtpd-stats
	RejAddFrom       bool   // --rej-add-from
	ISODateTime      bool   // --iso-date-time
	ZeroFill         bool   // --zero-fill
	ProblemsFirst    bool   // --problems-first
	Quiet            bool   // -q: leave out empty sections
	// Limits: -1 is unlimited, 0 leaves the section out.
	HostLimit, UserLimit                                   int // -h, -u
	DeferralDetail, BounceDetail, RejectDetail, SMTPDetail int
	WarningDetail                                          int
	// AbuseLimit is the rows of the abuse view's tables by address, subnet
	// and domain (-1: all); -h caps it too. pflogsumm has no such tables;
	// on a botnet's log each would list hundreds of thousands of addresses.
	AbuseLimit int
	// Date range [From, To) on each line's own calendar date; zero means open.
	From, To  time.Time
	DateLabel string // shown as "Postfix log summaries for LABEL"
	// LocalDomains: recipient domains delivered here (for backscatter signs).
	LocalDomains []string
}

// DefaultAbuseLimit is the default length of the abuse view's tables.
const DefaultAbuseLimit = 100

// DefaultOptions are pflogsumm's defaults: everything, unlimited (the
// abuse view, which pflogsumm lacks, shows its top DefaultAbuseLimit).
func DefaultOptions() Options {
	return Options{SyslogName: "postfix", HostLimit: -1, UserLimit: -1, AbuseLimit: DefaultAbuseLimit, DeferralDetail: -1,
		BounceDetail: -1, RejectDetail: -1, SMTPDetail: -1, WarningDetail: -1}
}

// stat is one row of a host/domain or user table.
type stat struct {
	count, size, defers int64
	delaySum, delayMax  float64
}

// dayKey is yyyymmdd.
type dayKey int

// Analyzer accumulates log lines. Feed it with Add or ReadFrom, then call
// Summary. It is not safe for concurrent use.
type Analyzer struct {
	opt    Options
	prefix string // syslog name + "/"

	received, delivered, forwarded, deferred, deferrals, bounced int64
	rejected, rejectWarned, held, discarded                      int64
	bytesReceived, bytesDelivered                                int64

	days                                   map[dayKey]*[5]int64
	lastDay                                dayKey
	lastDayRow                             *[5]int64
	seenDays                               map[dayKey]bool
	rcvHr, dlvHr, dfrHr, bncHr, rejHr      [24]int64
	recipDom, sendDom, recipUser, sendUser *statTable
	queue                                  queueIndex // the messages in flight
	preReject                              *rejectKey // procReject of the current line, if the reader did it
	preOwn                                 *ownParsed // maillog.Parse of the current line, if the reader did it
	noMsgSize                              map[string]string
	deferralD, bounceD, smtpD              *tree2
	warnD, fatalD, panicD                  *tree2
	rejectD, warnRejD, holdD, discardD     *tree3
	master                                 *counter
	pend                                   *pending // updates of the large tables not made yet
	ar                                     *arena   // keys of every table
	scratch                                []byte
	ruleReasons                            map[string]string // addOwn's reasons by rule (ownReason)
	lastRelayReason                        relayReason
	domCache                               map[string]string
	smtpd                                  smtpdStats
	abuse                                  *abuseState
	lines, matched                         int64
	first, last                            time.Time
	ranged                                 bool // opt.From or opt.To is set (inRange)
	// parseAhead says where ReadLines has logwatch parse a line's event:
	// 0 in the reader when it is not the slowest stage, else in the client
	// stage; 1 always in the reader; -1 always in the client stage (tests).
	parseAhead int8
}

// NewAnalyzer returns an empty Analyzer.
func NewAnalyzer(opt Options) *Analyzer {
	if opt.SyslogName == "" {
		opt.SyslogName = "postfix"
	}
	ar, p := &arena{}, &pending{}
	return &Analyzer{
		opt: opt, prefix: opt.SyslogName + "/", ar: ar, pend: p, ranged: !opt.From.IsZero() || !opt.To.IsZero(),
		days: map[dayKey]*[5]int64{}, seenDays: map[dayKey]bool{},
		recipDom: newStatTable(ar), sendDom: newStatTable(ar),
		recipUser: newStatTable(ar), sendUser: newStatTable(ar),
		noMsgSize: map[string]string{},
		deferralD: newTree2(ar, p), bounceD: newTree2(ar, p), smtpD: newTree2(ar, p),
		warnD: newTree2(ar, p), fatalD: newTree2(ar, p), panicD: newTree2(ar, p),
		rejectD: newTree3(ar, p), warnRejD: newTree3(ar, p), holdD: newTree3(ar, p), discardD: newTree3(ar, p),
		master: newCounter(ar), domCache: map[string]string{},
		smtpd: newSMTPDStats(), abuse: newAbuseState(opt.LocalDomains, ar),
	}
}

// AddLine parses one raw log line and counts it. Lines in another shape are
// ignored (as pflogsumm does). The line may be reused by the caller after
// AddLine returns: everything kept is copied.
func (a *Analyzer) AddLine(p *logline.Parser, raw string) {
	a.lines++
	if maillog.IsRecord(raw) { // a relayguard log file (slog text or JSON handler)
		a.addOwn(raw, time.Time{})
		return
	}
	l, ok := p.Parse(raw)
	if !ok {
		return
	}
	a.Add(l)
}

// Add counts one parsed line.
func (a *Analyzer) Add(l logline.Line) {
	hr, day := clock(l.Time)
	a.add(&l, a.commandAt(l.Program), hr, day)
}

// clock is the hour and calendar day of t in t's own zone (the wall clock
// written in the log, as pflogsumm reads it).
func clock(t time.Time) (int, dayKey) {
	y, m, d := t.Date()
	return t.Hour(), dayKey(y*10000 + int(m)*100 + d)
}

// add counts the line *l, whose program's Postfix command starts at at
// (commandAt).
func (a *Analyzer) add(l *logline.Line, at int, hr int, day dayKey) {
	if !l.Time.IsZero() && !a.inRange(l.Time) {
		return
	}
	prog := l.Program
	if !strings.HasPrefix(prog, "postfix") {
		switch {
		case prog == "relayguard":
			a.addOwn(l.Message, l.Time)
			return
		case logwatch.Dovecot(prog):
			a.abuse.logged(prog, l.Message, l.Time)
			return
		}
	}
	if at < 0 {
		// Not read by pflogsumm (another instance's syslog_name, e.g.
		// postfix-incoming/smtpd), but the guard bans on it.
		if strings.HasPrefix(prog, "postfix") {
			a.abuse.unsummarised(prog, l.Message, l.Time)
		}
		return
	}
	cmd := prog[at:]
	msg := l.Message
	msg = stripSolarisID(msg)
	qid := msg[:wordEnd(msg)]
	if qid == "" {
		return
	}
	a.seen(l.Time, day)

	if cmd == "cleanup" && cleanupCheck(msg) {
		if verdict, part, rest, ok := cleanupVerdict(msg); ok {
			if !a.opt.VerboseMsgDetail {
				rest = cleanTail(rest)
			}
			rest = stringTrimmer(rest, 64, a.opt.VerboseMsgDetail)
			k := rejectKey{cmd, part, rest}
			switch verdict {
			case "reject", "milter-reject":
				a.rejectD.add(k)
				a.rejected++
			case "warning":
				a.warnRejD.add(k)
				a.rejectWarned++
			case "hold":
				a.holdD.add(k)
				a.held++
			case "discard":
				a.discardD.add(k)
				a.discarded++
			}
			a.rejHr[hr]++
			a.dayRow()[4]++
			a.abuse.reject(k, l.Time)
			return
		}
	}
	switch qid {
	case "warning", "fatal", "panic":
		// pflogsumm: everything after the last "warning: " (msg starts
		// with one; the forward search for another is the fast one).
		sep := severitySep(qid)
		reas := msg
		if r, ok := strings.CutPrefix(msg, sep); ok && !strings.Contains(r, sep) {
			reas = r
		} else if i := strings.LastIndex(msg, sep); i >= 0 {
			reas = msg[i+len(sep):]
		}
		if !a.opt.VerboseMsgDetail && len(reas) > 66 {
			// stringTrimmer into a scratch buffer: the table copies the
			// key only when it is new.
			a.scratch = append(append(a.scratch[:0], reas[:63]...), "..."...)
			reas = unsafe.String(&a.scratch[0], len(a.scratch))
		}
		switch qid {
		case "warning":
			a.warnD.add(cmd, reas)
			if cmd == "smtpd" { // SASL failures, non-SMTP commands
				a.abuse.logged("postfix/smtpd", msg, l.Time)
			}
		case "fatal":
			a.fatalD.add(cmd, reas)
		default:
			a.panicD.add(cmd, reas)
		}
		return
	case "reject", "reject_warning", "hold", "discard":
		a.smtpdReject(cmd, qid, msg, hr, l.Time)
		return
	}
	if cmd == "master" {
		text := msg
		if i := strings.LastIndex(msg, ": "); i >= 0 {
			text = msg[i+2:]
		}
		a.master.inc(text)
		return
	}
	if cmd == "smtpd" || cmd == "postscreen" {
		rest := msg[len(qid):]
		if strings.HasPrefix(rest, ": client=") && l.PID > 0 && isWord(qid) {
			client := rest[len(": client="):]
			if i := strings.IndexByte(client, ','); i >= 0 {
				client = client[:i]
			}
			a.received++
			a.rcvHr[hr]++
			a.dayRow()[0]++
			q := a.q(qid)
			q.whence = a.domain(client)
			a.abuse.received(q, rest)
			return
		}
		if l.PID > 0 && isWord(qid) && strings.HasPrefix(rest, ": ") {
			r := rest[2:]
			for _, typ := range [...]string{"reject", "reject_warning", "hold", "discard"} {
				if strings.HasPrefix(r, typ) && strings.HasPrefix(r[len(typ):], ": ") {
					a.smtpdReject(cmd, typ, msg, hr, l.Time)
					return
				}
			}
		}
		if a.opt.SMTPDStats && cmd == "smtpd" {
			a.smtpd.add(*l, msg, a)
		}
		if cmd == "postscreen" {
			a.abuse.postscreenVerdict(msg, l.Time)
		}
		return
	}
	a.delivery(cmd, qid, msg, hr, l.Time)
}

// command is the Postfix command pflogsumm reads a line of program under:
// it takes "postfix/CMD", "postfix/smtps/CMD", "postfix/submission/CMD"
// (and the same under --syslog-name), and "postfix" or "postfix-script"
// itself; ok is false for any other program.
func (a *Analyzer) command(prog string) (cmd string, ok bool) {
	at := a.commandAt(prog)
	if at < 0 {
		return "", false
	}
	return prog[at:], true
}

// commandAt is where command's cmd starts in prog, -1 if prog has none:
// the reader finds it once per line for the three places that ask
// (connectionLine, abuseProgram, add).
func (a *Analyzer) commandAt(prog string) int {
	var at int
	switch {
	case len(prog) >= 8 && prog[:8] == "postfix/":
		// The usual program, under any syslog name: compared as one word.
		at = 8
	case strings.HasPrefix(prog, a.prefix):
		at = strings.IndexByte(prog, '/') + 1
	case prog == "postfix" || prog == "postfix-script":
		return 0
	default:
		return -1
	}
	if cmd := prog[at:]; len(cmd) >= 6 && cmd[:6] == "smtps/" {
		at += 6
	} else if len(cmd) >= 11 && cmd[:11] == "submission/" {
		at += 11
	}
	return at
}

// cleanupCheck reports whether msg holds ": header ", ": body " or
// ": END-OF-MESSAGE " (a cleanup header or body check's verdict): one pass
// over its colons, where three searches of the whole line ran on every
// cleanup line (most are "QID: message-id=<...>", with one colon).
func cleanupCheck(msg string) bool {
	for i := 0; ; {
		j := strings.IndexByte(msg[i:], ':')
		if j < 0 {
			return false
		}
		i += j + 1
		if r := msg[i:]; strings.HasPrefix(r, " header ") || strings.HasPrefix(r, " body ") || strings.HasPrefix(r, " END-OF-MESSAGE ") {
			return true
		}
	}
}

// severitySep is "warning: ", "fatal: " or "panic: ".
func severitySep(s string) string {
	switch s {
	case "warning":
		return "warning: "
	case "fatal":
		return "fatal: "
	}
	return "panic: "
}

// seen counts a line that belongs to the summary, at t on day.
func (a *Analyzer) seen(t time.Time, day dayKey) {
	a.matched++
	// Most lines are dated the second of the line before: then, first
	// being set (and never after last), neither moves.
	if t != a.last || a.first.IsZero() {
		if a.first.IsZero() || t.Before(a.first) {
			a.first = t
		}
		if t.After(a.last) {
			a.last = t
		}
	}
	if day != a.lastDay { // (a day key is never 0)
		a.lastDay = day
		a.seenDays[day] = true
		a.lastDayRow = a.days[day]
		if a.lastDayRow == nil && a.opt.ZeroFill {
			a.lastDayRow = new([5]int64)
			a.days[day] = a.lastDayRow
		}
	}
}

func isWord(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c == '_' || '0' <= c && c <= '9' || 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z') {
			return false
		}
	}
	return s != ""
}

// domain is gimmeDomain, copied (see domainOf).
func (a *Analyzer) domain(client string) string {
	return strings.Clone(domainOf(client, a.domCache, 200000))
}

// domainOf is gimmeDomain(c): the usual shapes by hand, the others (the
// expressions, microseconds each) through cache, a bounded cache of their
// results (cleared past max entries). A cache of every client cost more
// than the hand-written matchers: on an attacker's log most clients come
// once. The result may point into c.
func domainOf(c string, cache map[string]string, max int) string {
	if d, ok := unknownClient(c); ok {
		return d
	}
	if d, ok := namedClient(c); ok {
		return d
	}
	if d, ok := cache[c]; ok {
		return d
	}
	if len(cache) > max {
		clear(cache)
	}
	d := strings.Clone(gimmeDomainRE(c))
	cache[strings.Clone(c)] = d
	return d
}

// dayRow is the per-day row of the current line's day, created on first use.
func (a *Analyzer) dayRow() *[5]int64 {
	if a.lastDayRow == nil {
		a.lastDayRow = new([5]int64)
		a.days[a.lastDay] = a.lastDayRow
	}
	return a.lastDayRow
}

func (a *Analyzer) smtpdReject(cmd, typ, msg string, hr int, t time.Time) {
	row := a.dayRow()
	row[4]++
	a.rejHr[hr]++
	var tree *tree3
	switch typ {
	case "reject":
		a.rejected++
		tree = a.rejectD
	case "reject_warning":
		a.rejectWarned++
		tree = a.warnRejD
	case "hold":
		a.held++
		tree = a.holdD
	default:
		a.discarded++
		tree = a.discardD
	}
	var k rejectKey
	if a.preReject != nil {
		k = *a.preReject
	} else {
		k = procReject(msg, a.opt.VerboseMsgDetail, a.opt.IgnoreCase, a.opt.RejAddFrom, a.domain)
	}
	if a.opt.RejectDetail != 0 {
		tree.add(k)
	}
	if typ == "reject" {
		a.abuse.smtpdReject(postfixProgram(cmd), msg, k, t)
	}
}

// postfixProgram is the syslog tag logwatch's parsers expect for a
// Postfix command under any syslog name.
func postfixProgram(cmd string) string {
	switch cmd {
	case "smtpd":
		return "postfix/smtpd"
	case "postscreen":
		return "postfix/postscreen"
	}
	return "postfix/" + cmd
}

// qstate is what is known about one queue ID.
type qstate struct {
	size     int64  // from qmgr's "from=<>, size=" (0: not seen)
	whence   string // client domain or "pickup" until the size line counts it
	deferred bool   // counted among deferred messages
	local    bool   // from pickup or an authenticated client (backscatter check)
	ndn      bool   // a non-delivery notice
}

// q returns the state of a queue ID, creating it.
func (a *Analyzer) q(qid string) *qstate { return a.queue.add(qid) }

// lowerDomain lower-cases an address from its first "@" on (pflogsumm's
// default), or the whole address with --ignore-case.
func (a *Analyzer) lowerDomain(addr string) string {
	if a.opt.IgnoreCase {
		return strings.ToLower(addr)
	}
	if i := strings.IndexByte(addr, '@'); i >= 0 && i < len(addr)-1 {
		if hasUpper(addr[i:]) {
			return addr[:i] + strings.ToLower(addr[i:])
		}
	}
	return addr
}

func hasUpper(s string) bool {
	for i := 0; i < len(s); i++ {
		if 'A' <= s[i] && s[i] <= 'Z' || s[i] >= 0x80 {
			return true
		}
	}
	return false
}

// statTable is a host/domain or user table: a stat per key, in a slice
// indexed by the key's number (no pointer per entry).
type statTable struct {
	keys keyIndex
	rows []stat
}

func newStatTable(ar *arena) *statTable { return &statTable{keys: keyIndex{ar: ar}} }

// getHashed returns k's row, created on first use; h is keyHash(k). The
// pointer is valid until the next lookup in the same table.
func (t *statTable) getHashed(k string, h uint32) *stat {
	i, ok := t.keys.getHashed(k, h)
	if !ok {
		t.rows = append(t.rows, stat{})
	}
	return &t.rows[i]
}

// delivery handles qmgr "from=<>, size=", delivery agents' "to=<>,
// relay=, ..., status=", pickup and smtp connection failures.
func (a *Analyzer) delivery(cmd, qid, msg string, hr int, t time.Time) {
	// (the keys found at the few '<' of a line: strings.Index stopped at
	// each 'f' and 't' of the long delivery lines)
	if i := logwatch.IndexAngled(msg, "from=<"); i >= 0 {
		rest := msg[i+6:]
		if j := strings.IndexByte(rest, '>'); j >= 0 && strings.HasPrefix(rest[j:], ">, size=") {
			addr := rest[:j]
			num := rest[j+8:]
			k := 0
			for k < len(num) && num[k] >= '0' && num[k] <= '9' {
				k++
			}
			if k > 0 {
				size, _ := strconv.ParseInt(num[:k], 10, 64)
				a.qmgrFrom(a.q(qid), addr, size)
				return
			}
		}
	}
	if i := logwatch.IndexAngled(msg, "to=<"); i >= 0 {
		if a.recipient(cmd, qid, msg[i+4:], hr) {
			return
		}
	}
	if cmd == "qmgr" && len(msg) == len(qid)+len(": removed") && strings.HasSuffix(msg, ": removed") {
		// The message is gone: forget its queue ID, so that the table holds
		// only messages in flight. (pflogsumm keeps every size it saw, so a
		// short queue ID that Postfix reuses later in the same log loses its
		// sender there; here it counts as the new message it is.)
		a.queue.remove(qid)
		return
	}
	if cmd == "pickup" && (strings.Contains(msg, ": sender=") || strings.Contains(msg, ": uid=")) {
		a.received++
		a.rcvHr[hr]++
		a.dayRow()[0]++
		q := a.q(qid)
		q.whence = "pickup"
		q.local = true
		return
	}
	if cmd == "smtp" && a.opt.SMTPDetail != 0 {
		// The substring tests only skip the expressions where they cannot match.
		var m []string
		if strings.Contains(msg, "; address ") {
			m = reSMTPConn1.FindStringSubmatch(msg)
		}
		if m == nil && strings.Contains(msg, " (port ") {
			m = reSMTPConn2.FindStringSubmatch(msg)
		}
		if m != nil {
			a.smtpD.add(strings.ToLower(m[2]), m[1])
		}
	}
	if cmd == "bounce" {
		a.bounceNotice(msg, t)
	}
}

// qmgrFrom counts the sender addr and size of message q (a.q of its ID).
func (a *Analyzer) qmgrFrom(q *qstate, addr string, size int64) {
	if q.size != 0 { // avoid double-counting (a size of 0 is not remembered, as in pflogsumm)
		return
	}
	if addr != "" {
		addr = a.lowerDomain(addr)
	} else {
		addr = "from=<>"
	}
	q.size = size
	a.abuse.sender(q, addr)
	whence := q.whence
	if whence == "" {
		return
	}
	dom := addr
	if i := strings.IndexByte(addr, '@'); i > 0 && i < len(addr)-1 {
		dom = addr[i+1:]
	} else if whence != "pickup" {
		dom = whence
	}
	a.pend.stat(a.sendDom, pendFrom, dom, size, 0)
	a.pend.stat(a.sendUser, pendFrom, addr, size, 0)
	a.bytesReceived += size
	q.whence = "" // counted once, as pflogsumm deletes it
}

// recipient parses what follows "to=<" and reports whether the line had the
// delivery-status shape.
func (a *Analyzer) recipient(cmd, qid, s string, hr int) bool {
	j := strings.IndexByte(s, '>')
	if j < 0 {
		return false
	}
	addr, rest := s[:j], s[j+1:]
	if !strings.HasPrefix(rest, ", ") {
		return false
	}
	rest = rest[2:]
	if r, ok := strings.CutPrefix(rest, "orig_to=<"); ok {
		k := strings.Index(r, ">, ")
		if k < 0 || strings.IndexByte(r[:k], '>') >= 0 {
			return false
		}
		rest = r[k+3:]
	}
	relay, rest, ok := cutField(rest, "relay=")
	if !ok {
		return false
	}
	if r, ok := strings.CutPrefix(rest, "conn_use="); ok {
		k := strings.Index(r, ", ")
		if k <= 0 {
			return false
		}
		rest = r[k+2:]
	}
	delayS, rest, ok := cutField(rest, "delay=")
	if !ok {
		return false
	}
	if _, r, ok := cutField(rest, "delays="); ok {
		rest = r
	}
	if _, r, ok := cutField(rest, "dsn="); ok {
		rest = r
	}
	r, ok := strings.CutPrefix(rest, "status=")
	if !ok {
		return false
	}
	k := 0
	for k < len(r) && r[k] != ' ' && r[k] != '\t' {
		k++
	}
	if k == 0 {
		return false
	}
	status, tail := r[:k], r[k:]
	delay := perlNum(delayS)
	addr = a.lowerDomain(addr)
	if a.opt.IgnoreCase {
		relay = strings.ToLower(relay)
	}
	dom := addr
	if i := strings.IndexByte(addr, '@'); i > 0 {
		dom = addr[i+1:]
	}
	q := a.queue.get(qid)
	a.abuse.delivery(q, addr)
	switch status {
	case "sent":
		if strings.Contains(tail, "forwarded as ") {
			a.forwarded++
			return true
		}
		a.sent(q, qid, addr, dom, delay, hr)
	case "deferred":
		if a.opt.DeferralDetail != 0 {
			reas := ""
			if i := strings.Index(tail, "("); i >= 0 && strings.HasPrefix(r, "deferred (") {
				reas = tail[i+1:]
				if e := strings.IndexByte(reas, ')'); e >= 0 {
					reas = reas[:e]
				}
			}
			if !a.opt.VerboseMsgDetail {
				reas = saidStringTrimmer(reas, 65)
				reas = stripCode(reas)
				reas = strings.TrimPrefix(reas, "connect to ")
			}
			a.deferralD.add(cmd, reas)
		}
		a.deferral(q, qid, dom, delay, hr)
	case "bounced":
		if a.opt.BounceDetail != 0 {
			reas := ""
			if strings.HasPrefix(r, "bounced (") {
				if e := strings.LastIndexByte(tail, ')'); e > 1 {
					reas = tail[2:e]
				}
			}
			if !a.opt.VerboseMsgDetail {
				reas = saidStringTrimmer(reas, 66)
				reas = stripCode(reas)
			}
			a.bounceD.add(relay, reas)
		}
		a.bounce(hr)
	}
	return true
}

// sent counts one delivered recipient (addr in domain dom) of message qid
// (state q, nil if unknown).
func (a *Analyzer) sent(q *qstate, qid, addr, dom string, delay float64, hr int) {
	var sz int64 // (0: unknown)
	if q != nil && q.size != 0 {
		sz = q.size
		a.bytesDelivered += sz
	} else {
		a.noMsgSize[strings.Clone(qid)] = strings.Clone(addr)
	}
	a.pend.stat(a.recipDom, pendSentDom, dom, sz, delay)
	a.pend.stat(a.recipUser, pendSentUser, addr, sz, 0)
	a.dlvHr[hr]++
	a.dayRow()[1]++
	a.delivered++
}

// deferral counts one deferred delivery attempt to domain dom; the message
// counts once among deferred messages.
func (a *Analyzer) deferral(q *qstate, qid, dom string, delay float64, hr int) {
	a.dfrHr[hr]++
	a.dayRow()[2]++
	a.deferrals++
	if q == nil {
		q = a.q(qid)
	}
	if !q.deferred {
		q.deferred = true
		a.deferred++
	}
	a.pend.stat(a.recipDom, pendDefer, dom, 0, delay)
}

// bounce counts one bounced recipient.
func (a *Analyzer) bounce(hr int) {
	a.bncHr[hr]++
	a.dayRow()[3]++
	a.bounced++
}

// inRange reports whether t's calendar date is in [From, To).
func (a *Analyzer) inRange(t time.Time) bool { return !a.ranged || a.inDates(t) }

// inDates is inRange of an Analyzer with a date range.
func (a *Analyzer) inDates(t time.Time) bool {
	y, m, d := t.Date()
	day := time.Date(y, m, d, 0, 0, 0, 0, time.UTC)
	if !a.opt.From.IsZero() && day.Before(a.opt.From) {
		return false
	}
	if !a.opt.To.IsZero() && !day.Before(a.opt.To) {
		return false
	}
	return true
}
