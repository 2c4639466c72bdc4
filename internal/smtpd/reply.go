package smtpd

import (
	"cmp"
	"context"
	"strconv"
	"strings"
	"time"

	"github.com/relayguard/relayguard/internal/event"
	"github.com/relayguard/relayguard/internal/maillog"
)

// Reply is one SMTP reply (RFC 5321 §4.2) together with what relayguard
// records about it, in the spirit of maddy's exterrors.SMTPError: a handler
// returns a Reply, and session.send is the one place that logs it (through
// internal/maillog), counts it (metrics), publishes it (guard events),
// applies the session limits it counts toward, and writes it.
type Reply struct {
	// Code is the reply code (RFC 5321 §4.2.3). 0 writes nothing: the
	// session ends silently (Close) or the reply was already sent.
	Code int
	// Enhanced is the enhanced status code (RFC 3463, RFC 2034), "" for
	// none; it is written on every line.
	Enhanced string
	// Text is the reply text; "\n" separates the lines of a multi-line
	// reply (RFC 5321 §4.2.1). Client-supplied text must go through
	// oneLine first.
	Text string

	// Rule is what decided a refusal: a built-in check
	// ("reject_unlisted_recipient", "bare_newline"), a policy rule, or a
	// limit's config key ("limits.max_recipients"). A reply with a Rule
	// is logged, counted in relayguard_smtp_rejections_total{reason} and,
	// unless Event says otherwise, published as a guard event.
	Rule string
	// Limit is the configured value when Rule is a limit's config key:
	// the reply is logged as "limit reached" (maillog.LimitReached) and
	// publishes no event unless Event is set.
	Limit any
	// Rcpt is the recipient a RCPT refusal is about.
	Rcpt string
	// Detail is the event's detail when it is not Rcpt or Text (e.g.
	// "pregreet").
	Detail string
	// Event overrides the kind of event published: "" derives it from
	// Rule (event.RelayDenied for reject_unauth_destination, event.Reject
	// for any other rule, none for limits and local failures).
	Event event.Kind
	// Err is the local failure behind a temporary reply (a database or
	// spool error): logged with Rule, never sent to the client.
	Err error
	// Bad counts the reply toward limits.max_bad_commands (Postfix
	// smtpd_hard_error_limit); past it the session ends with 421. A
	// refusal with a Rule counts without it (see countsAsError).
	Bad bool
	// Close ends the session after this reply.
	Close bool

	// auth is set on the reply that ends an AUTH exchange.
	auth *authOutcome
}

// authOutcome is the result of an AUTH command, for the one place that
// logs, counts and publishes it.
type authOutcome struct {
	ok     bool
	mech   string
	user   string // attempted or authenticated username (never a password)
	reason string // why it failed
}

// Rules that name what decided a refusal, where more than one place needs
// the name.
const (
	ruleRelay   = "reject_unauth_destination"
	ruleNonSMTP = "non_smtp_command"
)

// reply is an ordinary reply.
func reply(code int, enhanced, text string) Reply {
	return Reply{Code: code, Enhanced: enhanced, Text: text}
}

// badCommand is a reply to a command that was wrong (syntax, sequence): it
// counts toward limits.max_bad_commands.
func badCommand(code int, enhanced, text string) Reply {
	return Reply{Code: code, Enhanced: enhanced, Text: text, Bad: true}
}

// refuse is a refusal decided by rule.
func refuse(code int, enhanced, rule, text string) Reply {
	return Reply{Code: code, Enhanced: enhanced, Text: text, Rule: rule}
}

// limitReached is a refusal because the limit of config key key (set to
// value) bit.
func limitReached(code int, enhanced, key string, value any, text string) Reply {
	return Reply{Code: code, Enhanced: enhanced, Text: text, Rule: key, Limit: value}
}

// localFailure is a temporary refusal because of a failure on our side.
func localFailure(code int, enhanced, rule, text string, err error) Reply {
	return Reply{Code: code, Enhanced: enhanced, Text: text, Rule: rule, Err: err}
}

// hangUp ends the session without a reply.
var hangUp = Reply{Close: true}

// codes is "554 5.7.1" as logged.
func (r Reply) codes() string {
	if r.Code == 0 {
		return ""
	}
	if r.Enhanced == "" {
		return strconv.Itoa(r.Code)
	}
	return strconv.Itoa(r.Code) + " " + r.Enhanced
}

// send records r (log, metrics, event), writes it, and applies the session
// limits it counts toward. It is the only way a reply reaches the client.
func (ss *session) send(ctx context.Context, r Reply) {
	if r.auth != nil {
		ss.recordAuth(ctx, r)
	} else {
		ss.record(ctx, r)
	}
	bad := r.countsAsError()
	if bad {
		ss.badCmds++
		ss.sleep(ctx, ss.errorDelay(ss.badCmds))
	}
	ss.write(r)
	if r.Close {
		ss.closing = true
		return
	}
	if bad {
		if ss.badCmds >= ss.cfg.Limits.MaxBadCommands {
			ss.send(ctx, Reply{Code: 421, Enhanced: "4.7.0", Text: ss.cfg.Hostname + " Error: too many errors",
				Rule: "limits.max_bad_commands", Limit: ss.cfg.Limits.MaxBadCommands,
				Event: event.ProtocolAbuse, Detail: "too many errors", Close: true})
		}
	}
	if r.auth != nil && !r.auth.ok && ss.authFails >= ss.cfg.Limits.MaxAuthFailures {
		ss.send(ctx, limitReached(421, "4.7.0", "limits.max_auth_failures", ss.cfg.Limits.MaxAuthFailures,
			ss.cfg.Hostname+" Error: too many failed authentications").closing())
	}
}

// countsAsError reports whether r is an error of the session, counted
// toward limits.soft_error_limit (the delays) and limits.max_bad_commands
// (the end): a bad command, and every command that a rule or a limit
// refused, as Postfix's smtpd counts every rejected command toward
// smtpd_hard_error_limit — so that one session cannot try thousands of
// relay targets, or go on after the unknown-recipient rate bit, at full
// speed. Not counted: a failure on our side (Err, or an enhanced code of
// class X.3 "mail system status" (RFC 3463 §3.4) such as spool.min_free's
// 452 4.3.1: the client did nothing wrong), the outcome of AUTH
// (limits.max_auth_failures counts those) and a reply that ends the
// session anyway.
func (r Reply) countsAsError() bool {
	if r.Bad {
		return true
	}
	ourSide := r.Err != nil || (len(r.Enhanced) > 3 && r.Enhanced[1:3] == ".3")
	return r.Rule != "" && r.Code >= 400 && !ourSide && r.auth == nil && !r.Close
}

// closing returns r with Close set.
func (r Reply) closing() Reply { r.Close = true; return r }

// write puts r on the wire (buffered; the session loop flushes).
func (ss *session) write(r Reply) {
	if r.Code == 0 {
		return
	}
	code := strconv.Itoa(r.Code)
	text := r.Text
	for {
		line, rest, more := strings.Cut(text, "\n")
		ss.bw.WriteString(code)
		if more {
			ss.bw.WriteByte('-')
		} else {
			ss.bw.WriteByte(' ')
		}
		if r.Enhanced != "" {
			ss.bw.WriteString(r.Enhanced)
			ss.bw.WriteByte(' ')
		}
		ss.bw.WriteString(line)
		ss.bw.WriteString("\r\n")
		if !more {
			return
		}
		text = rest
	}
}

// conn identifies the session in maillog records.
func (ss *session) logConn() maillog.Conn {
	return maillog.Conn{CID: ss.cid, Client: ss.ip, Listener: ss.l.cfg.Name}
}

// record logs, counts and publishes a reply that has a Rule.
func (ss *session) record(ctx context.Context, r Reply) {
	if r.Rule == "" {
		return
	}
	ml, c := ss.s.ml, ss.logConn()
	kind := r.Event
	switch {
	case r.Limit != nil:
		ml.LimitReached(ctx, c, r.Rule, r.Limit)
	case r.Err != nil:
		ss.log.Error("temporary failure", "rule", r.Rule, "code", r.codes(), "rcpt", r.Rcpt, "err", r.Err)
	case r.Rule == ruleNonSMTP:
		ml.NonSMTP(ctx, c, truncate(ss.line, 80))
	default:
		text := r.Text
		if r.Code == 0 {
			text = r.Detail
		}
		ref := maillog.Refusal{Rule: r.Rule, Code: r.codes(), Rcpt: r.Rcpt, Text: text}
		if r.Rule == ruleRelay {
			ml.RelayDenied(ctx, c, ref)
			kind = cmp.Or(kind, event.RelayDenied)
		} else {
			ml.Rejected(ctx, c, ref)
			kind = cmp.Or(kind, event.Reject)
		}
	}
	ss.s.deps.Metrics.Rejections.WithLabelValues(r.Rule).Inc()
	if kind != "" {
		ss.s.deps.Events.Publish(ctx, event.Event{Kind: kind, Source: "smtpd", IP: ss.ip, Rule: r.Rule,
			Detail: firstNonEmpty(r.Detail, r.Rcpt, r.Text), Service: ss.l.cfg.Name})
	}
}

// recordAuth logs, counts and publishes the outcome of an AUTH command, and
// delays a failure: the delay grows with each failure in the session, and
// is the same for an unknown user as for a wrong password.
func (ss *session) recordAuth(ctx context.Context, r Reply) {
	a, ml, c := r.auth, ss.s.ml, ss.logConn()
	if a.ok {
		ml.AuthOK(ctx, c, a.mech, a.user)
		ss.s.deps.Metrics.Auth.WithLabelValues(a.mech, "success").Inc()
		ss.s.deps.Events.Publish(ctx, event.Event{Kind: event.AuthSuccess, Source: "smtpd", IP: ss.ip, User: a.user, Mechanism: a.mech, Service: ss.l.cfg.Name})
		return
	}
	ss.authFails++
	ml.AuthFailed(ctx, c, a.mech, a.user, a.reason)
	ss.s.deps.Metrics.Auth.WithLabelValues(a.mech, "failure").Inc()
	ss.s.deps.Events.Publish(ctx, event.Event{Kind: event.AuthFailure, Source: "smtpd", IP: ss.ip, User: a.user, Mechanism: a.mech, Detail: a.reason, Service: ss.l.cfg.Name})
	d := ss.cfg.Limits.AuthFailureDelay.D()
	for i := 1; i < ss.authFails && d < 30*time.Second; i++ {
		d *= 2
	}
	ss.sleep(ctx, d)
}

func firstNonEmpty(a ...string) string {
	for _, s := range a {
		if s != "" {
			return s
		}
	}
	return ""
}

func oneLine(s string) string {
	return strings.NewReplacer("\r", " ", "\n", " ").Replace(s)
}
