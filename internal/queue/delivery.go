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
