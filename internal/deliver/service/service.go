// Package service starts relayguard's delivery side for `relayguard serve`:
// the send limiter the SMTP server consults, and the scheduler that
// delivers the spool. It exists so that serve (and the delivery benchmark)
// wire the same pieces the same way.
package service

import (
	"context"
	"log/slog"
	"net/http"
	"path/filepath"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/relayguard/relayguard/internal/config"
	"github.com/relayguard/relayguard/internal/deliver"
	"github.com/relayguard/relayguard/internal/event"
	"github.com/relayguard/relayguard/internal/msgauth"
	"github.com/relayguard/relayguard/internal/queue"
	"github.com/relayguard/relayguard/internal/ratelimit"
	"github.com/relayguard/relayguard/internal/store"
	"github.com/relayguard/relayguard/internal/tlsrpt"
	"github.com/relayguard/relayguard/internal/userdb"
)

// Delivery is the running delivery side.
type Delivery struct {
	// Limiter implements smtpd.SendLimiter: put it in smtpd.Deps.Limits.
	Limiter   *ratelimit.Limiter
	Scheduler *queue.Scheduler
	Deliverer *deliver.Deliverer

	cancel context.CancelFunc
	done   chan error
	log    *slog.Logger
	mu     sync.Mutex // Deliverer, replaced by Reload

	rec     *tlsrpt.Recorder // TLS results (RFC 8460); nil: not recorded
	reports chan struct{}    // closed when the TLS report sender stopped
}

// Deps are what the delivery side is built on. Stores and Spool are
// required.
type Deps struct {
	Stores *store.Stores // the process's state stores: send-limit counters
	Spool  *queue.Spool
	// Users suspends accounts when suspend_on_limit is set (a *userdb.DB;
	// nil: no suspension); the limiter then holds the account's spooled
	// mail.
	Users Users
	// Suspender, when set, is what a send limit with suspend_on_limit
	// calls instead of Users.Suspend: it suspends and holds the account's
	// queued mail itself (serve: the accounts' responder, everywhere).
	Suspender  ratelimit.Suspender
	Events     event.Sink            // rate_limited events (the guard's bus); nil: none
	Log        *slog.Logger          // nil: discard
	Registerer prometheus.Registerer // the process's metrics registry; nil: not exported
	// Outcome is told of every recipient of an authenticated user's mail
	// delivered (ok) or refused for good (the accounts' bad-recipients
	// signal); nil: none.
	Outcome func(user, rcpt string, ok bool)
}

// Start builds the limiter over the process's state stores (the SQLite
// database, or Redis shared by several servers with the database as its
// fallback) and starts the scheduler on the spool; it runs until ctx is
// done or Stop, which waits for it.
func Start(ctx context.Context, cfg *config.Config, deps Deps) (*Delivery, error) {
	log, spool, users := deps.Log, deps.Spool, deps.Users
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	counters, err := ratelimit.NewStore(ctx, deps.Stores, log)
	if err != nil {
		return nil, err
	}
	lo := ratelimit.Options{Events: deps.Events, Suspender: deps.Suspender, Log: log, Registerer: deps.Registerer}
	if lo.Suspender == nil {
		lo.Holder = SpoolHolder{Spool: spool}
		if users != nil {
			lo.Suspender = userSuspender{users}
		}
	}
	lim, err := ratelimit.New(cfg.Delivery.RateLimits, counters, lo)
	if err != nil {
		return nil, err
	}
	var rec *tlsrpt.Recorder
	if cfg.Delivery.TLSReports && (cfg.Delivery.MTASTS || cfg.Delivery.DANE) {
		if rec, err = tlsrpt.NewRecorder(filepath.Join(cfg.DataDir, "tlsrpt"), log); err != nil {
			return nil, err
		}
	}
	d, err := deliver.New(cfg.Delivery, cfg.Hostname, log, deliverOptions(cfg, rec))
	if err != nil {
		return nil, err
	}
	signer, err := msgauth.LoadSigner(cfg.DKIM)
	if err != nil {
		d.Close()
		return nil, err
	}
	sched := queue.NewScheduler(spool, d, cfg.Delivery, cfg.Hostname, log)
	sched.SetRegisterer(deps.Registerer)
	if deps.Outcome != nil {
		sched.SetOutcome(func(env *queue.Envelope, rcpt string, ok bool) {
			if env.AuthUser != "" {
				deps.Outcome(env.AuthUser, rcpt, ok)
			}
		})
	}
	setSigner(sched, signer, log)
	if acct, ok := users.(accountGetter); ok {
		// Mail that the open sessions of an account suspended by a send
		// limit still get into the spool (they passed their limit check
		// before the suspension) is held on arrival like the rest of its
		// queued mail. Nothing is checked until a limit suspends someone.
		sched.SetHoldCheck(lim.SuspendedAny, func(env *queue.Envelope) string {
			if env.AuthUser == "" || !lim.Suspended(env.AuthUser) {
				return ""
			}
			a, err := acct.Get(ctx, env.AuthUser)
			if err == nil && !a.Suspended {
				lim.Forget(env.AuthUser) // an operator unsuspended it
				return ""
			}
			return "account " + env.AuthUser + " suspended"
		})
	}
	rctx, cancel := context.WithCancel(ctx)
	s := &Delivery{Limiter: lim, Scheduler: sched, Deliverer: d, cancel: cancel, done: make(chan error, 1), log: log, rec: rec}
	go func() { s.done <- sched.Run(rctx) }()
	if rec != nil {
		// Daily TLS reports (RFC 8460), mailed through the spool.
		snd := &tlsrpt.Sender{Rec: rec, TXT: d.SMTP.Resolver.LookupTXT, Submitter: cfg.Hostname,
			From: "tlsrpt-noreply@" + cfg.Hostname, Spool: spool, HTTP: &http.Client{Timeout: time.Minute}, Log: log}
		s.reports = make(chan struct{})
		go func() { defer close(s.reports); snd.Run(rctx) }()
	}
	return s, nil
}

// deliverOptions are the deliverer's options for cfg: the MTA-STS cache
// under the data directory, TLS results to rec (nil: none).
func deliverOptions(cfg *config.Config, rec *tlsrpt.Recorder) deliver.Options {
	o := deliver.Options{LocalDomains: cfg.Site.LocalDomains, DataDir: cfg.DataDir}
	if rec != nil {
		o.Reporter = rec
	}
	return o
}

func setSigner(sched *queue.Scheduler, signer *msgauth.Signer, log *slog.Logger) {
	if signer == nil {
		sched.SetSigner(nil) // an untyped nil: no signing
		return
	}
	sched.SetSigner(signer)
	log.Info("dkim: signing outbound mail", "domains", signer.Domains())
}

// Reload puts a new [delivery] section (transport table, local_transport,
// TLS policies, smarthost, retries, bounces, send limits) and new [dkim]
// keys in force for the deliveries and checks that start from now on
// (serve's SIGHUP); deliveries in progress finish on the old ones and the
// send-limit counters are kept. Nothing changes if the new section does
// not build.
func (s *Delivery) Reload(cfg *config.Config) error {
	d, err := deliver.New(cfg.Delivery, cfg.Hostname, s.log, deliverOptions(cfg, s.rec))
	if err != nil {
		return err
	}
	signer, err := msgauth.LoadSigner(cfg.DKIM)
	if err != nil {
		d.Close()
		return err
	}
	s.Limiter.SetConfig(cfg.Delivery.RateLimits)
	setSigner(s.Scheduler, signer, s.log)
	old := s.Scheduler.Reconfigure(d, cfg.Delivery, cfg.Hostname)
	s.mu.Lock()
	s.Deliverer = d
	s.mu.Unlock()
	if od, ok := old.(*deliver.Deliverer); ok {
		od.Close() // idle connections only; deliveries in progress finish
	}
	return nil
}

// accountGetter reads an account's state (internal/userdb.DB).
type accountGetter interface {
	Get(ctx context.Context, user string) (userdb.Account, error)
}

// Users suspends an account (internal/userdb.DB).
type Users interface {
	Suspend(ctx context.Context, user string) error
}

// userSuspender suspends the account in the account database alone.
type userSuspender struct{ users Users }

func (u userSuspender) Suspend(ctx context.Context, user string, _ *ratelimit.LimitError) error {
	return u.users.Suspend(ctx, user)
}

// SpoolHolder holds a user's queued mail in the spool (ratelimit.Holder).
type SpoolHolder struct{ Spool *queue.Spool }

// HoldUser implements ratelimit.Holder.
func (h SpoolHolder) HoldUser(_ context.Context, user, reason string) (int, error) {
	ids, err := queue.HoldUser(h.Spool, user, reason)
	return len(ids), err
}

// Stop stops the scheduler (deliveries in progress finish or are retried
// after the next start) and closes connections. Call it before closing the
// spool.
func (s *Delivery) Stop() error {
	s.cancel()
	err := <-s.done
	if s.reports != nil {
		<-s.reports
	}
	s.mu.Lock()
	s.Deliverer.Close()
	s.mu.Unlock()
	return err
}
