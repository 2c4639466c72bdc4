package smtpd

import (
	"context"
	"errors"
	"slices"
	"strconv"
	"strings"

	"github.com/relayguard/relayguard/internal/address"
	"github.com/relayguard/relayguard/internal/config"
	"github.com/relayguard/relayguard/internal/policy"
	"github.com/relayguard/relayguard/internal/ratelimit"
)

// pathReply turns a path syntax error into the reply for MAIL (5.1.7) or
// RCPT (5.1.3).
func pathReply(err error, senderSide bool) string {
	var ae *address.Error
	if errors.As(err, &ae) {
		switch {
		case ae.Enhanced == "5.6.7":
			return "553 5.6.7 " + ae.Error()
		case ae.Enhanced == "5.5.2":
			if senderSide {
				return "501 5.5.2 Syntax: MAIL FROM:<address>"
			}
			return "501 5.5.2 Syntax: RCPT TO:<address>"
		case senderSide:
			return "501 5.1.7 Bad sender address syntax: " + ae.Reason
		}
		return "501 5.1.3 Bad recipient address syntax: " + ae.Reason
	}
	return "501 5.5.4 " + err.Error()
}

func (ss *session) cmdMail(ctx context.Context, arg string) {
	switch {
	case ss.helo == "":
		ss.badCommand(ctx, "503 5.5.1 Error: send HELO/EHLO first")
		return
	case ss.inTx:
		ss.badCommand(ctx, "503 5.5.1 Error: nested MAIL command")
		return
	case len(arg) < 5 || !strings.EqualFold(arg[:5], "FROM:"):
		ss.badCommand(ctx, "501 5.5.4 Syntax: MAIL FROM:<address>")
		return
	}
	// RFC 6409 §4.3 / Postfix smtpd_sender_restrictions on submission:
	// submission requires AUTH unless the client is in a trusted network.
	if ss.l.cfg.Mode != config.ModeMX && ss.authUser == "" && !ss.trusted {
		ss.s.reject(ctx, ss.ip, ss.l.cfg.Name, "submission_requires_auth", "530 5.7.0", "", "Authentication required")
		ss.reply("530 5.7.0 Authentication required")
		return
	}
	pathStr, params, err := address.SplitArg(arg[5:])
	if err != nil {
		ss.badCommand(ctx, pathReply(err, true))
		return
	}
	// ESMTP parameters (RFC 5321 §4.1.1.11, RFC 1870, RFC 6152, RFC 6531, RFC 4954 §5).
	var size int64
	smtputf8, body8 := false, false
	for _, p := range strings.Fields(params) {
		k, v, _ := strings.Cut(p, "=")
		switch strings.ToUpper(k) {
		case "SIZE":
			n, err := strconv.ParseInt(v, 10, 64)
			if err != nil || n < 0 {
				ss.badCommand(ctx, "501 5.5.4 Bad SIZE parameter "+truncate(v, 40))
				return
			}
			size = n
		case "BODY":
			switch strings.ToUpper(v) {
			case "7BIT":
			case "8BITMIME":
				body8 = true
			default:
				ss.badCommand(ctx, "555 5.5.4 Unsupported BODY parameter "+truncate(v, 40))
				return
			}
		case "SMTPUTF8":
			if v != "" {
				ss.badCommand(ctx, "555 5.5.4 SMTPUTF8 takes no value")
				return
			}
			smtputf8 = true
		case "AUTH":
			// RFC 4954 §5: accepted, not trusted; we do not relay AUTH= on.
		default:
			ss.badCommand(ctx, "555 5.5.4 Unsupported option: "+truncate(k, 40))
			return
		}
	}
	if size > ss.cfg.Limits.MaxMessageSize {
		ss.s.log.Info("limit reached", "limit", "limits.max_message_size", "value", ss.cfg.Limits.MaxMessageSize, "declared", size, "client", ss.ip)
		ss.s.reject(ctx, ss.ip, ss.l.cfg.Name, "message_size_limit", "552 5.3.4", "", "declared size too big")
		ss.reply("552 5.3.4 Error: message size exceeds fixed limit")
		return
	}
	from, err := address.ParseReverse(pathStr, address.Options{SMTPUTF8: smtputf8})
	if err != nil {
		ss.badCommand(ctx, pathReply(err, true))
		return
	}
	// Sender binding: an authenticated user may only use its own addresses.
	if ss.authUser != "" && ss.cfg.SenderBinding && !from.Null {
		ok, err := ss.s.deps.Users.MayUseSender(ctx, ss.authUser, from.String(), ss.cfg.LocalDomains)
		if err != nil {
			ss.s.log.Error("sender lookup failed", "user", ss.authUser, "sender", from.String(), "err", err)
			ss.reply("451 4.3.0 <%s>: Temporary lookup failure", from.String())
			return
		}
		if !ok {
			text := "<" + from.String() + ">: Sender address rejected: not owned by user " + ss.authUser
			ss.s.reject(ctx, ss.ip, ss.l.cfg.Name, "reject_sender_login_mismatch", "553 5.7.1", "", text)
			ss.reply("553 5.7.1 %s", text)
			return
		}
	}
	// An unauthenticated client may not claim a local domain on a
	// submission listener.
	if ss.authUser == "" && !ss.trusted && ss.l.cfg.Mode != config.ModeMX && !from.Null && ss.isLocal(from) {
		text := "<" + from.String() + ">: Sender address rejected: authentication required for local sender"
		ss.s.reject(ctx, ss.ip, ss.l.cfg.Name, "reject_unauthenticated_local_sender", "553 5.7.1", "", text)
		ss.reply("553 5.7.1 %s", text)
		return
	}
	ss.from, ss.fromRaw, ss.smtputf8, ss.body8bit, ss.declSize = from, pathStr, smtputf8, body8, size
	if ss.s.deps.Policy != nil {
		v := ss.policyCheck(ctx, ss.request(policy.StageMail, ""))
		if v.Action == policy.Reject || v.Action == policy.Defer {
			ss.from = address.Path{}
			ss.verdictReply(ctx, v, "")
			return
		}
	}
	ss.inTx = true
	ss.reply("250 2.1.0 Ok")
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
		ss.s.mu.Lock()
		own := ss.s.ownAddrs[p.Literal]
		ss.s.mu.Unlock()
		return own
	}
	return ss.s.localDomains[p.Domain]
}

func (ss *session) cmdRcpt(ctx context.Context, arg string) {
	switch {
	case !ss.inTx:
		ss.badCommand(ctx, "503 5.5.1 Error: need MAIL command")
		return
	case len(arg) < 3 || !strings.EqualFold(arg[:3], "TO:"):
		ss.badCommand(ctx, "501 5.5.4 Syntax: RCPT TO:<address>")
		return
	}
	pathStr, params, err := address.SplitArg(arg[3:])
	if err != nil {
		ss.badCommand(ctx, pathReply(err, false))
		return
	}
	if params != "" {
		// No DSN (RFC 3461) is offered, so no RCPT parameter is valid.
		ss.badCommand(ctx, "555 5.5.4 Unsupported option: "+truncate(params, 40))
		return
	}
	rcpt, err := address.ParseForward(pathStr, address.Options{SMTPUTF8: ss.smtputf8})
	if err != nil {
		ss.badCommand(ctx, pathReply(err, false))
		return
	}
	if len(ss.rcpts) >= ss.cfg.Limits.MaxRecipients {
		ss.s.log.Info("limit reached", "limit", "limits.max_recipients", "value", ss.cfg.Limits.MaxRecipients, "client", ss.ip)
		ss.s.deps.Metrics.Rejections.WithLabelValues("max_recipients").Inc()
		ss.reply("452 4.5.3 Error: too many recipients")
		return
	}
	canon := rcpt.String()
	code, rule, text := ss.relayDecision(ctx, rcpt)
	if code != "" {
		ss.s.reject(ctx, ss.ip, ss.l.cfg.Name, rule, code, canon, text)
		ss.reply("%s %s", code, text)
		return
	}
	if ss.s.deps.Limits != nil && (ss.authUser != "" || ss.trusted) {
		snd := ratelimit.Sender{User: ss.authUser, IP: ss.ip, From: ss.from.String(), Trusted: ss.trusted, Listener: ss.l.cfg.Name}
		if err := ss.s.deps.Limits.Rcpt(ctx, snd, canon); err != nil {
			ss.s.reject(ctx, ss.ip, ss.l.cfg.Name, "rate_limit", "451 4.7.1", canon, err.Error())
			ss.reply("451 4.7.1 <%s>: %s", canon, oneLine(err.Error()))
			return
		}
	}
	if ss.s.deps.Policy != nil {
		v := ss.policyCheck(ctx, ss.request(policy.StageRcpt, canon))
		if v.Action == policy.Reject || v.Action == policy.Defer {
			ss.verdictReply(ctx, v, canon)
			return
		}
	}
	// A repeated recipient is acknowledged but kept once (one delivery).
	if !slices.Contains(ss.rcpts, canon) {
		ss.rcpts = append(ss.rcpts, canon)
	}
	ss.reply("250 2.1.5 Ok")
}

// relayDecision is Postfix's permit_mynetworks, permit_sasl_authenticated,
// reject_unauth_destination followed by the local recipient check, over the
// canonical recipient. It returns "" to accept, or the reply code, the rule
// and the reply text.
func (ss *session) relayDecision(ctx context.Context, rcpt address.Path) (code, rule, text string) {
	canon := rcpt.String()
	if ss.isLocal(rcpt) {
		if rcpt.Postmaster {
			return "", "", "" // RFC 5321 §4.5.1: postmaster must be accepted
		}
		domain := rcpt.Domain
		if rcpt.IsLiteral() {
			domain = rcpt.DomainString()
		}
		ok, err := ss.s.deps.Users.LocalRecipientExists(ctx, rcpt.Local, domain)
		if err != nil {
			ss.s.log.Error("recipient lookup failed", "rcpt", canon, "err", err)
			return "451 4.3.0", "local_recipient_lookup", "<" + canon + ">: Temporary lookup failure"
		}
		if !ok {
			return "550 5.1.1", "reject_unlisted_recipient", "<" + canon + ">: Recipient address rejected: User unknown in local recipient table"
		}
		return "", "", ""
	}
	if ss.s.relayDomains[rcpt.Domain] {
		return "", "", ""
	}
	if ss.trusted || ss.authUser != "" {
		return "", "", ""
	}
	if ss.s.deps.PopBeforeSMTP != nil && ss.s.deps.PopBeforeSMTP(ss.ip) {
		return "", "", ""
	}
	return "554 5.7.1", "reject_unauth_destination", "<" + canon + ">: Relay access denied"
}
