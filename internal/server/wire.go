package server

import (
	"context"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/relayguard/relayguard/internal/accounts"
	"github.com/relayguard/relayguard/internal/audit"
	"github.com/relayguard/relayguard/internal/config"
	"github.com/relayguard/relayguard/internal/deliver/service"
	"github.com/relayguard/relayguard/internal/event"
	"github.com/relayguard/relayguard/internal/guard"
	"github.com/relayguard/relayguard/internal/policy"
	"github.com/relayguard/relayguard/internal/queue"
	"github.com/relayguard/relayguard/internal/ratelimit"
	"github.com/relayguard/relayguard/internal/smtpd"
	"github.com/relayguard/relayguard/internal/store"
)

// extensions are what wireExtensions started: stop stops them in reverse
// order of start; policy and delivery are what a reload replaces.
type extensions struct {
	stop     func()
	policy   *policySwitch
	delivery *service.Delivery
	guard    *guard.Guard
	accounts *accounts.Service
	// reputation is the audit's reputation monitor (the console shows it).
	reputation *audit.Monitor
	// newEngine builds a policy engine like the one in force (a reload).
	newEngine func(cfg *config.Config) (*policy.Engine, error)
}

// policySwitch is the policy engine in force (smtpd.PolicyChecker) and the
// goroutine that runs its DNS list health checks. A reload puts a new
// engine in force; checks started on the old one finish on it.
type policySwitch struct {
	cur     atomic.Pointer[policy.Engine]
	ctx     context.Context
	mu      sync.Mutex
	stopRun func() // stops the health checks of the engine in force
}

// Check implements smtpd.PolicyChecker.
func (p *policySwitch) Check(ctx context.Context, req *policy.Request) policy.Verdict {
	return p.cur.Load().Check(ctx, req)
}

// use puts eng in force and runs its health checks until the next use or
// stop; those of the engine it replaces are stopped and waited for.
func (p *policySwitch) use(eng *policy.Engine) {
	ctx, cancel := context.WithCancel(p.ctx)
	done := make(chan struct{})
	go func() { defer close(done); eng.Run(ctx) }() // DNS list health checks
	p.cur.Store(eng)
	p.mu.Lock()
	prev := p.stopRun
	p.stopRun = func() { cancel(); <-done }
	p.mu.Unlock()
	if prev != nil {
		prev()
	}
}

// stop stops the health checks of the engine in force and waits for them.
func (p *policySwitch) stop() {
	p.mu.Lock()
	stop := p.stopRun
	p.stopRun = nil
	p.mu.Unlock()
	if stop != nil {
		stop()
	}
}

// wireExtensions connects the policy engine, the send limits and the
// delivery scheduler (and, in wire_guard.go, the guard) to the SMTP
// server.
func wireExtensions(ctx context.Context, cfg *config.Config, log *slog.Logger, st *store.Stores, bus *event.Bus, spool *queue.Spool, deps *smtpd.Deps, reg prometheus.Registerer) (*extensions, error) {
	var stops []func()
	stop := func() {
		for i := len(stops) - 1; i >= 0; i-- {
			stops[i]()
		}
	}
	ext := &extensions{stop: stop, policy: &policySwitch{}}

	// The restriction lists of [policy], the same engine as `relayguard policy`.
	ext.newEngine = func(cfg *config.Config) (*policy.Engine, error) {
		return policy.New(cfg.Site, cfg.Policy, cfg.DNSBL, policy.Deps{Logger: log, Events: bus, Registerer: reg, Source: "smtpd"})
	}
	eng, err := ext.newEngine(cfg)
	if err != nil {
		return nil, err
	}
	ext.policy.ctx = ctx
	ext.policy.use(eng)
	stops = append(stops, ext.policy.stop)
	deps.Policy = ext.policy

	// The guard: bans, per-IP and per-subnet AUTH limits, POP-before-SMTP.
	g, gstop, err := wireGuard(ctx, cfg, log, st, bus, deps, reg)
	if err != nil {
		stop()
		return nil, err
	}
	ext.guard = g
	stops = append(stops, gstop)

	// The accounts' compromise detection and containment: its detector
	// reads the bus, its gate answers smtpd after AUTH, a suspension holds
	// the account's mail in the spool, decoys are banned by the guard.
	banner, _ := deps.Guard.(accounts.Banner)
	actx, acancel := context.WithCancel(ctx)
	var awg sync.WaitGroup
	acct, err := startAccounts(actx, &awg, cfg, st, log, reg, accounts.Setup{Command: "serve",
		Holders: []accounts.Holder{accounts.SpoolHolder{Spool: spool}}, Banner: banner, AlertSMTP: alertListener(cfg)})
	if err != nil {
		acancel()
		stop()
		return nil, err
	}
	stops = append(stops, func() { acancel(); awg.Wait() })
	bus.Subscribe(acct.Detector)
	deps.Accounts = acct.Gate
	ext.accounts = acct

	// The audit's reputation monitor: own addresses and domains on the DNS
	// lists, certificates' expiry; changes alerted like the accounts'.
	rctx, rcancel := context.WithCancel(ctx)
	var rwg sync.WaitGroup
	ext.reputation = startReputation(rctx, &rwg, cfg, log, reg, alertListener(cfg))
	stops = append(stops, func() { rcancel(); rwg.Wait() })

	// Send limits and the delivery scheduler over the spool. A send limit
	// that suspends an account (suspend_on_limit) suspends it everywhere.
	sd := service.Deps{Stores: st, Spool: spool, Events: bus, Log: log, Registerer: reg,
		Outcome: func(user, rcpt string, ok bool) { acct.Detector.Outcome(actx, user, rcpt, !ok, time.Now()) }}
	if users, ok := deps.Users.(service.Users); ok {
		sd.Users, sd.Suspender = users, limitSuspender{users: users, acct: acct}
	}
	dl, err := service.Start(ctx, cfg, sd)
	if err != nil {
		stop()
		return nil, err
	}
	deps.Limits = dl.Limiter
	ext.delivery = dl
	stops = append(stops, func() {
		if err := dl.Stop(); err != nil {
			log.Error("delivery: stop", "err", err)
		}
	})
	return ext, nil
}

// limitSuspender is what a send limit with suspend_on_limit suspends: the
// relayguard account (userdb) and, through the accounts' responder, the
// login everywhere (every server sharing the store, Postfix's front doors).
type limitSuspender struct {
	users service.Users
	acct  *accounts.Service
}

func (l limitSuspender) Suspend(ctx context.Context, user string, e *ratelimit.LimitError) error {
	if err := l.users.Suspend(ctx, user); err != nil {
		return err
	}
	_, err := l.acct.Suspend(ctx, user, config.SignalRateLimit, e.Reason()+" (suspend_on_limit)")
	return err
}

// alertListener is where serve sends alert mail when accounts.alert_smtp
// is empty: its own first MX listener (the admin's address is usually
// local).
func alertListener(cfg *config.Config) string {
	for _, l := range cfg.Listeners {
		if l.Mode == config.ModeMX && !strings.HasPrefix(l.Address, "systemd:") {
			return l.Address
		}
	}
	return ""
}
