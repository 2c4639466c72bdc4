package smtpd

import (
	"context"
	"net/netip"

	"github.com/relayguard/relayguard/internal/limits"
	"github.com/relayguard/relayguard/internal/policy"
	"github.com/relayguard/relayguard/internal/ratelimit"
)

// Guard is consulted before the banner and before each AUTH command. It is
// implemented by internal/guard (bans, per-IP and per-subnet AUTH failure
// limits). AUTH outcomes also reach the guard through the event stream.
type Guard interface {
	// Admit reports whether a client may talk to us at all. When ok is
	// false the connection gets "421 4.7.0 <reason>" before the banner.
	Admit(ip netip.Addr) (ok bool, reason string)
	// AuthAttempt is called before an AUTH command checks any credential.
	// It counts the attempt toward the AUTH failure limits at once, so
	// that a burst of concurrent attempts cannot pass a cap, and returns
	// it to be ended with its outcome (End(ctx, failed)). Or it refuses
	// the attempt: the error's text goes to the client as "454 4.7.0
	// <text>", and nothing is counted (a refused attempt is not a
	// failure). A *limits.Exceeded error names the cap that bit.
	AuthAttempt(ctx context.Context, ip netip.Addr) (*limits.Reservation, error)
}

// PolicyChecker evaluates the configured restriction lists (internal/policy
// engine). It is called after the built-in checks at each stage; a Verdict
// with Action Reject or Defer is sent to the client as is.
type PolicyChecker interface {
	Check(ctx context.Context, req *policy.Request) policy.Verdict
}

// SendLimiter contains a stolen account or a compromised trusted host
// (internal/ratelimit.Limiter). A non-nil error is sent as "451 4.7.1 <err>".
type SendLimiter interface {
	// Rcpt is called for each recipient that will be relayed or delivered,
	// for authenticated and trusted senders.
	Rcpt(ctx context.Context, s ratelimit.Sender, rcpt string) error
	// Message is called at DATA with the number of accepted recipients.
	Message(ctx context.Context, s ratelimit.Sender, nrcpt int) error
}

// AccountGate is consulted after a successful SASL exchange
// (internal/accounts.Gate): a suspended account, or a username under
// distributed guessing from a network it never logged in from, is refused
// with the reply of a wrong password; reason goes to the log only.
// Suspended is asked at MAIL FROM of an authenticated session: an account
// suspended after it logged in sends nothing more (451 4.7.1).
type AccountGate interface {
	AuthAllowed(ctx context.Context, user string, ip netip.Addr) (ok bool, reason string)
	Suspended(ctx context.Context, user string) (bool, error)
}
