// Command rgrelay runs relayguard's SMTP server, durable spool, send limits
// and delivery scheduler in one process, the delivery side started by
// internal/deliver/service exactly as `relayguard serve` is meant to start
// it, for the delivery benchmark (serve did not start the scheduler yet
// when the benchmark was written).
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
	"github.com/relayguard/relayguard/internal/deliver/service"
	"github.com/relayguard/relayguard/internal/event"
	"github.com/relayguard/relayguard/internal/queue"
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
	st, err := store.Open(ctx, cfg.DataDir, cfg.Store.URL, log)
	if err != nil {
		return err
	}
	defer st.Close()
	users, err := userdb.Open(ctx, st.DB, userdb.Options{PasswordHash: cfg.Auth.PasswordHash, SCRAMIterations: cfg.Auth.SCRAMIterations})
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
	dl, err := service.Start(ctx, cfg, service.Deps{Stores: st, Spool: spool, Users: users, Events: bus, Log: log})
	if err != nil {
		return err
	}

	srv, err := smtpd.New(cfg.SMTP(), smtpd.Deps{Users: users, Creds: users, Spool: spool, Events: bus, Limits: dl.Limiter, Log: log,
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
	return dl.Stop()
}
