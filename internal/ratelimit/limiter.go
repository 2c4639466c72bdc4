// Package ratelimit contains a stolen account or a compromised trusted host:
// per authenticated user it limits messages per hour, recipients per day and
// new (never seen before) recipients per day; per trusted-network client IP
// and per sender domain it limits messages per hour. When a limit bites the
// SMTP server answers 451 4.7.1, an event goes into the guard's stream, a
// metric counts it, and optionally the account is suspended and its queued
// mail held. Counters live in the state store (SQLite, or Redis/Valkey
// shared by a pool of servers), in fixed windows: the hour or day that
// started on the hour or at midnight UTC. Attempts refused by a limit count
// too, so hammering does not reopen the window early.
package ratelimit

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/relayguard/relayguard/internal/config"
	"github.com/relayguard/relayguard/internal/event"
	"github.com/relayguard/relayguard/internal/faillog"
	"github.com/relayguard/relayguard/internal/maillog"
	"github.com/relayguard/relayguard/internal/prom"
)

// Sender describes who is sending, whichever front door (relayguard's SMTP
// server, the Postfix policy service, the milter) asks.
type Sender struct {
	User     string     // SASL username, "" if not authenticated
	IP       netip.Addr // client address
	From     string     // MAIL FROM address
	Trusted  bool       // client is in mynetworks
	Listener string     // listener name, or Postfix service
}

// Store keeps the counters.
type Store interface {
	// Add adds n to the counter key in the window that starts at start
	// and returns the new count.
	Add(ctx context.Context, key string, start time.Time, window time.Duration, n int64) (int64, error)
	// Seen reports whether user has sent to rcpt before.
	Seen(ctx context.Context, user, rcpt string) (bool, error)
	// MarkSeen records that user has sent to rcpt.
	MarkSeen(ctx context.Context, user, rcpt string, at time.Time) error
}

// Suspender suspends the account of a user whose send limit bit with
// suspend_on_limit; e is the limit that bit (the suspension's evidence).
type Suspender interface {
	Suspend(ctx context.Context, user string, e *LimitError) error
}

// Holder holds the queued mail of a user and returns how many messages.
type Holder interface {
	HoldUser(ctx context.Context, user, reason string) (int, error)
}

// Options are the limiter's collaborators; all optional.
type Options struct {
	Events    event.Sink
	Suspender Suspender
	// Holder holds the suspended account's queued mail; nil when the
	// Suspender holds it itself (serve: the accounts' responder).
	Holder Holder
	Log    *slog.Logger
	Now    func() time.Time
	// Registerer for the metric; nil: not exported.
	Registerer prometheus.Registerer
	// Source names the front door in events: "smtpd" (default),
	// "policyd" or "milter".
	Source string
}

// Limiter is the send limiter of every front door (smtpd.SendLimiter, the
// policy service and the milter).
type Limiter struct {
	conf    atomic.Pointer[config.RateLimitConfig]
	store   Store
	o       Options
	limited *prometheus.CounterVec
	// storeLog logs the counts the store could not make or keep: on a full
	// disk or with Redis down every message and recipient fails so, and a
	// line each was a flood (one for the run, then once a minute, and one
	// when counting works again).
	storeLog *faillog.Log

	suspended  sync.Map // user -> struct{}: accounts this limiter suspended
	nSuspended atomic.Int64
}

// SuspendedAny reports whether this limiter has suspended an account that
// it has not been told was unsuspended (a cheap test for the scheduler).
func (l *Limiter) SuspendedAny() bool { return l.nSuspended.Load() > 0 }

// Suspended reports whether this limiter suspended user.
func (l *Limiter) Suspended(user string) bool {
	_, ok := l.suspended.Load(user)
	return ok
}

// Forget drops user from the accounts this limiter suspended (after an
// operator unsuspended it).
func (l *Limiter) Forget(user string) {
	if _, ok := l.suspended.LoadAndDelete(user); ok {
		l.nSuspended.Add(-1)
	}
}

// Flush writes the counts the store holds in an open transaction
// (SQLStore.CommitEvery) now: before the process ends.
func (l *Limiter) Flush() {
	if f, ok := l.store.(interface{ Flush() }); ok {
		f.Flush()
	}
}

// New returns a limiter over store with the [delivery.rate_limits] section.
func New(cfg config.RateLimitConfig, store Store, o Options) (*Limiter, error) {
	if store == nil {
		return nil, errors.New("ratelimit: no store")
	}
	if o.Log == nil {
		o.Log = slog.New(slog.DiscardHandler)
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Events == nil {
		o.Events = event.Discard{}
	}
	if o.Source == "" {
		o.Source = "smtpd"
	}
	c := prom.Register(o.Registerer, prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "relayguard_rate_limited_total",
		Help: "Messages or recipients refused with 451 4.7.1 by a send limit, by limit.",
	}, []string{"limit"}))
	l := &Limiter{store: store, o: o, limited: c, storeLog: faillog.New(o.Log, "ratelimit: counting in the state store",
		"each message or recipient it cannot count is deferred (451 4.3.0 rate limit state unavailable), never passed uncounted")}
	l.SetConfig(cfg)
	return l, nil
}

// SetConfig puts new limits in force for the checks made from now on
// (serve's reload); the counters so far are kept.
func (l *Limiter) SetConfig(cfg config.RateLimitConfig) { l.conf.Store(&cfg) }

// LimitError is the refusal; its text follows "451 4.7.1 ".
type LimitError struct {
	Limit  string // config key
	Max    int
	Window time.Duration
	Who    string
}

func (e *LimitError) Error() string {
	return fmt.Sprintf("Error: %s exceeded its limit (%s = %d per %s), try again later", e.Who, e.Limit, e.Max, e.per())
}

// Reason names the limit that bit, for logs, hold reasons and alerts:
// "user bob over delivery.rate_limits.user_messages_per_hour = 3 per hour".
func (e *LimitError) Reason() string {
	return fmt.Sprintf("%s over delivery.rate_limits.%s = %d per %s", e.Who, e.Limit, e.Max, e.per())
}

func (e *LimitError) per() string {
	if e.Window == 24*time.Hour {
		return "day"
	}
	return "hour"
}

func windowStart(now time.Time, w time.Duration) time.Time { return now.UTC().Truncate(w) }

// check counts n against a limit; max 0 disables it.
func (l *Limiter) check(ctx context.Context, s Sender, limit string, max int, w time.Duration, key, who string, n int64) error {
	if max <= 0 {
		return nil
	}
	now := l.o.Now()
	c, err := l.store.Add(ctx, limit+"\x00"+key, windowStart(now, w), w, n)
	if err != nil {
		// The state store is down: defer rather than let mail through
		// unlimited or refuse it for good.
		l.storeLog.Fail(err, "limit", limit, "key", key)
		return fmt.Errorf("Error: rate limit state unavailable, try again later")
	}
	l.storeLog.OK()
	if c <= int64(max) {
		return nil
	}
	return l.bite(ctx, s, &LimitError{Limit: limit, Max: max, Window: w, Who: who})
}

// bite logs, publishes, counts and (optionally) suspends.
func (l *Limiter) bite(ctx context.Context, s Sender, e *LimitError) error {
	l.limited.WithLabelValues(e.Limit).Inc()
	maillog.New(l.o.Log).SendLimitReached(ctx, maillog.Conn{Client: s.IP, Listener: s.Listener}, "delivery.rate_limits."+e.Limit, e.Max, s.User, s.From)
	l.o.Events.Publish(ctx, event.Event{
		Time: l.o.Now(), Kind: event.RateLimited, Source: l.o.Source, IP: s.IP, User: s.User,
		Rule: "delivery.rate_limits." + e.Limit, Detail: fmt.Sprintf("%s: more than %d per %s", e.Who, e.Max, e.Window),
		Service: s.Listener,
	})
	if l.conf.Load().SuspendOnLimit && s.User != "" {
		if l.o.Suspender != nil {
			if err := l.o.Suspender.Suspend(ctx, s.User, e); err != nil {
				l.o.Log.Error("ratelimit: suspending account", "user", s.User, "err", err)
			} else {
				l.o.Log.Warn("account suspended after a send limit", "user", s.User, "limit", e.Limit)
				if _, loaded := l.suspended.LoadOrStore(s.User, struct{}{}); !loaded {
					l.nSuspended.Add(1)
				}
			}
		}
		if l.o.Holder != nil {
			n, err := l.o.Holder.HoldUser(ctx, s.User, "account "+s.User+" suspended: "+e.Reason())
			if err != nil {
				l.o.Log.Error("ratelimit: holding queued mail", "user", s.User, "err", err)
			} else {
				l.o.Log.Warn("queued mail of suspended account held", "user", s.User, "messages", n)
			}
		}
	}
	return e
}

func senderDomain(from string) string {
	if i := strings.LastIndexByte(from, '@'); i >= 0 {
		return strings.ToLower(from[i+1:])
	}
	return ""
}

// Rcpt counts one recipient: recipients per day and new
// recipients per day of an authenticated user.
func (l *Limiter) Rcpt(ctx context.Context, s Sender, rcpt string) error {
	if s.User == "" {
		return nil
	}
	who := "user " + s.User
	cfg := l.conf.Load()
	if one, ok := l.store.(*SQLStore); ok {
		return l.rcptOnce(ctx, one, s, strings.ToLower(rcpt), cfg, who)
	}
	if err := l.check(ctx, s, "user_recipients_per_day", cfg.UserRecipientsPerDay, 24*time.Hour, s.User, who, 1); err != nil {
		return err
	}
	if cfg.UserNewRecipientsPerDay <= 0 {
		return nil
	}
	rcpt = strings.ToLower(rcpt)
	seen, err := l.store.Seen(ctx, s.User, rcpt)
	if err != nil {
		l.storeLog.Fail(err, "user", s.User)
		return fmt.Errorf("Error: rate limit state unavailable, try again later")
	}
	l.storeLog.OK()
	if seen {
		return nil
	}
	if err := l.check(ctx, s, "user_new_recipients_per_day", cfg.UserNewRecipientsPerDay, 24*time.Hour, s.User, who, 1); err != nil {
		return err
	}
	if err := l.store.MarkSeen(ctx, s.User, rcpt, l.o.Now()); err != nil {
		l.storeLog.Fail(err, "user", s.User)
	} else {
		l.storeLog.OK()
	}
	return nil
}

// rcptOnce is Rcpt on the embedded database: the same counts and keys,
// in one transaction (SQLStore.Recipient).
func (l *Limiter) rcptOnce(ctx context.Context, st *SQLStore, s Sender, rcpt string, cfg *config.RateLimitConfig, who string) error {
	if cfg.UserRecipientsPerDay <= 0 && cfg.UserNewRecipientsPerDay <= 0 {
		return nil
	}
	now := l.o.Now()
	day := windowStart(now, 24*time.Hour)
	total := Window{Key: "user_recipients_per_day\x00" + s.User, Start: day, Len: 24 * time.Hour, Max: cfg.UserRecipientsPerDay}
	newr := Window{Key: "user_new_recipients_per_day\x00" + s.User, Start: day, Len: 24 * time.Hour, Max: cfg.UserNewRecipientsPerDay}
	nTotal, nNew, err := st.Recipient(ctx, s.User, rcpt, now, total, newr)
	if err != nil {
		l.storeLog.Fail(err, "user", s.User)
		return fmt.Errorf("Error: rate limit state unavailable, try again later")
	}
	l.storeLog.OK()
	for _, c := range []struct {
		w Window
		n int64
	}{{total, nTotal}, {newr, nNew}} {
		if c.w.Max > 0 && c.n > int64(c.w.Max) {
			limit, _, _ := strings.Cut(c.w.Key, "\x00")
			return l.bite(ctx, s, &LimitError{Limit: limit, Max: c.w.Max, Window: c.w.Len, Who: who})
		}
	}
	return nil
}

// Recipients counts n recipients of an authenticated user against
// recipients per day at once, for a front door that learns only their
// number (Postfix's END-OF-MESSAGE policy request). New recipients cannot
// be told apart there; Rcpt counts them where the addresses are known.
func (l *Limiter) Recipients(ctx context.Context, s Sender, n int) error {
	if s.User == "" || n <= 0 {
		return nil
	}
	return l.check(ctx, s, "user_recipients_per_day", l.conf.Load().UserRecipientsPerDay, 24*time.Hour, s.User, "user "+s.User, int64(n))
}

// Message counts one message: messages per hour of an authenticated user
// (and, when its envelope sender is null, null-sender messages per hour:
// a stolen account must not send bounce-shaped spam unlimited), or of a
// trusted client IP and its sender domain.
func (l *Limiter) Message(ctx context.Context, s Sender, nrcpt int) error {
	if s.User != "" {
		who := "user " + s.User
		if err := l.check(ctx, s, "user_messages_per_hour", l.conf.Load().UserMessagesPerHour, time.Hour, s.User, who, 1); err != nil {
			return err
		}
		if s.From == "" {
			return l.check(ctx, s, "user_null_sender_messages_per_hour", l.conf.Load().UserNullSenderMessagesPerHour, time.Hour, s.User, who, 1)
		}
		return nil
	}
	if !s.Trusted {
		return nil
	}
	if s.IP.IsValid() {
		if err := l.check(ctx, s, "ip_messages_per_hour", l.conf.Load().IPMessagesPerHour, time.Hour, s.IP.String(), "client "+s.IP.String(), 1); err != nil {
			return err
		}
	}
	if d := senderDomain(s.From); d != "" {
		return l.check(ctx, s, "sender_domain_messages_per_hour", l.conf.Load().SenderDomainMessagesPerHour, time.Hour, d, "sender domain "+d, 1)
	}
	return nil
}

// Local counts one message a local program submitted with sendmail (seen
// by the milter on Postfix's non_smtpd_milters) and its nrcpt recipients:
// local messages per hour and local recipients per day, keyed by the
// submitting uid. s.User is the uid's user name, for logs and events.
func (l *Limiter) Local(ctx context.Context, s Sender, uid int, nrcpt int) error {
	key := "uid:" + strconv.Itoa(uid)
	who := "local user " + s.User + " (uid " + strconv.Itoa(uid) + ")"
	if s.User == "" {
		who = "local uid " + strconv.Itoa(uid)
	}
	if err := l.check(ctx, s, "local_messages_per_hour", l.conf.Load().LocalMessagesPerHour, time.Hour, key, who, 1); err != nil {
		return err
	}
	if nrcpt <= 0 {
		return nil
	}
	return l.check(ctx, s, "local_recipients_per_day", l.conf.Load().LocalRecipientsPerDay, 24*time.Hour, key, who, int64(nrcpt))
}

// Usage is how much of one per-user send limit an account has used in the
// limit's current window.
type Usage struct {
	Limit  string `json:"limit"` // the key under delivery.rate_limits
	Max    int    `json:"max"`
	Window string `json:"window"`
	Used   int64  `json:"used"`
}

// Usage reports user's use of each per-user limit in force (the console's
// accounts page). It adds nothing to the counters.
func (l *Limiter) Usage(ctx context.Context, user string) ([]Usage, error) {
	cfg := l.conf.Load()
	now := l.o.Now()
	var out []Usage
	for _, x := range []struct {
		limit string
		max   int
		w     time.Duration
	}{
		{"user_messages_per_hour", cfg.UserMessagesPerHour, time.Hour},
		{"user_null_sender_messages_per_hour", cfg.UserNullSenderMessagesPerHour, time.Hour},
		{"user_recipients_per_day", cfg.UserRecipientsPerDay, 24 * time.Hour},
		{"user_new_recipients_per_day", cfg.UserNewRecipientsPerDay, 24 * time.Hour},
	} {
		if x.max <= 0 {
			continue
		}
		n, err := l.store.Add(ctx, x.limit+"\x00"+user, windowStart(now, x.w), x.w, 0)
		if err != nil {
			return out, err
		}
		out = append(out, Usage{Limit: x.limit, Max: x.max, Window: x.w.String(), Used: n})
	}
	return out, nil
}
