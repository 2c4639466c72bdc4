// Package server runs `relayguard serve`: it builds the SMTP server, the
// policy engine, the guard and the delivery side from a finished
// configuration, runs the SMTP and admin listeners, and stops them in order.
package server

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"
	"sync"

	"github.com/relayguard/relayguard/internal/config"
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
}

// Run serves until ctx ends or a listener fails.
func Run(ctx context.Context, cfg *config.Config, log *slog.Logger, opt Options) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	notice := opt.Notice
	if notice == nil {
		notice = os.Stderr
	}

	// Everything config check checks, before anything is opened or started.
	if err := Check(cfg); err != nil {
		return err
	}
	if err := os.MkdirAll(cfg.DataDir, 0o750); err != nil {
		return fmt.Errorf("data dir %s: %w", cfg.DataDir, err)
	}
	certp, err := loadTLS(cfg, log)
	if err != nil {
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
	spool, err := queue.OpenSpool(cfg.Spool.Dir, cfg.Spool.GroupCommit.D(), log)
	if err != nil {
		return err
	}
	defer spool.Close()

	// Bind before starting anything, so that a port in use fails the start
	// before any goroutine runs.
	lns, err := openListeners(cfg)
	if err != nil {
		return err
	}
	defer closeAll(lns)
	reg := prom.NewRegistry() // every component registers here; served on /metrics
	var admin *prom.Server
	if cfg.Admin.Listen != "" {
		if admin, err = prom.Listen(cfg.Admin.Listen, reg); err != nil {
			return fmt.Errorf("admin: %w", err)
		}
		defer admin.Close()
	}
	stopCerts, err := runCerts(ctx, cfg, log, certp)
	if err != nil {
		return err
	}
	defer stopCerts()

	bus := &event.Bus{}
	deps := smtpd.Deps{
		Users: users, Creds: users, Spool: spool, TLS: certp.Config(), Events: bus, Log: log,
		Metrics: smtpd.NewMetrics(reg),
	}
	stop, err := wireExtensions(ctx, cfg, log, st, bus, spool, &deps, reg)
	if err != nil {
		return err
	}
	defer stop()
	srv, err := smtpd.New(cfg.SMTP(), deps)
	if err != nil {
		return err
	}

	var wg sync.WaitGroup
	errc := make(chan error, len(lns)+1)
	for i, ln := range lns {
		lc := cfg.Listeners[i]
		log.Info("listening", "listener", lc.Name, "mode", lc.Mode, "address", ln.Addr().String())
		fmt.Fprintf(notice, "relayguard: %s (%s) listening on %s\n", lc.Name, lc.Mode, ln.Addr())
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := srv.Serve(ctx, ln, lc); err != nil {
				errc <- err
			}
		}()
	}
	if admin != nil {
		wg.Go(func() {
			if err := admin.Run(ctx); err != nil {
				errc <- fmt.Errorf("admin: %w", err)
			}
		})
		log.Info("listening", "listener", "admin", "address", admin.Addr().String())
		fmt.Fprintf(notice, "relayguard: admin/metrics on http://%s/metrics\n", admin.Addr())
	}
	fmt.Fprintf(notice, "relayguard: data in %s; local domains %s\n", cfg.DataDir, strings.Join(cfg.Site.LocalDomains, ", "))
	fmt.Fprintf(notice, "relayguard: add a user with: relayguard user add USER --data-dir %s\n", cfg.DataDir)

	select {
	case <-ctx.Done():
	case err = <-errc:
	}
	log.Info("shutting down")
	cancel() // the admin listener stops with it
	srv.Shutdown()
	wg.Wait()
	return err
}

// UserdbOptions are the account store's settings from [auth].
func UserdbOptions(cfg *config.Config) userdb.Options {
	return userdb.Options{PasswordHash: cfg.Auth.PasswordHash, SCRAMIterations: cfg.Auth.SCRAMIterations, CRAMMD5: cfg.Auth.CRAMMD5}
}
