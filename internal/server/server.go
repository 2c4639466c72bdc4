// Package server runs `relayguard serve`: it builds the SMTP server, the
// policy engine, the guard and the delivery side from a finished
// configuration, runs the SMTP and admin listeners, reloads the
// configuration and the certificate on request (SIGHUP) without dropping
// sessions, and stops everything in order.
package server

import (
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"strings"
	"sync"

	"github.com/relayguard/relayguard/internal/certs"
	"github.com/relayguard/relayguard/internal/config"
	"github.com/relayguard/relayguard/internal/console"
	"github.com/relayguard/relayguard/internal/event"
	"github.com/relayguard/relayguard/internal/prom"
	"github.com/relayguard/relayguard/internal/queue"
	"github.com/relayguard/relayguard/internal/smtpd"
	"github.com/relayguard/relayguard/internal/store"
	"github.com/relayguard/relayguard/internal/userdb"
)

// Options are what the command line adds to the configuration.
type Options struct {
	// Notice receives the few lines a person starting serve by hand
	// reads (where it listens, how to add a user). nil: os.Stderr.
	Notice io.Writer
	// Reload receives one value per reload request (SIGHUP); Load reads
	// the configuration again for it (the same --config and --data-dir).
	// Either nil: no reload.
	Reload <-chan os.Signal
	Load   func() (*config.Config, error)
	// Level is the level of the logger; a reload sets it from log.level.
	Level *slog.LevelVar
}

// server is a running serve.
type server struct {
	cfg    *config.Config // in force
	log    *slog.Logger
	opt    Options
	notice io.Writer

	srv   *smtpd.Server
	ext   *extensions
	certp *certs.Provider
	errc  chan error
	wg    sync.WaitGroup // listener goroutines

	// activated are the sockets passed by systemd, by name; bound are the
	// listeners served, by listener name.
	activated map[string]net.Listener
	bound     map[string]*boundListener
}

// boundListener is a listener being served.
type boundListener struct {
	address string
	ln      net.Listener
}

// Run serves until ctx ends or a listener fails.
func Run(ctx context.Context, cfg *config.Config, log *slog.Logger, opt Options) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	s := &server{cfg: cfg, log: log, opt: opt, notice: opt.Notice, bound: map[string]*boundListener{}}
	if s.notice == nil {
		s.notice = os.Stderr
	}

	// Everything config check checks, before anything is opened or started.
	if err := Check(cfg); err != nil {
		return err
	}
	if err := os.MkdirAll(cfg.DataDir, 0o750); err != nil {
		return fmt.Errorf("data dir %s: %w", cfg.DataDir, err)
	}
	var err error
	if s.certp, err = loadTLS(cfg, log); err != nil {
		return err
	}
	st, err := store.Open(ctx, cfg.DataDir, cfg.Store.URL, log)
	if err != nil {
		return err
	}
	defer st.Close()
	users, err := userdb.Open(ctx, st.DB, UserdbOptions(cfg))
	if err != nil {
		return err
	}
	users.Prepare() // the decoy hash of unknown users' logins, before any login
	spool, err := queue.OpenSpool(cfg.Spool.Dir, cfg.Spool.GroupCommit.D(), log)
	if err != nil {
		return err
	}
	defer spool.Close()

	// Bind before starting anything, so that a port in use fails the start
	// before any goroutine runs.
	s.activated = systemdListeners()
	lns, err := s.bind(cfg.Listeners)
	if err != nil {
		return err
	}
	defer closeAll(lns)
	reg := prom.NewRegistry() // every component registers here; served on /metrics
	var admin *adminListener
	if cfg.Admin.Listen != "" {
		if admin, err = listenAdmin(cfg, cfg.Admin.Listen, reg, func() (*tls.Config, error) { return s.certp.Config(), nil }); err != nil {
			return err
		}
		defer admin.Close()
	}
	stopCerts, err := runCerts(ctx, cfg, log, s.certp)
	if err != nil {
		return err
	}
	defer stopCerts()

	bus := &event.Bus{}
	deps := smtpd.Deps{
		Users: users, Creds: users, Spool: spool, TLS: s.certp.Config(), Events: bus, Log: log,
		Metrics: smtpd.NewMetrics(reg),
	}
	if s.ext, err = wireExtensions(ctx, cfg, log, st, bus, spool, &deps, reg); err != nil {
		return err
	}
	defer s.ext.stop()
	if s.srv, err = smtpd.New(cfg.SMTP(), deps); err != nil {
		return err
	}
	if admin != nil {
		con, err := admin.startConsole(ctx, &s.wg, cfg, cfg.Admin.Listen, st, log, console.Options{
			Guard: s.ext.guard, Events: bus, Spool: spool, Users: users, Accounts: s.ext.accounts, Reputation: s.ext.reputation, Limiter: s.ext.delivery.Limiter,
			Metrics: reg, Command: "serve"})
		if err != nil {
			return err
		}
		if con != nil {
			bus.Subscribe(con)
		}
	}

	s.errc = make(chan error, 1)
	for i, ln := range lns {
		lc := cfg.Listeners[i]
		s.serve(ctx, lc, ln)
		fmt.Fprintf(s.notice, "relayguard: %s (%s) listening on %s\n", lc.Name, lc.Mode, ln.Addr())
	}
	if admin != nil {
		s.wg.Go(func() {
			if err := admin.Run(ctx); err != nil {
				s.fail(fmt.Errorf("admin: %w", err))
			}
		})
		log.Info("listening", "listener", "admin", "address", admin.Addr().String())
		fmt.Fprintf(s.notice, "relayguard: admin/metrics on %s/metrics\n", admin.URL(cfg, cfg.Admin.Listen))
		if cfg.Admin.Console {
			fmt.Fprintf(s.notice, "relayguard: console on %s/ (add an admin with: relayguard admin add NAME --data-dir %s)\n", admin.URL(cfg, cfg.Admin.Listen), cfg.DataDir)
		}
	}
	fmt.Fprintf(s.notice, "relayguard: data in %s; local domains %s\n", cfg.DataDir, strings.Join(cfg.Site.LocalDomains, ", "))
	fmt.Fprintf(s.notice, "relayguard: add a user with: relayguard user add USER --data-dir %s\n", cfg.DataDir)

	reload := opt.Reload
	if opt.Load == nil {
		reload = nil
	}
loop:
	for {
		select {
		case <-ctx.Done():
			break loop
		case err = <-s.errc:
			break loop
		case <-reload:
			s.reload(ctx)
		}
	}
	log.Info("shutting down")
	cancel() // the admin listener stops with it
	for _, b := range s.bound {
		b.ln.Close()
	}
	s.srv.Shutdown()
	s.wg.Wait()
	return err
}

// fail ends Run with err (the first one).
func (s *server) fail(err error) {
	select {
	case s.errc <- err:
	default:
	}
}

// bind binds the listeners given, all or none: the sockets systemd passed
// for "systemd:NAME" addresses, a new socket for the others.
func (s *server) bind(lcs []config.ListenerConfig) ([]net.Listener, error) {
	var out []net.Listener
	for _, lc := range lcs {
		ln, err := openListener(lc, s.activated)
		if err != nil {
			closeAll(out)
			return nil, err
		}
		out = append(out, ln)
	}
	return out, nil
}

// serve runs the SMTP server on ln for lc until the listener is closed.
func (s *server) serve(ctx context.Context, lc config.ListenerConfig, ln net.Listener) {
	s.bound[lc.Name] = &boundListener{address: lc.Address, ln: ln}
	s.log.Info("listening", "listener", lc.Name, "mode", lc.Mode, "address", ln.Addr().String())
	s.wg.Go(func() {
		if err := s.srv.Serve(ctx, ln, lc); err != nil {
			s.fail(err)
		}
	})
}

// UserdbOptions are the account store's settings from [auth].
func UserdbOptions(cfg *config.Config) userdb.Options {
	return userdb.Options{PasswordHash: cfg.Auth.PasswordHash, SCRAMIterations: cfg.Auth.SCRAMIterations, CRAMMD5: cfg.Auth.CRAMMD5,
		HashMemory: cfg.Auth.HashMemory}
}
