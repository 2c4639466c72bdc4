// Package accounts detects and contains a taken-over account or a hijacked
// local program, the same way whichever front door sees it (relayguard's
// SMTP server, the Postfix policy service, the milter, Dovecot's
// authentication policy, the logs `relayguard watch` follows):
//
//   - signals (Detector, an event.Sink): login spread over many networks,
//     distributed guessing of one username, volume far above the account's
//     own baseline, a high share of bad recipients, decoy usernames;
//   - response (Responder): suspend the account everywhere at once (in the
//     shared state store), hold its queued mail (serve's spool, Postfix's
//     queue through postsuper), alert the operator (mail, webhook, metric),
//     and undo it all on `relayguard user unsuspend`;
//   - answers for the front doors (Gate): is this login suspended, may this
//     username log in from this network now.
//
// The state (logins per network, failures per username, hourly volumes,
// recipient outcomes, queue ids tied to an account, suspensions) is a state
// kind on the process's store handle: SQLite, or Redis/Valkey shared by a
// cluster (so that every node agrees within a second), with SQLite as the
// fallback while Redis is down.
package accounts

import (
	"context"
	"net/netip"
	"strings"
	"time"
)

// Suspension is an account suspended by a signal or by an operator.
type Suspension struct {
	User     string    `json:"user"`
	Since    time.Time `json:"since"`
	Signal   string    `json:"signal"`   // config.Signal*
	Evidence string    `json:"evidence"` // what was seen: networks, counts, recipients
	By       string    `json:"by"`       // host (and command) that suspended it
}

// Store is the accounts' state.
type Store interface {
	// AddLogin records a successful login of user from network at t and
	// returns the distinct networks of its logins within window before t.
	AddLogin(ctx context.Context, user string, network netip.Prefix, t time.Time, window time.Duration) ([]netip.Prefix, error)
	// Forgive makes AddLogin count only logins of user at or after t for
	// the login spread (after an operator lifted a suspension); the
	// networks stay known.
	Forgive(ctx context.Context, user string, t time.Time) error
	// KnownNetwork reports whether user logged in successfully from
	// network at or after since.
	KnownNetwork(ctx context.Context, user string, network netip.Prefix, since time.Time) (bool, error)
	// LoggedIn reports whether user ever logged in successfully (since
	// the logins were last forgotten).
	LoggedIn(ctx context.Context, user string) (bool, error)
	// AddFailure records a failed login as user from ip at t and returns
	// the distinct addresses that failed as user within window.
	AddFailure(ctx context.Context, user string, ip netip.Addr, t time.Time, window time.Duration) (int, error)
	// Failures returns the distinct addresses that failed as user at or
	// after since.
	Failures(ctx context.Context, user string, since time.Time) (int, error)
	// AddSent adds n messages of user in the hour starting at hour and
	// returns that hour's count.
	AddSent(ctx context.Context, user string, hour time.Time, n int64) (int64, error)
	// PeakHour returns user's largest hourly count of the hours starting
	// in [from, to).
	PeakHour(ctx context.Context, user string, from, to time.Time) (int64, error)
	// AddOutcome counts one recipient of user, bad or not, in the window
	// starting at start, and returns the window's totals.
	AddOutcome(ctx context.Context, user string, start time.Time, window time.Duration, bad bool) (total, nbad int64, err error)
	// TieQueueID records that queue id qid on host belongs to user.
	TieQueueID(ctx context.Context, host, user, qid string, t time.Time) error
	// QueueUser returns the user queue id qid on host is tied to.
	QueueUser(ctx context.Context, host, qid string) (string, bool, error)
	// QueueIDs returns the queue ids on host tied to user at or after since.
	QueueIDs(ctx context.Context, host, user string, since time.Time) ([]string, error)
	// Suspend records s; created is false when the account was already
	// suspended (the first suspension is kept).
	Suspend(ctx context.Context, s Suspension) (created bool, err error)
	// Unsuspend removes the suspension of user and returns it.
	Unsuspend(ctx context.Context, user string) (Suspension, bool, error)
	// Suspended returns the suspension of user, if any.
	Suspended(ctx context.Context, user string) (Suspension, bool, error)
	// Suspensions lists every suspension.
	Suspensions(ctx context.Context) ([]Suspension, error)
}

// QueueTie is a queue id of this host tied to user at T.
type QueueTie struct {
	User, QID string
	T         time.Time
}

// SentCount is N messages of User in the hour starting at Hour; Count is
// that hour's count after adding them.
type SentCount struct {
	User  string
	Hour  time.Time
	N     int64
	Count int64
}

// batchObserver is a Store that writes many queue id ties and message
// counts at once (SQLStore: one transaction), as TieQueueID and AddSent
// would one by one; it sets each SentCount's Count.
type batchObserver interface {
	Observe(ctx context.Context, host string, ties []QueueTie, sent []SentCount) error
}

// key is the form a login is stored under: logins are matched without
// regard to ASCII case, like relayguard's accounts and Dovecot's default
// (auth_username_format = %Lu).
func key(user string) string { return strings.ToLower(strings.TrimSpace(user)) }

// Network is the prefix of ip that counts as one network: IPv4 /bits4,
// IPv6 /bits6.
func Network(ip netip.Addr, bits4, bits6 int) netip.Prefix {
	ip = ip.Unmap()
	bits := bits4
	if ip.Is6() {
		bits = bits6
	}
	p, err := ip.Prefix(bits)
	if err != nil {
		return netip.PrefixFrom(ip, ip.BitLen())
	}
	return p
}
