package server

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/relayguard/relayguard/internal/accounts"
	"github.com/relayguard/relayguard/internal/config"
	"github.com/relayguard/relayguard/internal/console"
	"github.com/relayguard/relayguard/internal/event"
	"github.com/relayguard/relayguard/internal/firewall"
	"github.com/relayguard/relayguard/internal/guard"
	"github.com/relayguard/relayguard/internal/logwatch"
	"github.com/relayguard/relayguard/internal/maillog"
	"github.com/relayguard/relayguard/internal/milter"
	"github.com/relayguard/relayguard/internal/policy"
	"github.com/relayguard/relayguard/internal/policyd"
	"github.com/relayguard/relayguard/internal/prom"
	"github.com/relayguard/relayguard/internal/ratelimit"
	"github.com/relayguard/relayguard/internal/store"
	"github.com/relayguard/relayguard/internal/timerslack"
	"github.com/relayguard/relayguard/internal/userdb"
)

// The daemons for an existing Postfix/Dovecot host: `relayguard policy`,
// `relayguard milter` and `relayguard watch`. Each opens the state stores
// once, owns the goroutines it starts and waits for them before the stores
// close.

// Policy runs the Postfix policy delegation service on cfg.Policy.Listen
// until ctx is done, with the send limits of [delivery.rate_limits], and
// serves its metrics on metricsAddr when it is not empty.
func Policy(ctx context.Context, cfg *config.Config, log *slog.Logger, metricsAddr string) error {
	return frontDoor(ctx, cfg, log, metricsAddr, "policyd", func(ctx context.Context, fd frontDoorDeps) (net.Listener, serveFunc, error) {
		eng, err := policy.New(cfg.Site, cfg.Policy, cfg.DNSBL, policy.Deps{Logger: log, Source: "policyd", Registerer: fd.reg})
		if err != nil {
			return nil, nil, err
		}
		ln, err := policyd.Listen(cfg.Policy.Listen)
		if err != nil {
			return nil, nil, err
		}
		fd.wg.Go(func() { eng.Run(ctx) }) // DNS list health checks
		s := &policyd.Server{Engine: eng, Logger: log, IdleTimeout: cfg.Policy.IdleTimeout.D(), MaxConns: cfg.Policy.MaxConnections,
			Limits: &policyd.Limits{Limiter: fd.lim, Trusted: cfg.Site.Trusted, Action: cfg.Policy.LimitAction,
				Accounts: accounts.Hooks{S: fd.acct}},
			Registerer: fd.reg}
		log.Info("policy service listening", "address", ln.Addr().String(), "network", ln.Addr().Network())
		return ln, s.Serve, nil
	})
}

// Milter runs the milter on cfg.Milter.Listen until ctx is done, and
// serves its metrics on metricsAddr when it is not empty.
func Milter(ctx context.Context, cfg *config.Config, log *slog.Logger, metricsAddr string) error {
	// Fewer wake-ups of the runtime's monitor thread per event (package
	// timerslack); the unit's TimerSlackNSec= does it without root.
	if n, err := timerslack.Set(milter.TimerSlack); err != nil {
		log.Warn("milter: timer slack not set on every thread (needs CAP_SYS_NICE, or TimerSlackNSec= in the unit)", "slack", milter.TimerSlack, "threads_set", n, "err", err)
	}
	return frontDoor(ctx, cfg, log, metricsAddr, "milter", func(ctx context.Context, fd frontDoorDeps) (net.Listener, serveFunc, error) {
		users, err := userdb.Open(ctx, fd.st.DB, UserdbOptions(cfg))
		if err != nil {
			return nil, nil, err
		}
		opt := milter.Options{
			Config: cfg.Milter, Limiter: fd.lim, Log: maillog.New(log), Accounts: accounts.Hooks{S: fd.acct},
			Owners: milter.UserDBOwners{Users: users, LocalDomains: cfg.Site.LocalDomains},
		}
		if len(cfg.Policy.EndOfDataRestrictions) > 0 {
			// check_dmarc and the rest of the end-of-message list for
			// Postfix's inbound mail (docs/msgauth.md).
			eng, err := policy.New(cfg.Site, cfg.Policy, cfg.DNSBL, policy.Deps{Logger: log, Source: "milter", Registerer: fd.reg})
			if err != nil {
				return nil, nil, err
			}
			fd.wg.Go(func() { eng.Run(ctx) })
			opt.EndOfData, opt.AuthservID = eng, cfg.Policy.DMARC.ID(cfg.Site.Hostname)
		}
		srv, err := milter.New(opt)
		if err != nil {
			return nil, nil, err
		}
		ln, err := milter.Listen(cfg.Milter.Listen)
		if err != nil {
			return nil, nil, err
		}
		log.Info("milter listening", "address", ln.Addr().String(), "network", ln.Addr().Network())
		return ln, srv.Serve, nil
	})
}

// serveFunc serves a front door's listener until ctx is done.
type serveFunc func(ctx context.Context, ln net.Listener) error

// frontDoorDeps are what frontDoor opened for a front door's build.
type frontDoorDeps struct {
	st   *store.Stores
	lim  *ratelimit.Limiter
	acct *accounts.Service // compromise detection and containment
	reg  prometheus.Registerer
	wg   *sync.WaitGroup // goroutines the front door starts
}

// frontDoor runs a front door of an existing Postfix host (policy
// service, milter): it opens the state stores, the send limiter and the
// accounts' detection and response, lets
// build make the listener and its server, serves the metrics, and on
// return stops every goroutine (cancel) and waits for them (wg) before
// the stores close.
func frontDoor(ctx context.Context, cfg *config.Config, log *slog.Logger, metricsAddr, source string,
	build func(context.Context, frontDoorDeps) (net.Listener, serveFunc, error)) error {
	reg := prom.NewRegistry()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	st, err := store.Open(ctx, cfg.DataDir, cfg.Store.URL, log)
	if err != nil {
		return err
	}
	defer st.Close()
	var lim *ratelimit.Limiter
	defer func() {
		if lim != nil {
			lim.Flush() // the last counts, after the front door's goroutines
		}
	}()
	var wg sync.WaitGroup
	defer wg.Wait()
	defer cancel()
	lim, err = newLimiter(ctx, cfg, st, log, reg, source)
	if err != nil {
		return err
	}
	acct, err := startAccounts(ctx, &wg, cfg, st, log, reg, accounts.Setup{Command: source})
	if err != nil {
		return err
	}
	ln, serve, err := build(ctx, frontDoorDeps{st: st, lim: lim, acct: acct, reg: reg, wg: &wg})
	if err != nil {
		return err
	}
	if err := startMetrics(ctx, &wg, metricsAddr, reg, log); err != nil {
		ln.Close()
		return err
	}
	return serve(ctx, ln)
}

// newLimiter builds the send limits of [delivery.rate_limits] over the
// state stores: the SQLite database in the data directory, and
// Redis/Valkey when [store] url names it (then every front door of every
// host shares one budget per user). source names the front door in events.
func newLimiter(ctx context.Context, cfg *config.Config, st *store.Stores, log *slog.Logger, reg prometheus.Registerer, source string) (*ratelimit.Limiter, error) {
	counters, err := ratelimit.NewStore(ctx, st, log)
	if err != nil {
		return nil, err
	}
	return ratelimit.New(cfg.Delivery.RateLimits, counters, ratelimit.Options{Log: log, Source: source, Registerer: reg})
}

// startMetrics serves the metrics of reg on addr (nothing when addr is
// empty) until ctx is done, in a goroutine of wg.
func startMetrics(ctx context.Context, wg *sync.WaitGroup, addr string, reg prometheus.Gatherer, log *slog.Logger) error {
	if addr == "" {
		return nil
	}
	m, err := prom.Listen(addr, reg)
	if err != nil {
		return err
	}
	wg.Go(func() {
		if err := m.Run(ctx); err != nil {
			log.Error("metrics listener failed", "address", addr, "error", err)
		}
	})
	log.Info("metrics listening", "address", m.Addr().String())
	return nil
}

// Watch follows the log sources of [guard] (and stdin when it is not nil)
// and enforces the guard's bans through the firewall of [firewall] until
// ctx is done. With admin set (host:port) it serves /metrics, /healthz and
// the web console there.
func Watch(ctx context.Context, cfg *config.Config, log *slog.Logger, stdin io.Reader, admin string) error {
	if err := distinctFiles(cfg.Guard.Files); err != nil {
		return err
	}
	enf, err := firewall.New(cfg.Firewall, log)
	if err != nil {
		return err
	}
	if err := enf.Setup(ctx); err != nil {
		return fmt.Errorf("watch: firewall setup: %w", err)
	}
	st, err := store.Open(ctx, cfg.DataDir, cfg.Store.URL, log)
	if err != nil {
		return err
	}
	defer st.Close()
	reg := prom.NewRegistry()
	var adm *adminListener
	if admin != "" {
		adm, err = listenAdmin(cfg, admin, reg, func() (*tls.Config, error) {
			p, err := loadTLS(cfg, log)
			if err != nil {
				return nil, err
			}
			return p.Config(), nil
		})
		if err != nil {
			return err
		}
		defer adm.Close()
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	bus := &event.Bus{}
	g, err := guard.Open(ctx, cfg.Guard, cfg.Site, log, st, guard.Options{Enforcer: enf, OnBan: banEvents(ctx, bus)})
	if err != nil {
		return err
	}
	bus.Subscribe(g)
	state, err := logwatch.NewSQLiteState(ctx, st.DB)
	if err != nil {
		return err
	}

	// The guard's sync loop, the accounts' loop, the Dovecot policy
	// endpoint and each source in its own goroutine (the guard is safe for
	// concurrent use); all are waited for before the stores close.
	var wg sync.WaitGroup
	defer func() { cancel(); wg.Wait() }()
	acct, err := startAccounts(ctx, &wg, cfg, st, log, reg, accounts.Setup{Command: "watch", Banner: g})
	if err != nil {
		return err
	}
	if err := serveDovecotPolicy(ctx, &wg, cfg.Accounts.DovecotPolicyListen, acct, log); err != nil {
		return err
	}
	rep := startReputation(ctx, &wg, cfg, log, reg, "")
	g.Start(ctx, st.Redis, &wg)
	if adm != nil {
		con, err := adm.startConsole(ctx, &wg, cfg, admin, st, log, console.Options{Guard: g, Events: bus, Accounts: acct, Reputation: rep, Command: "watch"})
		if err != nil {
			return err
		}
		if con != nil {
			bus.Subscribe(con)
		}
		wg.Go(func() {
			if err := adm.Run(ctx); err != nil {
				log.Error("watch: admin listener failed", "address", admin, "err", err)
			}
		})
		log.Info("listening", "listener", "admin", "address", adm.URL(cfg, admin))
	}

	// Every source feeds one Once: the lines Postfix and Dovecot (which may
	// log to different files) write for one failed login count once. The
	// guard, the accounts' detector and the console read the same events.
	bus.Subscribe(acct.Detector)
	sink := logwatch.NewOnce(bus)
	sink.Max, sink.Log = cfg.Guard.MaxTracked, log
	prom.Register(reg, prometheus.NewCounterFunc(prometheus.CounterOpts{
		Name: "relayguard_guard_pairing_dropped_total",
		Help: "Addresses whose recent failed logins were forgotten early because more than guard.max_tracked addresses failed within 5 minutes (a line of one of them may count again).",
	}, func() float64 { return float64(sink.Dropped()) }))
	var sources atomic.Int32
	// A line a source has read is counted to the end even when the stop
	// comes in between: its position is saved as read on the way out, so
	// a ban decided from it with the cancelled context (the store refusing
	// to write it) would be lost for good (bench/cluster: lines written
	// as a node stopped were banned on no node).
	emitCtx := context.WithoutCancel(ctx)
	for _, f := range cfg.Guard.Files {
		sources.Add(1)
		wg.Go(func() {
			fl := &logwatch.Follower{Path: f, State: state, Log: log}
			if err := fl.Run(ctx, logwatch.Events(emitCtx, sink)); err != nil {
				log.Error("watch: file source stopped", "file", f, "err", err)
			}
		})
	}
	if cfg.Guard.Journal && len(cfg.Guard.Files) > 0 {
		// Nothing in a line tells the journal's copy from a file's: when
		// rsyslog writes the journal's mail lines to a followed file, each
		// failure would count twice (a ban at half maxretry).
		log.Warn("watch: guard.journal and guard.files are both read: a line in both (rsyslog writing the journal's mail lines to a followed file) counts twice; set guard.journal_units to units that log to no followed file, or read one of the two",
			"files", cfg.Guard.Files, "journal_units", cfg.Guard.JournalUnits)
	}
	if cfg.Guard.Journal {
		sources.Add(1)
		wg.Go(func() {
			followJournal(ctx, &logwatch.Journal{Units: cfg.Guard.JournalUnits, State: state, Log: log}, sink, log)
		})
	}
	if stdin != nil {
		sources.Add(1)
		wg.Go(func() {
			if err := logwatch.ReadLines(ctx, stdin, logwatch.Events(emitCtx, sink)); err != nil {
				log.Error("watch: stdin", "err", err)
			} else if ctx.Err() == nil {
				// The writer (tail -F, a log shipper) is gone: said, or
				// watch would go on with a source that reads nothing.
				log.Warn("watch: standard input ended; it is no longer read (the other sources and the bans go on)")
			}
		})
	}
	if sources.Load() == 0 {
		log.Warn("watch: no log source configured ([guard] files, journal, or --stdin); enforcing stored bans only")
	}
	log.Info("watching", "files", cfg.Guard.Files, "journal", cfg.Guard.Journal, "stdin", stdin != nil, "firewall", cfg.Firewall.Backend, "shared", st.Shared())
	<-ctx.Done()
	return nil
}

// followJournal runs the journal source until ctx is done. journalctl
// ending (killed by the OOM killer or an operator's pkill, crashed) is
// not the end of the journal: it is started again, after the last entry
// read (the cursor is saved on the way out), 1 s later, doubling to a
// minute while it keeps failing. The source stopped for good before, and
// watch ran on, banning nobody. journalctl not installed is a
// configuration error: said once, not retried.
func followJournal(ctx context.Context, j *logwatch.Journal, sink event.Sink, log *slog.Logger) {
	const first, most = time.Second, time.Minute
	wait := first
	for {
		start := time.Now()
		err := j.Run(ctx, sink)
		if ctx.Err() != nil {
			return
		}
		if errors.Is(err, exec.ErrNotFound) {
			log.Error("watch: journal source stopped", "err", err)
			return
		}
		if time.Since(start) > most {
			wait = first
		}
		if err == nil {
			err = errors.New("journalctl exited")
		}
		log.Error("watch: journal source stopped; starting journalctl again", "err", err, "in", wait)
		select {
		case <-ctx.Done():
			return
		case <-time.After(wait):
		}
		wait = min(2*wait, most)
	}
}

// distinctFiles refuses two [guard] files that are one file (a symbolic or
// hard link, /var/log/maillog and /var/log/mail.log on some systems): each
// would have its follower, and every failure would count twice, banning an
// address at half of guard.maxretry. Files that do not exist yet are not
// compared (config refuses the same path twice).
func distinctFiles(files []string) error {
	type seen struct {
		i  int
		fi os.FileInfo
	}
	var prev []seen
	for i, f := range files {
		fi, err := os.Stat(f)
		if err != nil {
			continue
		}
		for _, p := range prev {
			if os.SameFile(p.fi, fi) {
				return fmt.Errorf("watch: guard.files[%d] %q is the same file as guard.files[%d] %q: every line would be counted twice", i, f, p.i, files[p.i])
			}
		}
		prev = append(prev, seen{i, fi})
	}
	return nil
}
