package smtpd

import (
	"context"
	"fmt"
	"net/netip"
	"time"

	"github.com/relayguard/relayguard/internal/limits"
)

// This file holds the limits that keep one client from costing the server
// without bound: the delay of repeated errors, the per-client rate of
// unknown recipients (recipient enumeration), the time budget of a
// session's commands, the overall DATA deadline, and the free-space check
// at MAIL.

// errorDelay is how long the reply to the session's n-th error waits
// (Postfix smtpd_soft_error_limit / smtpd_error_sleep_time, growing): 0 up
// to limits.soft_error_limit, then (n - soft_error_limit) × error_delay, at
// most 10s. The delay makes guessing (recipients, commands) slow, and the
// hard limit (max_bad_commands) ends it.
func (ss *session) errorDelay(n int) time.Duration {
	over := n - ss.cfg.Limits.SoftErrorLimit
	if over <= 0 || ss.cfg.Limits.ErrorDelay <= 0 {
		return 0
	}
	return min(time.Duration(over)*ss.cfg.Limits.ErrorDelay.D(), 10*time.Second)
}

// sleep waits d, or until ctx ends. Pending replies are sent first.
func (ss *session) sleep(ctx context.Context, d time.Duration) {
	if d <= 0 {
		return
	}
	ss.flush()
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
	case <-ctx.Done():
	}
}

// rateKey is the key of a client's unknown-recipient rate: its address, or
// its /64 for IPv6 (one end site usually holds a whole /64 and can rotate
// addresses in it).
func rateKey(ip netip.Addr) string {
	p := netip.PrefixFrom(ip, ip.BitLen())
	if ip.Is6() {
		p, _ = ip.Prefix(64)
	}
	return "rcpt-unknown:" + p.String()
}

// countsUnknownRecipients reports whether the session's unknown recipients
// are rated: an unauthenticated client outside mynetworks.
func (ss *session) countsUnknownRecipients() bool {
	return ss.cfg.Limits.UnknownRcptLimit > 0 && ss.authUser == "" && !ss.trusted
}

// unknownRecipients adds delta to the client's unknown recipients and
// returns their number in the rolling window. A counter failure is logged
// and reads as 0 (the limit is not applied; the session's own limits are).
func (ss *session) unknownRecipients(ctx context.Context, delta int64) float64 {
	w := ss.cfg.Limits.UnknownRcptWindow.D()
	now := time.Now()
	cur, prev, err := ss.s.deps.Counter.Add(ctx, rateKey(ss.ip), w, now, delta)
	if err != nil {
		ss.log.Warn("unknown-recipient counter unavailable", "err", err)
		return 0
	}
	return limits.Estimate(cur, prev, w, now)
}

// rcptRateReply refuses every RCPT of a client past
// limits.unknown_recipient_limit, valid or not, so that the replies tell an
// enumerator nothing more; 450 (temporary) so that a real sender with stale
// addresses retries later.
func (ss *session) rcptRateReply(ctx context.Context) Reply {
	if !ss.countsUnknownRecipients() {
		return Reply{}
	}
	if n := ss.unknownRecipients(ctx, 0); n < float64(ss.cfg.Limits.UnknownRcptLimit) {
		return Reply{}
	}
	return limitReached(450, "4.7.1", "limits.unknown_recipient_limit",
		fmt.Sprintf("%d per %s", ss.cfg.Limits.UnknownRcptLimit, ss.cfg.Limits.UnknownRcptWindow.D()),
		"Error: too many unknown recipients from "+ss.ip.String()+", try again later")
}

// spaceReply refuses a transaction when the spool's file system has less
// than spool.min_free plus 1.5 times the declared size free (Postfix's
// queue_minfree check, 452 4.3.1 as Postfix answers), so that a full disk
// is found at MAIL and not after the whole message was sent.
func (ss *session) spaceReply(declared int64) Reply {
	free, err := ss.s.deps.Spool.Free()
	if err != nil {
		ss.log.Error("free space unknown", "err", err)
		return Reply{} // the spool write will tell
	}
	need := ss.cfg.Spool.MinFree + declared + declared/2
	if free >= need {
		return Reply{}
	}
	return limitReached(452, "4.3.1", "spool.min_free", ss.cfg.Spool.MinFree, "Insufficient system storage")
}

// startBudget starts (or, after an accepted message, restarts) the time
// budget of the session's commands (limits.command_budget).
func (ss *session) startBudget() {
	if b := ss.cfg.Limits.CommandBudget.D(); b > 0 {
		ss.budgetEnd = time.Now().Add(b)
	}
}

// commandDeadline is when the next command line must have arrived:
// command_timeout from now, or the end of the command budget if sooner.
func (ss *session) commandDeadline() time.Time {
	d := time.Now().Add(ss.cfg.Limits.CommandTimeout.D())
	if !ss.budgetEnd.IsZero() && ss.budgetEnd.Before(d) {
		return ss.budgetEnd
	}
	return d
}

// timeoutReply is the reply to a client that did not send its command in
// time: RFC 5321 §4.5.3.2.7's 421, logged as the budget's limit when that
// is what ran out.
func (ss *session) timeoutReply() Reply {
	r := reply(421, "4.4.2", ss.cfg.Hostname+" Error: timeout exceeded").closing()
	if !ss.budgetEnd.IsZero() && !time.Now().Before(ss.budgetEnd) {
		r.Rule, r.Limit = "limits.command_budget", ss.cfg.Limits.CommandBudget.D()
	}
	return r
}

// dataDeadline is the overall deadline of message data whose current read
// (DATA, or one BDAT chunk) started at start, after n bytes of it:
// data_timeout, extended by one second per min_data_rate bytes received
// (Postfix 3.7 smtpd_per_request_deadline), so that a trickle cannot hold a
// session while a slow but steady sender gets through. The time and bytes
// of the reads before it since the last accepted message count too
// (dataSpent, dataBytes), so that a trickle cut into many BDAT chunks is
// held to the same deadline as one DATA.
func (ss *session) dataDeadline(start time.Time, n int64) time.Time {
	d := start.Add(ss.cfg.Limits.DataTimeout.D() - ss.dataSpent)
	if r := ss.cfg.Limits.MinDataRate; r > 0 {
		d = d.Add(time.Duration(ss.dataBytes+n) * time.Second / time.Duration(r))
	}
	return d
}

// dataRead records a read of message data that started at start and
// brought n bytes, for dataDeadline.
func (ss *session) dataRead(start time.Time, n int64) {
	ss.dataSpent += time.Since(start)
	ss.dataBytes += n
}

// dataDeadlineReply is the reply when message data did not arrive by its
// overall deadline: nothing was acknowledged; the client is too slow to keep.
func (ss *session) dataDeadlineReply() Reply {
	return limitReached(421, "4.4.2", "limits.data_timeout", ss.cfg.Limits.DataTimeout.D(),
		ss.cfg.Hostname+" Error: timeout exceeded").closing()
}
