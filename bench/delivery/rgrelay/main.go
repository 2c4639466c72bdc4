// Command rgrelay runs relayguard's SMTP server, durable spool, send limits
// and delivery scheduler in one process, wired the way `relayguard serve`
// wires them (see docs/delivery.md), for the delivery benchmark while the
// serve command does not yet start the scheduler.
package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"syscall"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/relayguard/relayguard/internal/config"
	"github.com/relayguard/relayguard/internal/deliver"
	"github.com/relayguard/relayguard/internal/event"
	"github.com/relayguard/relayguard/internal/queue"
	"github.com/relayguard/relayguard/internal/ratelimit"
	"github.com/relayguard/relayguard/internal/smtpd"
	"github.com/relayguard/relayguard/internal/store"
	"github.com/relayguard/relayguard/internal/userdb"
)

func main() {
	conf := flag.String("config", "", "relayguard TOML configuration")
	data := flag.String("data-dir", "", "data directory")
	flag.Parse()
	if err := run(*conf, *data); err != nil {
		fmt.Fprintln(os.Stderr, "rgrelay:", err)
		os.Exit(1)
	}
}

func run(conf, data string) error {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	cfg, err := config.Load(conf)
	if err != nil {
		return err
	}
	if err := cfg.Finish(data); err != nil {
		return err
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	db, err := store.OpenSQLite(ctx, cfg.DataDir)
	if err != nil {
		return err
	}
	defer db.Close()
	users, err := userdb.Open(ctx, db, userdb.Options{PasswordHash: cfg.Auth.PasswordHash, SCRAMIterations: cfg.Auth.SCRAMIterations})
	if err != nil {
		return err
	}
	spool, err := queue.OpenSpool(cfg.Spool.Dir, cfg.Spool.GroupCommit.D(), log)
	if err != nil {
		return err
	}
	defer spool.Close()
	bus := &event.Bus{}

	// The delivery side, as serve wires it.
	st, err := ratelimit.OpenStore(ctx, cfg.Store.URL, db)
	if err != nil {
		return err
	}
	lim, err := ratelimit.New(cfg.Delivery.RateLimits, st, ratelimit.Options{
		Events: bus, Suspender: users, Holder: ratelimit.SpoolHolder{Spool: spool}, Log: log,
	})
	if err != nil {
		return err
	}
	d, err := deliver.New(cfg.Delivery, cfg.Hostname, log, deliver.Options{LocalDomains: cfg.LocalDomains})
	if err != nil {
		return err
	}
	defer d.Close()
	sched := queue.NewScheduler(spool, d, cfg, log)
	schedDone := make(chan error, 1)
	go func() { schedDone <- sched.Run(ctx) }()

	srv, err := smtpd.New(cfg, smtpd.Deps{Users: users, Creds: users, Spool: spool, Events: bus, Limits: lim, Log: log,
		Metrics: smtpd.NewMetrics(prometheus.NewRegistry())})
	if err != nil {
		return err
	}
	for _, lc := range cfg.Listeners {
		ln, err := net.Listen("tcp", lc.Address)
		if err != nil {
			return err
		}
		go srv.Serve(ctx, ln, lc)
		fmt.Fprintf(os.Stderr, "rgrelay: %s listening on %s\n", lc.Name, ln.Addr())
	}
	<-ctx.Done()
	srv.Shutdown()
	return <-schedDone
}
