// Package service starts relayguard's delivery side for `relayguard serve`:
// the send limiter the SMTP server consults, and the scheduler that
// delivers the spool. It exists so that serve (and the delivery benchmark)
// wire the same pieces the same way.
package service

import (
	"context"
	"log/slog"

	"github.com/relayguard/relayguard/internal/config"
	"github.com/relayguard/relayguard/internal/deliver"
	"github.com/relayguard/relayguard/internal/event"
	"github.com/relayguard/relayguard/internal/msgauth"
	"github.com/relayguard/relayguard/internal/queue"
	"github.com/relayguard/relayguard/internal/ratelimit"
	"github.com/relayguard/relayguard/internal/store"
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
}

// Start builds the limiter over the process's state stores (the SQLite
// database, or Redis shared by several servers with the database as its
// fallback) and starts the scheduler on spool. users suspends accounts when
// suspend_on_limit is set (a *userdb.DB; nil: no suspension); events
// receives rate_limited events (the guard's bus).
func Start(ctx context.Context, cfg *config.Config, log *slog.Logger, st *store.Stores, events event.Sink,
	users ratelimit.Suspender, spool *queue.Spool) (*Delivery, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	counters, err := ratelimit.NewStore(ctx, st, log)
	if err != nil {
		return nil, err
	}
	lim, err := ratelimit.New(cfg.Delivery.RateLimits, counters, ratelimit.Options{
		Events: events, Suspender: users, Holder: SpoolHolder{Spool: spool}, Log: log,
	})
	if err != nil {
		return nil, err
	}
	d, err := deliver.New(cfg.Delivery, cfg.Hostname, log, deliver.Options{LocalDomains: cfg.Site.LocalDomains})
	if err != nil {
		return nil, err
	}
	signer, err := msgauth.LoadSigner(cfg.DKIM)
	if err != nil {
		d.Close()
		return nil, err
	}
	sched := queue.NewScheduler(spool, d, cfg.Delivery, cfg.Hostname, log)
	if signer != nil {
		sched.SetSigner(signer)
		log.Info("dkim: signing outbound mail", "domains", signer.Domains())
	}
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
	s := &Delivery{Limiter: lim, Scheduler: sched, Deliverer: d, cancel: cancel, done: make(chan error, 1)}
	go func() { s.done <- sched.Run(rctx) }()
	return s, nil
}

// accountGetter reads an account's state (internal/userdb.DB).
type accountGetter interface {
	Get(ctx context.Context, user string) (userdb.Account, error)
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
	s.Deliverer.Close()
	return err
}
