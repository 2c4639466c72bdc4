package policyd

import (
	"context"
	"errors"
	"net/netip"
	"sync"
	"time"

	"github.com/relayguard/relayguard/internal/config"
	"github.com/relayguard/relayguard/internal/policy"
	"github.com/relayguard/relayguard/internal/ratelimit"
)

// SendLimiter counts messages and recipients against the send limits of
// [delivery.rate_limits] (internal/ratelimit.Limiter, the same limiter
// `relayguard serve` uses).
type SendLimiter interface {
	Rcpt(ctx context.Context, s ratelimit.Sender, rcpt string) error
	Recipients(ctx context.Context, s ratelimit.Sender, n int) error
	Message(ctx context.Context, s ratelimit.Sender, nrcpt int) error
}

// Accounts is the compromise detection and containment
// (internal/accounts.Hooks): suspended logins, and what the policy service
// sees of each login (its networks, its volume, its queue ids).
type Accounts interface {
	Suspended(ctx context.Context, user string) (bool, error)
	Login(ctx context.Context, user string, client netip.Addr)
	Sent(ctx context.Context, user, qid string)
	Tie(ctx context.Context, user, qid string)
}

// Limits applies the send limits to Postfix policy requests of
// authenticated (sasl_username) and trusted (mynetworks) clients, counting
// each message once however many requests it causes:
//
//   - at RCPT (smtpd_recipient_restrictions), the first request of a
//     message's "instance" counts the message, and each request counts its
//     recipient (recipients per day, new recipients per day);
//   - at DATA or END-OF-MESSAGE, a message not yet counted at RCPT counts
//     itself and its recipient_count recipients.
//
// So the check may sit in either restriction class, or in both.
type Limits struct {
	Limiter SendLimiter
	// Trusted reports whether a client address is in mynetworks.
	Trusted func(netip.Addr) bool
	// Action is policy.limit_action: config.LimitDeferIfPermit (default),
	// config.LimitDefer or config.LimitHold.
	Action string
	// Now is the clock for forgetting instances; nil: time.Now.
	Now func() time.Time
	// Accounts, when set, defers (or holds) a suspended login's mail and
	// is told of each login's messages.
	Accounts Accounts

	// The instances of message transactions in two generations: seen
	// since rotated, and old, the generation before. A lookup moves an
	// instance it finds in old to seen; a rotation drops old whole. So an
	// instance is kept at least instanceTTL after its last request and at
	// most about twice that, at most maxInstances are held, and nothing
	// is ever scanned.
	mu      sync.Mutex
	seen    map[string]*instance
	old     map[string]*instance
	rotated time.Time
}

// instance is what is known about one message transaction.
type instance struct {
	counted bool
	tied    bool
	refusal string // the action that refused the message, repeated for its later requests
}

// instanceTTL is how long an instance is remembered at least after its
// last request: longer than any SMTP transaction Postfix lets run
// (smtpd_timeout and the DATA phase).
const instanceTTL = time.Hour

// maxInstances bounds the instances held (both generations).
const maxInstances = 1 << 18

// Check returns the action for req when a send limit bites, and ok false
// when the request is not subject to send limits or within them.
func (l *Limits) Check(ctx context.Context, req *policy.Request) (action string, ok bool) {
	if l == nil || l.Limiter == nil {
		return "", false
	}
	s := ratelimit.Sender{User: req.SASLUsername, IP: req.ClientAddress, From: req.Sender, Listener: req.Listener}
	s.Trusted = s.User == "" && l.Trusted != nil && req.ClientAddress.IsValid() && l.Trusted(req.ClientAddress)
	if s.User == "" && !s.Trusted {
		return "", false
	}
	var stage policy.Stage
	switch req.Stage {
	case policy.StageRcpt:
		stage = policy.StageRcpt
	case policy.StageData, policy.StageEndOfData, "END-OF-DATA":
		stage = policy.StageData
	default:
		return "", false
	}
	inst := l.instance(req)
	if inst != nil && inst.refusal != "" {
		return inst.refusal, true
	}
	// A request of a transaction Postfix names by its instance counts the
	// message only once; without an instance only DATA/END-OF-MESSAGE can.
	first := inst != nil && !inst.counted
	count := first || (inst == nil && stage == policy.StageData)
	if l.Accounts != nil && s.User != "" {
		if count {
			l.Accounts.Login(ctx, s.User, req.ClientAddress)
		}
		if a, hit := l.suspended(ctx, s.User); hit {
			if inst != nil {
				inst.counted, inst.refusal = true, a
			}
			return a, true
		}
		if req.QueueID != "" && (inst == nil || !inst.tied) {
			l.Accounts.Tie(ctx, s.User, req.QueueID)
			if inst != nil {
				inst.tied = true
			}
		}
	}
	if count {
		if inst != nil {
			inst.counted = true
		}
		n := req.RecipientCount
		if stage == policy.StageRcpt {
			n = 1
		}
		if err := l.Limiter.Message(ctx, s, n); err != nil {
			a := l.action(err)
			if inst != nil {
				inst.refusal = a
			}
			return a, true
		}
		if stage == policy.StageData {
			if err := l.Limiter.Recipients(ctx, s, req.RecipientCount); err != nil {
				return l.action(err), true
			}
		}
		if l.Accounts != nil && s.User != "" {
			l.Accounts.Sent(ctx, s.User, req.QueueID)
		}
	}
	if stage == policy.StageRcpt && req.Recipient != "" {
		if err := l.Limiter.Rcpt(ctx, s, req.Recipient); err != nil {
			return l.action(err), true
		}
	}
	return "", false
}

// instance returns the state of req's message transaction, nil when
// Postfix sent no instance attribute. The key includes the client and the
// login so that two Postfix hosts' instance strings cannot collide.
func (l *Limits) instance(req *policy.Request) *instance {
	if req.Instance == "" {
		return nil
	}
	now := time.Now
	if l.Now != nil {
		now = l.Now
	}
	t := now()
	var kb [128]byte
	key := append(kb[:0], req.Instance...)
	key = append(key, 0)
	key = req.ClientAddress.AppendTo(key)
	key = append(key, 0)
	key = append(key, req.SASLUsername...)
	l.mu.Lock()
	defer l.mu.Unlock()
	switch age := t.Sub(l.rotated); {
	case l.seen == nil || age >= 2*instanceTTL:
		// Every instance was last asked about over instanceTTL ago.
		l.seen, l.old, l.rotated = map[string]*instance{}, nil, t
	case age >= instanceTTL || len(l.seen) >= maxInstances/2:
		// old's instances were last asked about before rotated.
		l.seen, l.old, l.rotated = make(map[string]*instance, len(l.seen)), l.seen, t
	}
	if in := l.seen[string(key)]; in != nil {
		return in
	}
	in := l.old[string(key)]
	if in != nil {
		delete(l.old, string(key))
	} else {
		in = &instance{}
	}
	l.seen[string(key)] = in
	return in
}

// instances is how many instances are held.
func (l *Limits) instances() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.seen) + len(l.old)
}

// suspended returns the action for a suspended login (policy.limit_action,
// as for a limit), and false when it is not suspended. A state store error
// is a temporary failure.
func (l *Limits) suspended(ctx context.Context, user string) (string, bool) {
	susp, err := l.Accounts.Suspended(ctx, user)
	if err != nil {
		return "451 4.3.0 Error: account state unavailable, try again later", true
	}
	if !susp {
		return "", false
	}
	text := "Error: account " + oneLine(user) + " is suspended; ask the postmaster"
	switch l.Action {
	case config.LimitDefer:
		return "451 4.7.1 " + text, true
	case config.LimitHold:
		return "HOLD " + text, true
	}
	return "DEFER_IF_PERMIT 4.7.1 " + text, true
}

// action renders a limiter error as a policy action: a limit that bit
// gets the configured action with the limit's name in the text; the state
// store failing gets a plain temporary failure (never a pass, never a
// permanent refusal).
func (l *Limits) action(err error) string {
	text := oneLine(err.Error())
	var le *ratelimit.LimitError
	if !errors.As(err, &le) {
		return "451 4.3.0 " + text
	}
	switch l.Action {
	case config.LimitDefer:
		return "451 4.7.1 " + text
	case config.LimitHold:
		return "HOLD " + text
	}
	return "DEFER_IF_PERMIT 4.7.1 " + text
}
