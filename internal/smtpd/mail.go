package smtpd

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"

	"github.com/relayguard/relayguard/internal/address"
	"github.com/relayguard/relayguard/internal/config"
	"github.com/relayguard/relayguard/internal/dsn"
	"github.com/relayguard/relayguard/internal/event"
	"github.com/relayguard/relayguard/internal/policy"
	"github.com/relayguard/relayguard/internal/ratelimit"
)

// pathReply turns a path syntax error into the reply for MAIL (5.1.7) or
// RCPT (5.1.3).
func pathReply(err error, senderSide bool) Reply {
	var ae *address.Error
	if errors.As(err, &ae) {
		switch {
		case ae.Enhanced == "5.6.7":
			return badCommand(553, "5.6.7", ae.Error())
		case ae.Enhanced == "5.5.2":
			if senderSide {
				return badCommand(501, "5.5.2", "Syntax: MAIL FROM:<address>")
			}
			return badCommand(501, "5.5.2", "Syntax: RCPT TO:<address>")
		case senderSide:
			return badCommand(501, "5.1.7", "Bad sender address syntax: "+ae.Reason)
		}
		return badCommand(501, "5.1.3", "Bad recipient address syntax: "+ae.Reason)
	}
	return badCommand(501, "5.5.4", err.Error())
}

func (ss *session) cmdMail(ctx context.Context, arg string) Reply {
	switch {
	case ss.helo == "":
		return badCommand(503, "5.5.1", "Error: send HELO/EHLO first")
	case ss.inTx:
		return badCommand(503, "5.5.1", "Error: nested MAIL command")
	case len(arg) < 5 || !strings.EqualFold(arg[:5], "FROM:"):
		return badCommand(501, "5.5.4", "Syntax: MAIL FROM:<address>")
	}
	// RFC 6409 §4.3 / Postfix smtpd_sender_restrictions on submission:
	// submission requires AUTH unless the client is in a trusted network.
	// (This also keeps unauthenticated clients from claiming a local
	// sender there.)
	if ss.l.cfg.Mode != config.ModeMX && ss.authUser == "" && !ss.trusted {
		return refuse(530, "5.7.0", "submission_requires_auth", "Authentication required")
	}
	// An account suspended after it logged in (a compromise signal seen
	// by this or another server) sends nothing more.
	if ss.authUser != "" && ss.s.deps.Accounts != nil {
		if susp, err := ss.s.deps.Accounts.Suspended(ctx, ss.authUser); err == nil && susp {
			return refuse(451, "4.7.1", "account_suspended", "Error: account "+ss.authUser+" is suspended; ask the postmaster")
		}
	}
	pathStr, params, err := address.SplitArg(arg[5:])
	if err != nil {
		return pathReply(err, true)
	}
	// ESMTP parameters (RFC 5321 §4.1.1.11, RFC 1870, RFC 6152, RFC 6531, RFC 4954 §5).
	var size int64
	smtputf8, body8 := false, false
	var ret, envid string
	seen := map[string]bool{}
	for _, p := range strings.Fields(params) {
		k, v, _ := strings.Cut(p, "=")
		if seen[strings.ToUpper(k)] {
			return badCommand(501, "5.5.4", "Duplicate parameter "+truncate(k, 40))
		}
		seen[strings.ToUpper(k)] = true
		switch strings.ToUpper(k) {
		case "RET":
			// RFC 3461 §4.3.
			if ret, err = dsn.ParseRet(v); err != nil {
				return badCommand(501, "5.5.4", oneLine(err.Error()))
			}
		case "ENVID":
			// RFC 3461 §4.4.
			if envid, err = dsn.ParseEnvID(v); err != nil {
				return badCommand(501, "5.5.4", oneLine(truncate(err.Error(), 120)))
			}
		case "SIZE":
			n, err := strconv.ParseInt(v, 10, 64)
			if err != nil || n < 0 {
				return badCommand(501, "5.5.4", "Bad SIZE parameter "+truncate(v, 40))
			}
			size = n
		case "BODY":
			switch strings.ToUpper(v) {
			case "7BIT":
			case "8BITMIME":
				body8 = true
			default:
				return badCommand(555, "5.5.4", "Unsupported BODY parameter "+truncate(v, 40))
			}
		case "SMTPUTF8":
			if v != "" {
				return badCommand(555, "5.5.4", "SMTPUTF8 takes no value")
			}
			smtputf8 = true
		case "AUTH":
			// RFC 4954 §5: accepted, not trusted; we do not relay AUTH= on.
		default:
			return badCommand(555, "5.5.4", "Unsupported option: "+truncate(k, 40))
		}
	}
	if size > ss.cfg.Limits.MaxMessageSize {
		// RFC 1870 §6.1: the declared size is refused at MAIL.
		return limitReached(552, "5.3.4", "limits.max_message_size", ss.cfg.Limits.MaxMessageSize,
			"Error: message size exceeds fixed limit")
	}
	if r := ss.spaceReply(size); r.Code != 0 {
		return r
	}
	from, err := address.ParseReverse(pathStr, address.Options{SMTPUTF8: smtputf8})
	if err != nil {
		return pathReply(err, true)
	}
	// Sender binding: an authenticated user may only use its own addresses.
	if ss.authUser != "" && ss.cfg.SenderBinding && !from.Null {
		ok, err := ss.s.deps.Users.MayUseSender(ctx, ss.authUser, from.String(), ss.cfg.LocalDomains)
		if err != nil {
			return localFailure(451, "4.3.0", "sender_lookup", "<"+from.String()+">: Temporary lookup failure",
				fmt.Errorf("sender %s of user %s: %w", from.String(), ss.authUser, err))
		}
		if !ok {
			return refuse(553, "5.7.1", "reject_sender_login_mismatch",
				"<"+from.String()+">: Sender address rejected: not owned by user "+ss.authUser)
		}
	}
	ss.from, ss.fromRaw, ss.smtputf8, ss.body8bit, ss.declSize = from, pathStr, smtputf8, body8, size
	ss.dsnRet, ss.dsnEnvID = ret, envid
	if ss.s.deps.Policy != nil {
		if r, refused := ss.policyCheck(ctx, ss.request(policy.StageMail, "")); refused {
			ss.from = address.Path{}
			return r
		}
	}
	ss.inTx = true
	return reply(250, "2.1.0", "Ok")
}

// isLocal reports whether a path's canonical domain is one of ours.
func (ss *session) isLocal(p address.Path) bool {
	if p.Postmaster && p.Domain == "" && !p.IsLiteral() {
		return true
	}
	if p.IsLiteral() {
		if !ss.cfg.AllowIPLiterals {
			return false
		}
		return ss.cfg.IsOwn(p.Literal)
	}
	return ss.cfg.IsLocal(p.Domain)
}

func (ss *session) cmdRcpt(ctx context.Context, arg string) Reply {
	switch {
	case !ss.inTx:
		return badCommand(503, "5.5.1", "Error: need MAIL command")
	case len(arg) < 3 || !strings.EqualFold(arg[:3], "TO:"):
		return badCommand(501, "5.5.4", "Syntax: RCPT TO:<address>")
	}
	pathStr, params, err := address.SplitArg(arg[3:])
	if err != nil {
		return pathReply(err, false)
	}
	// RCPT parameters: NOTIFY and ORCPT (RFC 3461 §4.1, §4.2).
	var rd rcptDSN
	seen := map[string]bool{}
	for _, p := range strings.Fields(params) {
		k, v, _ := strings.Cut(p, "=")
		k = strings.ToUpper(k)
		if seen[k] {
			return badCommand(501, "5.5.4", "Duplicate parameter "+truncate(k, 40))
		}
		seen[k] = true
		switch k {
		case "NOTIFY":
			if rd.notify, err = dsn.ParseNotify(v); err != nil {
				return badCommand(501, "5.5.4", oneLine(truncate(err.Error(), 120)))
			}
		case "ORCPT":
			if rd.orcpt, err = dsn.ParseORCPT(v); err != nil {
				return badCommand(501, "5.5.4", oneLine(truncate(err.Error(), 120)))
			}
		default:
			return badCommand(555, "5.5.4", "Unsupported option: "+truncate(k, 40))
		}
	}
	rcpt, err := address.ParseForward(pathStr, address.Options{SMTPUTF8: ss.smtputf8})
	if err != nil {
		return pathReply(err, false)
	}
	if len(ss.rcpts) >= ss.cfg.Limits.MaxRecipients {
		// RFC 5321 §4.5.3.1.10: 452 for too many recipients.
		return limitReached(452, "4.5.3", "limits.max_recipients", ss.cfg.Limits.MaxRecipients, "Error: too many recipients")
	}
	canon := rcpt.String()
	if r := ss.rcptRateReply(ctx); r.Code != 0 {
		r.Rcpt = canon
		return r
	}
	if r := ss.relayDecision(ctx, rcpt); r.Code != 0 {
		r.Rcpt = canon
		if r.Event == event.UnknownRecipient && ss.countsUnknownRecipients() {
			ss.unknownRecipients(ctx, 1)
		}
		return r
	}
	if ss.s.deps.Limits != nil && (ss.authUser != "" || ss.trusted) {
		if err := ss.s.deps.Limits.Rcpt(ctx, ss.sender(), canon); err != nil {
			r := refuse(451, "4.7.1", "rate_limit", "<"+canon+">: "+oneLine(err.Error()))
			r.Rcpt = canon
			return r
		}
	}
	if ss.s.deps.Policy != nil {
		if r, refused := ss.policyCheck(ctx, ss.request(policy.StageRcpt, canon)); refused {
			return r
		}
	}
	// A repeated recipient is acknowledged but kept once (one delivery).
	if !slices.Contains(ss.rcpts, canon) {
		ss.rcpts = append(ss.rcpts, canon)
		ss.rcptDSN = append(ss.rcptDSN, rd)
	}
	return reply(250, "2.1.5", "Ok")
}

// rcptDSN are the DSN parameters of one recipient (RFC 3461).
type rcptDSN struct {
	notify string // canonical NOTIFY, "" when not given
	orcpt  string // "type;address", decoded
}

// sender describes the session's sender for the send limits.
func (ss *session) sender() ratelimit.Sender {
	return ratelimit.Sender{User: ss.authUser, IP: ss.ip, From: ss.from.String(), Trusted: ss.trusted, Listener: ss.l.cfg.Name}
}

// relayDecision is Postfix's permit_mynetworks, permit_sasl_authenticated,
// reject_unauth_destination followed by the local recipient check, over the
// canonical recipient. It returns a zero Reply to accept, or the refusal.
func (ss *session) relayDecision(ctx context.Context, rcpt address.Path) Reply {
	canon := rcpt.String()
	if ss.isLocal(rcpt) {
		if rcpt.Postmaster {
			return Reply{} // RFC 5321 §4.5.1: postmaster must be accepted
		}
		domain := rcpt.Domain
		if rcpt.IsLiteral() {
			domain = rcpt.DomainString()
		}
		ok, err := ss.s.deps.Users.LocalRecipientExists(ctx, rcpt.Local, domain)
		if err != nil {
			return localFailure(451, "4.3.0", "local_recipient_lookup", "<"+canon+">: Temporary lookup failure",
				fmt.Errorf("recipient %s: %w", canon, err))
		}
		if !ok {
			// No backscatter: an unknown user is refused here, at RCPT.
			// The refusal counts as an error of the session (hard and
			// soft error limits) and toward the client's rate, and is an
			// event the guard may count, so that enumerating the local
			// users is slow and bounded.
			r := refuse(550, "5.1.1", "reject_unlisted_recipient", "<"+canon+">: Recipient address rejected: User unknown in local recipient table")
			r.Bad, r.Event = true, event.UnknownRecipient
			return r
		}
		return Reply{}
	}
	if ss.cfg.IsRelay(rcpt.Domain) || ss.trusted || ss.authUser != "" {
		return Reply{}
	}
	if ss.s.deps.PopBeforeSMTP != nil && ss.s.deps.PopBeforeSMTP(ss.ip) {
		return Reply{}
	}
	return refuse(554, "5.7.1", ruleRelay, "<"+canon+">: Relay access denied")
}
