package report

import (
	"strconv"
	"strings"
	"time"
	"unsafe"

	"github.com/relayguard/relayguard/internal/maillog"
)

// ownParsed is a record of relayguard's own log parsed ahead of the
// counting, by the reading goroutine (ReadLines), with the time addOwn
// counts it at and that time's hour and day (the reader's clockCache:
// records come in order, and clock's date arithmetic per record cost more
// than the lookup).
type ownParsed struct {
	raw string
	r   maillog.Record
	ok  bool
	t   time.Time // r.Time, or the syslog line's time when r has none
	hr  int
	day dayKey
}

// uncounted reports whether addOwn counts nothing for a record of kind k:
// a connection opened or closed (serve writes both for every session: a
// third of its records). The reader does not read the rest of such a
// record (maillog.ParseToUnless).
func uncounted(k maillog.Kind) bool {
	return k == maillog.KindConnected || k == maillog.KindDisconnected
}

// addOwn counts one record of relayguard's own log (read by
// internal/maillog, the one reader of that vocabulary). serve's traffic
// gets the Grand Totals and sections Postfix's gets: an accepted message is
// received, each delivery record is delivered, deferred or bounced, each
// refusal is rejected. The syslog time t is used when the record has no
// time of its own.
func (a *Analyzer) addOwn(raw string, t time.Time) {
	if p := a.preOwn; p != nil && p.raw == raw {
		if p.ok && !p.t.IsZero() && a.inRange(p.t) {
			a.countOwn(&p.r, p.t, p.hr, p.day) // (a pointer: a record is ~600 bytes)
		}
		return
	}
	r, ok := maillog.Parse(raw)
	if !ok {
		return
	}
	if t = ownTime(&r, t); t.IsZero() || !a.inRange(t) {
		return
	}
	hr, day := clock(t)
	a.countOwn(&r, t, hr, day)
}

// ownTime is the time a record is counted at: its own (with its own
// offset: the wall clock written in the log), else the syslog line's,
// syslog.
func ownTime(r *maillog.Record, syslog time.Time) time.Time {
	if !r.Time.IsZero() {
		return r.Time
	}
	return syslog
}

// countOwn counts record r at time t, of hour hr and day day.
func (a *Analyzer) countOwn(r *maillog.Record, t time.Time, hr int, day dayKey) {
	s := a.abuse
	switch r.Kind {
	case maillog.KindAccepted:
		a.seen(t, day)
		a.received++
		a.rcvHr[hr]++
		a.dayRow()[0]++
		s.accepted++
		q := a.q(r.ID)
		q.whence = r.Client.String()
		if r.User != "" {
			q.local = true
		}
		a.qmgrFrom(q, r.From, r.Size)
	case maillog.KindDelivered, maillog.KindDeferred, maillog.KindBounced:
		a.seen(t, day)
		addr := a.lowerDomain(r.Rcpt)
		dom := addr
		if i := strings.IndexByte(addr, '@'); i > 0 {
			dom = addr[i+1:]
		}
		q := a.queue.get(r.ID)
		s.delivery(q, addr)
		switch r.Kind {
		case maillog.KindDelivered:
			a.sent(q, r.ID, addr, dom, 0, hr)
		case maillog.KindDeferred:
			if a.opt.DeferralDetail != 0 {
				a.deferralD.add("relayguard", a.reason(r.Reply, 65))
			}
			a.deferral(q, r.ID, dom, 0, hr)
		default:
			if a.opt.BounceDetail != 0 {
				a.bounceD.add(dom, a.reason(r.Reply, 66))
			}
			a.bounce(hr)
		}
	case maillog.KindDSNQueued:
		s.ndns++
		s.ndnPerHour[hr]++
		q := a.q(r.DSNID)
		q.ndn = true
		if r.Size > 0 { // its delivery's bytes, as qmgr's size= of Postfix's notices
			q.size = r.Size
		}
	case maillog.KindRejected, maillog.KindRelayDenied:
		a.seen(t, day)
		a.dayRow()[4]++
		a.rejHr[hr]++
		a.rejected++
		reason := a.ownReason(r)
		if a.opt.RejectDetail != 0 {
			// (the table copies a key it keeps: the client's text is made
			// in a scratch buffer)
			a.scratch = r.Client.AppendTo(a.scratch[:0])
			client := unsafe.String(unsafe.SliceData(a.scratch), len(a.scratch))
			if !r.Client.IsValid() {
				client = r.Client.String() // ("invalid IP")
			}
			a.rejectD.add(rejectKey{typ: "relayguard", reason: reason, data: client})
		}
		s.reasons.inc(reason)
		if r.Kind == maillog.KindRelayDenied {
			s.queue(clientJob{kind: jobRelay, t: t, rec: r})
			break
		}
		s.ruleRejects.inc(r.Rule)
		s.queue(clientJob{kind: jobOwnReject, t: t, rec: r})
	case maillog.KindAuthFailed:
		s.queue(clientJob{kind: jobEvent, t: t, rec: r})
	case maillog.KindBanned:
		s.banCount++
		if len(s.bans) < 1000 {
			until := ""
			if !r.Until.IsZero() {
				until = r.Until.Format(time.RFC3339)
			}
			s.bans = append(s.bans, Ban{Time: t, Prefix: r.Prefix.String(), Reason: strings.Clone(r.Reason), Until: until})
		}
	case maillog.KindAccountSignal, maillog.KindAccountSuspended, maillog.KindAccountUnsuspended:
		// Signals and suspensions are bounded apart: a flood of signals (one
		// is logged at each check that finds one) must not push the
		// suspension, or its lift, out of the report.
		sig := r.Kind == maillog.KindAccountSignal
		if n := len(s.accounts) - s.accountSigs; sig && s.accountSigs < maxAccountRows || !sig && n < maxAccountRows {
			if sig {
				s.accountSigs++
			}
			// (the record's strings point into the read chunk: copies)
			row := AccountRow{Time: t, User: strings.Clone(r.User), Rule: strings.Clone(r.Rule),
				Reason: strings.Clone(r.Reason), By: strings.Clone(r.Text)}
			switch r.Kind {
			case maillog.KindAccountSignal:
				row.Event = "signal"
				row.By = "" // (a signal's record has no text)
			case maillog.KindAccountSuspended:
				row.Event = "suspended"
			default:
				row.Event = "unsuspended"
			}
			s.accounts = append(s.accounts, row)
		}
	case maillog.KindMilter:
		s.milterDecision(*r)
	case maillog.KindEgressBlocked:
		s.egressCount++
		if r.User != "" || r.UID >= 0 {
			s.actor(r.User, r.UID).egress++
		}
		who := r.Exe
		if r.User != "" {
			who = strings.TrimSpace(r.User + " " + r.Exe)
		}
		if r.UID >= 0 {
			who = strings.TrimSpace(who + " (uid " + strconv.Itoa(r.UID) + ")")
		}
		if who == "" {
			who = "(unknown)"
		}
		st := s.egress[who]
		if st == nil {
			st = &egressStat{dsts: newCounter(s.ar)}
			s.egress[strings.Clone(who)] = st
		}
		st.count++
		if r.Dst.IsValid() {
			st.dsts.inc(r.Dst.String())
		}
	}
}

// maxAccountRows bounds the containment's records a report lists (as the
// bans are bounded), signals and suspensions each: a signal is logged each
// time a check finds one, and a log may hold a long outage's repeats.
const maxAccountRows = 1000

// ownReason is the reason refusal r is counted under: its rule for
// serve's rejections, the reply text for a refusal to relay.
//
// Reasons are kept with what they were made of: an attack's refusals
// repeat a few rules and one reply text, and each cost a string or two
// (and the condensing of the text).
func (a *Analyzer) ownReason(r *maillog.Record) string {
	if r.Kind == maillog.KindRejected {
		if reason, ok := a.ruleReasons[r.Rule]; ok {
			return reason
		}
		reason := "relayguard: " + r.Rule
		if a.ruleReasons == nil {
			a.ruleReasons = map[string]string{}
		}
		if len(a.ruleReasons) < 256 { // (rules come from the configuration: a few)
			a.ruleReasons[strings.Clone(r.Rule)] = reason
		}
		return reason
	}
	m := &a.lastRelayReason
	if m.valid && r.Rule == m.rule && r.Code == m.code && r.Text == m.text {
		return m.reason
	}
	reason := relayReasonOf(r, a.opt.VerboseMsgDetail)
	// (the record's strings point into the read chunk: copies)
	*m = relayReason{valid: true, rule: strings.Clone(r.Rule), code: strings.Clone(r.Code),
		text: strings.Clone(r.Text), reason: strings.Clone(reason)}
	return m.reason
}

// relayReasonOf is the reason a refusal to relay r is counted under.
func relayReasonOf(r *maillog.Record, verbose bool) string {
	reason := r.Text
	if !verbose {
		// Condensed as Postfix's own reject lines are (procReject's
		// RCPT chain, on the line as Postfix ends it, with "; from=…"):
		// "<rcpt>: Relay access denied" would otherwise
		// make one row per recipient an attacker tried.
		line := r.Code + " " + r.Text + ";"
		if c := rejBlock(rejAddr(rejReason(rejProto(rejAngle(line))))); c != line {
			reason = c
		}
	}
	if reason == "" {
		reason = "relayguard: " + r.Rule
	}
	return reason
}

// relayReason is the last reason Analyzer.ownReason made for a refusal to
// relay, and of what.
type relayReason struct {
	valid                    bool
	rule, code, text, reason string
}

// reason condenses a reply for the deferral and bounce tables as
// pflogsumm condenses Postfix's.
func (a *Analyzer) reason(reply string, n int) string {
	if a.opt.VerboseMsgDetail {
		return reply
	}
	return stripCode(saidStringTrimmer(reply, n))
}

// dnsblOf is the DNS list a refusal names: "... blocked using LIST" in the
// reply (as Postfix and the policy engine word it), or a rule "dnsbl:LIST".
func dnsblOf(rule, text string) string {
	if i := strings.Index(text, " blocked using "); i >= 0 {
		list := text[i+len(" blocked using "):]
		if j := strings.IndexAny(list, ";, )"); j >= 0 {
			list = list[:j]
		}
		return list
	}
	list, _ := strings.CutPrefix(rule, "dnsbl:")
	if list == rule {
		return ""
	}
	return list
}
