package maillog

import (
	"strconv"
	"strings"

	"github.com/relayguard/relayguard/internal/event"
)

// Source is the event.Event Source of events read from relayguard's log.
const Source = "relayguard-log"

// abuseRules are the rules of serve's refusals that show a client is not a
// well-behaved SMTP client; smtpd publishes them as protocol_abuse, and so
// must a reader of its log.
var abuseRules = map[string]bool{"pregreet": true, "bare_newline": true, "starttls_injection": true}

// Event returns the guard event a record stands for, and false for records
// that are not about a client's behaviour (deliveries, bans, summaries).
// It is what `relayguard watch` feeds the guard when it follows a log
// written by another relayguard process.
func (r *Record) Event() (event.Event, bool) {
	e := event.Event{Time: r.Time, Source: Source, IP: r.Client, Service: r.Listener, User: r.User}
	if r.Listener == ConsoleListener {
		// An admin name is not a mail account: the accounts' signals
		// (and their decoy names, "admin" among them) must not count it.
		e.User = ""
	}
	switch r.Kind {
	case KindAuthFailed:
		e.Kind, e.Mechanism, e.Detail = event.AuthFailure, r.Mech, r.Reason
	case KindAuthOK:
		e.Kind, e.Mechanism = event.AuthSuccess, r.Mech
	case KindRelayDenied:
		e.Kind, e.Rule, e.Detail = event.RelayDenied, r.Rule, r.Rcpt
		if e.Rule == "" {
			e.Rule = "reject_unauth_destination"
		}
	case KindRejected:
		e.Kind, e.Rule, e.Detail = event.Reject, r.Rule, r.Rcpt
		if e.Detail == "" {
			e.Detail = r.Text
		}
		if strings.HasPrefix(r.Rule, "dnsbl") || strings.HasPrefix(r.Rule, "reject_rbl") || strings.Contains(r.Text, " blocked using ") {
			e.Kind = event.DNSBLReject
		}
		if abuseRules[r.Rule] {
			e.Kind = event.ProtocolAbuse
		}
		if r.Rule == "reject_unlisted_recipient" {
			e.Kind = event.UnknownRecipient // recipient enumeration, counted only if [guard] count says so
		}
	case KindLimitReached:
		// Of the limits, only too many bad commands says something about
		// the client (Postfix's "too many errors").
		if r.Limit != "limits.max_bad_commands" {
			return event.Event{}, false
		}
		e.Kind, e.Rule, e.Detail = event.ProtocolAbuse, r.Limit, "too many errors"
	case KindNonSMTP:
		e.Kind, e.Rule, e.Detail = event.ProtocolAbuse, "non_smtp_command", r.Text
	case KindLostConnection:
		if r.After != "AUTH" {
			return event.Event{}, false
		}
		e.Kind = event.LostAfterAuth
	case KindEgressBlocked:
		// A local program's blocked connection to a remote mail port: the
		// address is the destination, the user the local account. It is
		// counted only if [guard] counts egress_blocked, and never bans
		// the destination by default.
		if !r.Dst.IsValid() {
			return event.Event{}, false
		}
		e.Kind, e.Source, e.IP, e.Rule, e.Service = event.EgressBlocked, "kernel", r.Dst.Addr(), "egress", "smtp"
		e.Detail = "uid=" + strconv.Itoa(r.UID) + " dst=" + r.Dst.String()
		if r.Exe != "" {
			e.Detail += " exe=" + r.Exe
		}
		return e, true
	case KindMilter:
		e.Rule, e.Detail = r.Rule, r.Text
		if r.UID >= 0 {
			e.Detail = "uid=" + strconv.Itoa(r.UID)
		}
		switch {
		case r.Action == MilterAccept:
			e.Kind = event.MessageSubmitted
		case strings.HasPrefix(r.Rule, "delivery.rate_limits."):
			e.Kind = event.RateLimited
		case r.Action == MilterReject:
			e.Kind = event.Reject
		default:
			return event.Event{}, false
		}
		// A local program's message has no client address; it is an event
		// about the local user all the same.
		return e, true
	default:
		return event.Event{}, false
	}
	if !e.IP.IsValid() {
		return event.Event{}, false
	}
	return e, true
}
