package queue

import (
	"context"
	"fmt"
	"io"
)

// Deliverer delivers one message to the recipients of one domain and
// returns one result per recipient (internal/deliver.Deliverer). The
// scheduler owns this contract; transports implement it, so that the spool
// does not depend on how mail leaves.
type Deliverer interface {
	Deliver(ctx context.Context, domain string, req *Request) []Result
}

// Request is one delivery attempt of one message to recipients that share a
// destination domain.
type Request struct {
	ID       string
	From     string // "" is the null sender
	Rcpts    []string
	Size     int64
	SMTPUTF8 bool
	Body8Bit bool
	// Open returns the message bytes (CRLF line endings). It may be called
	// more than once (one per MX host tried).
	Open func() (io.ReadCloser, error)
	// DSN parameters (RFC 3461) to relay to a peer that offers DSN: RET
	// and ENVID of the message, NOTIFY and ORCPT per recipient (parallel
	// to Rcpts; nil or empty values when none were given).
	Ret, EnvID string
	DSN        []RcptDSN
}

// RcptDSN are one recipient's DSN parameters (RFC 3461 §4.1, §4.2).
type RcptDSN struct {
	Notify string // canonical NOTIFY ("SUCCESS,FAILURE"), "" when not given
	ORcpt  string // "type;address", decoded
}

// Result is the outcome for one recipient.
type Result struct {
	Rcpt     string
	OK       bool
	Temp     bool // not delivered, try again later; !OK && !Temp is permanent
	Code     int  // SMTP reply code, 0 if none was received
	Enhanced string
	Text     string
	Host     string // the peer that answered (host or path)
	// PeerDSN: the peer offered DSN (RFC 3461) and took the message with
	// its DSN parameters, so it sends any later notices; without it a
	// delivery that asked for SUCCESS is "relayed" (§5.2.2).
	PeerDSN bool
	// Final: delivered into a mailbox (Maildir, LMTP), the last hop; a
	// SUCCESS notice then says "delivered" rather than "relayed".
	Final bool
}

// Error is the result as one line for logs and the queue's last_error:
// "host: code enhanced text".
func (r Result) Error() string {
	s := r.Text
	switch {
	case r.Code != 0 && r.Enhanced != "":
		s = fmt.Sprintf("%d %s %s", r.Code, r.Enhanced, r.Text)
	case r.Code != 0:
		s = fmt.Sprintf("%d %s", r.Code, r.Text)
	}
	if r.Host != "" {
		return r.Host + ": " + s
	}
	return s
}
