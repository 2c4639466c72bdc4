package report

import (
	"strconv"
	"strings"
	"time"

	"github.com/relayguard/relayguard/internal/maillog"
)

// ownParsed is a record of relayguard's own log parsed ahead of the
// counting, by the reading goroutine (ReadLines).
type ownParsed struct {
	raw string
	r   maillog.Record
	ok  bool
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
	var r *maillog.Record // (a pointer: a record is ~600 bytes)
	if p := a.preOwn; p != nil && p.raw == raw {
		if p.ok {
			r = &p.r
		}
	} else if rec, ok := maillog.Parse(raw); ok {
		r = &rec
	}
	if r == nil {
		return
	}
	if !r.Time.IsZero() {
		t = r.Time // with its own offset: the wall clock written in the log
	}
	if t.IsZero() || !a.inRange(t) {
		return
	}
	hr, day := clock(t)
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
		a.qmgrFrom(r.ID, r.From, r.Size)
	case maillog.KindDelivered, maillog.KindDeferred, maillog.KindBounced:
		a.seen(t, day)
		addr := a.lowerDomain(r.Rcpt)
		dom := addr
		if i := strings.IndexByte(addr, '@'); i > 0 {
			dom = addr[i+1:]
		}
		q := a.queue[r.ID]
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
		client := r.Client.String()
		reason := r.Text
		if r.Kind == maillog.KindRelayDenied && !a.opt.VerboseMsgDetail {
			// Condensed as Postfix's own reject lines are (procReject's
			// RCPT chain, on the line as Postfix ends it, with "; from=…"):
			// "<rcpt>: Relay access denied" would otherwise
			// make one row per recipient an attacker tried.
			line := r.Code + " " + r.Text + ";"
			if c := rejBlock(rejAddr(rejReason(rejProto(rejAngle(line))))); c != line {
				reason = c
			}
		}
		if reason == "" || r.Kind == maillog.KindRejected {
			reason = "relayguard: " + r.Rule
		}
		if a.opt.RejectDetail != 0 {
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
