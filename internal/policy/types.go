// Package policy is relayguard's policy engine: one Request, one Verdict,
// whichever front door (built-in SMTP server or Postfix policy delegation)
// asked. The engine does no network I/O itself; DNS and stores come in
// through small interfaces.
package policy

import (
	"io"
	"net/netip"
	"strconv"
)

// Stage is the SMTP stage a request is evaluated at.
type Stage string

// Stages, named after Postfix's smtpd_*_restrictions and protocol_state.
const (
	StageConnect   Stage = "CONNECT"
	StageHelo      Stage = "EHLO"
	StageMail      Stage = "MAIL"
	StageRcpt      Stage = "RCPT"
	StageData      Stage = "DATA"
	StageEndOfData Stage = "END-OF-MESSAGE"
)

// Request carries what is known about a session at a stage. Field names
// follow the Postfix policy delegation attributes.
type Request struct {
	Stage          Stage
	ClientAddress  netip.Addr
	ClientName     string // verified (forward-confirmed) reverse name, or "unknown"
	ReverseName    string // reverse name (PTR) without forward confirmation, or "unknown"
	Helo           string
	Sender         string // MAIL FROM address without brackets; "" for the null sender
	Recipient      string // RCPT TO address (canonical)
	RecipientCount int
	SASLMethod     string
	SASLUsername   string
	TLS            bool
	Size           int64
	QueueID        string
	Instance       string
	ServerAddress  netip.Addr
	ServerPort     int
	Listener       string // listener name or Postfix service name
	// Message opens the message as received (header and body, CRLF line
	// endings) at END-OF-MESSAGE, when the front door has it (the SMTP
	// server, the milter); nil otherwise: Postfix's policy delegation
	// never sends content, so check_dmarc has no opinion there.
	Message func() (io.ReadCloser, error)
}

// Action is a verdict's kind.
type Action int

// Actions. Dunno means "this check has no opinion": evaluation goes on.
const (
	Dunno Action = iota
	Permit
	Reject
	Defer
	Warn // log only (warn_if_reject); evaluation goes on
)

func (a Action) String() string {
	switch a {
	case Dunno:
		return "DUNNO"
	case Permit:
		return "PERMIT"
	case Reject:
		return "REJECT"
	case Defer:
		return "DEFER"
	case Warn:
		return "WARN"
	}
	return "Action(" + strconv.Itoa(int(a)) + ")"
}

// Verdict is the engine's answer.
type Verdict struct {
	Action   Action
	Code     int    // SMTP reply code, e.g. 554
	Enhanced string // RFC 3463 enhanced status code, e.g. "5.7.1"
	Text     string // reply text without code
	Rule     string // the rule that decided, e.g. "reject_unauth_destination"
	Prepend  string // header to prepend (scores, warn-only rules), "" for none
	// IfPermit marks a Defer as Postfix's defer_if_permit: a temporary
	// failure (e.g. DNS) that applies only if nothing later rejects. The
	// engine resolves it; the policy service sends DEFER_IF_PERMIT.
	IfPermit bool
	// AuthResults is an Authentication-Results header field (RFC 8601,
	// "Authentication-Results: id; ...", folded, ending in CRLF) that
	// check_dmarc produced for an accepted message. A front door that has
	// the message puts it at the top of the header, after removing any
	// field of that name claiming the same authserv-id (RFC 8601 §5),
	// which AuthservID names.
	AuthResults string
	AuthservID  string
}
