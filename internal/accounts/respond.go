package accounts

import (
	"context"
	"errors"
	"net/netip"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/relayguard/relayguard/internal/ban"
	"github.com/relayguard/relayguard/internal/config"
	"github.com/relayguard/relayguard/internal/maillog"
	"github.com/relayguard/relayguard/internal/prom"
)

// Holder holds and releases the queued mail of an account on this host:
// serve's spool (SpoolHolder), Postfix's queue (PostfixHolder).
type Holder interface {
	Hold(ctx context.Context, user, reason string) (int, error)
	Release(ctx context.Context, user string) (int, error)
	String() string
}

// Banner bans a network (internal/guard.Guard).
type Banner interface {
	Ban(ctx context.Context, p netip.Prefix, d time.Duration, reason string) (ban.Ban, error)
}

// Options are the Responder's collaborators; Store is required.
type Options struct {
	Config config.AccountsConfig
	Store  Store
	// Host names this server (queue ids are tied per host); default the
	// machine's host name. Command names the process ("serve", "policy",
	// "milter", "watch", "user") in the suspension record.
	Host, Command string
	Holders       []Holder
	Banner        Banner // decoys ban through it; nil: decoys only log
	Alerter       *Alerter
	Log           *maillog.Logger
	Registerer    prometheus.Registerer
	Now           func() time.Time
}

// Responder contains a taken-over account: it suspends it everywhere
// (the shared store), holds its queued mail on this host, alerts the
// operator, and undoes it on unsuspend.
type Responder struct {
	o       Options
	signals *prometheus.CounterVec
	susp    *prometheus.CounterVec

	// flush writes the observations the front doors deferred (queue ids)
	// before a hold reads them; nil: nothing deferred.
	flush func(context.Context)

	// gen counts the suspensions and unsuspensions this process made
	// (Gate's cache is stale when it changes).
	gen atomic.Int64

	mu     sync.Mutex
	held   map[string]time.Time // users whose mail this process held, and when
	alerts map[string]time.Time // user+signal -> last alert without suspension
}

// NewResponder returns a Responder.
func NewResponder(o Options) *Responder {
	if o.Host == "" {
		o.Host, _ = os.Hostname()
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	reg := o.Registerer
	if reg == nil {
		reg = prometheus.NewRegistry()
	}
	return &Responder{o: o, held: map[string]time.Time{}, alerts: map[string]time.Time{},
		signals: prom.Register(reg, prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "relayguard_account_signals_total", Help: "Compromise signals seen, by signal.",
		}, []string{"signal"})),
		susp: prom.Register(reg, prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "relayguard_account_suspensions_total", Help: "Accounts suspended by this process, by signal.",
		}, []string{"signal"})),
	}
}

// Store is the accounts' state.
func (r *Responder) Store() Store { return r.o.Store }

func (r *Responder) by() string {
	if r.o.Command == "" {
		return r.o.Host
	}
	return r.o.Host + " (" + r.o.Command + ")"
}

// Signal acts on a compromise signal: it is logged, counted, and the
// account suspended (accounts.suspend) or, without suspension, the
// operator alerted (once an hour per account and signal).
func (r *Responder) Signal(ctx context.Context, user, signal, evidence string) {
	r.signals.WithLabelValues(signal).Inc()
	r.o.Log.AccountSignal(ctx, user, signal, evidence)
	if r.o.Config.Suspend {
		if _, err := r.Suspend(ctx, user, signal, evidence); err != nil {
			r.o.Log.Slog().Error("accounts: suspending", "user", user, "signal", signal, "err", err)
		}
		return
	}
	k := key(user) + "\x00" + signal
	r.mu.Lock()
	last, ok := r.alerts[k]
	if !ok || r.o.Now().Sub(last) >= time.Hour {
		r.alerts[k] = r.o.Now()
	}
	r.mu.Unlock()
	if !ok || r.o.Now().Sub(last) >= time.Hour {
		r.o.Alerter.Send(ctx, Alert{User: user, Signal: signal, Evidence: evidence, Action: "alert only (accounts.suspend = false)", Host: r.by(), Time: r.o.Now()})
	}
}

// Suspend suspends user everywhere. The first suspension is logged,
// counted, holds the account's mail on this host and alerts the operator;
// a suspension already in force is left as it is (created false).
func (r *Responder) Suspend(ctx context.Context, user, signal, evidence string) (bool, error) {
	sp := Suspension{User: user, Since: r.o.Now(), Signal: signal, Evidence: evidence, By: r.by()}
	created, err := r.o.Store.Suspend(ctx, sp)
	r.gen.Add(1)
	if err != nil || !created {
		return false, err
	}
	r.susp.WithLabelValues(signal).Inc()
	r.o.Log.AccountSuspended(ctx, user, signal, evidence, sp.By)
	held := r.hold(ctx, user, holdReason(sp))
	r.o.Alerter.Send(ctx, Alert{User: user, Signal: signal, Evidence: evidence, Action: "suspended", Held: held, Host: sp.By, Time: sp.Since})
	return true, nil
}

// Unsuspend lifts the suspension of user and releases the mail held on
// this host (it returns how many messages); other hosts release theirs
// when they hear of it (Run).
func (r *Responder) Unsuspend(ctx context.Context, user string) (Suspension, bool, int, error) {
	sp, ok, err := r.o.Store.Unsuspend(ctx, user)
	r.gen.Add(1)
	if err != nil {
		return sp, false, 0, err
	}
	// The logins that caused the suspension no longer count: the next
	// login does not suspend the account again at once.
	if err := r.o.Store.Forgive(ctx, user, r.o.Now()); err != nil {
		r.o.Log.Slog().Warn("accounts: forgetting the login spread", "user", user, "err", err)
	}
	r.o.Log.AccountUnsuspended(ctx, user, r.by())
	return sp, ok, r.release(ctx, user), nil
}

// hold holds user's queued mail with every holder of this host.
func (r *Responder) hold(ctx context.Context, user, reason string) int {
	if r.flush != nil {
		r.flush(ctx)
	}
	r.mu.Lock()
	r.held[key(user)] = r.o.Now()
	r.mu.Unlock()
	total := 0
	for _, h := range r.o.Holders {
		n, err := h.Hold(ctx, user, reason)
		if err != nil {
			r.o.Log.Slog().Error("accounts: holding queued mail", "user", user, "queue", h.String(), "err", err)
		}
		if n > 0 {
			r.o.Log.Slog().Warn("queued mail of a suspended account held", "user", user, "queue", h.String(), "messages", n)
		}
		total += n
	}
	return total
}

func (r *Responder) release(ctx context.Context, user string) int {
	r.mu.Lock()
	delete(r.held, key(user))
	r.mu.Unlock()
	total := 0
	for _, h := range r.o.Holders {
		n, err := h.Release(ctx, user)
		if err != nil {
			r.o.Log.Slog().Error("accounts: releasing held mail", "user", user, "queue", h.String(), "err", err)
		}
		r.o.Log.Slog().Info("held mail of an unsuspended account released", "user", user, "queue", h.String(), "messages", n)
		total += n
	}
	return total
}

// Decoy bans the prefix of ip after an authentication attempt as the
// decoy name user, unless the name turned out to be a real account.
func (r *Responder) Decoy(ctx context.Context, user string, ip netip.Addr) {
	c := r.o.Config
	if real, err := r.o.Store.LoggedIn(ctx, user); err != nil || real {
		if real {
			r.o.Log.Slog().Warn("accounts: decoy name has logged in successfully; not treated as a decoy (remove it from accounts.decoys)", "user", user)
		}
		return
	}
	p := Network(ip, c.DecoyIPv4, c.DecoyIPv6)
	evidence := "authentication attempt as decoy " + user + " from " + ip.String()
	r.signals.WithLabelValues(config.SignalDecoy).Inc()
	r.o.Log.AccountSignal(ctx, user, config.SignalDecoy, evidence+"; banning "+p.String())
	if r.o.Banner == nil {
		return
	}
	if _, err := r.o.Banner.Ban(ctx, p, c.DecoyBanTime.D(), "decoy username "+user); err != nil {
		r.o.Log.Slog().Warn("accounts: decoy ban", "prefix", p.String(), "err", err)
	}
}

// rehold is how often Run holds a suspended account's mail again.
const rehold = 30 * time.Second

// Run keeps this host in step with suspensions made elsewhere (another
// process on this host, another server of the cluster, `relayguard user`):
// their queued mail here is held, and released when they are lifted. With
// Redis it listens to the announcements and also rereads the list every
// interval; without, it rereads the list every interval.
func (r *Responder) Run(ctx context.Context, interval time.Duration) {
	if len(r.o.Holders) == 0 {
		sh, ok := r.o.Store.(*Shared)
		if !ok {
			<-ctx.Done()
			return
		}
		// Nothing to hold here, but the copy of the cluster's
		// suspensions kept for an outage of Redis (Shared.mirror) is
		// brought up to date all the same.
		t := time.NewTicker(interval)
		defer t.Stop()
		for {
			sh.Suspensions(ctx)
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			}
		}
	}
	wake := make(chan struct{}, 1)
	if sh, ok := r.o.Store.(*Shared); ok {
		// The subscriber is Run's own: Run returns only once it has
		// ended, before the caller closes the Redis client it uses.
		subscribed := make(chan struct{})
		go func() {
			defer close(subscribed)
			sh.Remote().Subscribe(ctx, func(string) {
				select {
				case wake <- struct{}{}:
				default:
				}
			})
		}()
		defer func() { <-subscribed }()
	}
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		r.sync(ctx)
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		case <-wake:
		}
	}
}

// sync holds the mail of suspended accounts not yet held by this process
// and releases the mail of accounts no longer suspended.
func (r *Responder) sync(ctx context.Context) {
	list, err := r.o.Store.Suspensions(ctx)
	if err != nil {
		if !errors.Is(err, context.Canceled) {
			r.o.Log.Slog().Warn("accounts: reading suspensions", "err", err)
		}
		return
	}
	now := map[string]Suspension{}
	for _, sp := range list {
		now[key(sp.User)] = sp
	}
	r.mu.Lock()
	var hold []Suspension
	var release []string
	t := r.o.Now()
	for k, sp := range now {
		// Held again now and then: a message that was under way when
		// the account was suspended reaches the queue after the hold.
		if last, ok := r.held[k]; !ok || t.Sub(last) >= rehold {
			hold = append(hold, sp)
		}
	}
	for k := range r.held {
		if _, ok := now[k]; !ok {
			release = append(release, k)
		}
	}
	r.mu.Unlock()
	for _, sp := range hold {
		r.hold(ctx, sp.User, holdReason(sp))
	}
	for _, u := range release {
		r.release(ctx, u)
	}
}

// holdReason is the reason recorded with the held mail of sp's account:
// the signal and the start of its evidence (the limit that bit, the
// networks counted).
func holdReason(sp Suspension) string {
	ev := sp.Evidence
	if len(ev) > 160 {
		ev = strings.ToValidUTF8(ev[:160], "") + "…"
	}
	if ev == "" {
		return "account " + sp.User + " suspended: " + sp.Signal
	}
	return "account " + sp.User + " suspended: " + sp.Signal + ": " + ev
}

// Evidence joins evidence items for logs and alerts.
func Evidence(items ...string) string { return strings.Join(items, "; ") }
