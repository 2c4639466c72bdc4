package server

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/relayguard/relayguard/internal/accounts"
	"github.com/relayguard/relayguard/internal/config"
	"github.com/relayguard/relayguard/internal/store"
)

// startAccounts opens the compromise detection and response of [accounts]
// for a command, and runs its loop (holding on this host the queued mail
// of accounts suspended elsewhere) in a goroutine of wg until ctx is done.
func startAccounts(ctx context.Context, wg *sync.WaitGroup, cfg *config.Config, st *store.Stores, log *slog.Logger,
	reg prometheus.Registerer, setup accounts.Setup) (*accounts.Service, error) {
	setup.Log, setup.Registerer = log, reg
	svc, err := accounts.Open(ctx, cfg, st, setup)
	if err != nil {
		return nil, err
	}
	wg.Go(func() { svc.Run(ctx, time.Second) })
	return svc, nil
}

// serveDovecotPolicy serves Dovecot's authentication policy
// (accounts.dovecot_policy_listen; nothing when empty) until ctx is done,
// in goroutines of wg.
func serveDovecotPolicy(ctx context.Context, wg *sync.WaitGroup, addr string, acct *accounts.Service, log *slog.Logger) error {
	if addr == "" {
		return nil
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("accounts.dovecot_policy_listen %q: %w", addr, err)
	}
	srv := accounts.DovecotPolicy{S: acct}.Server()
	wg.Go(func() {
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Error("dovecot policy listener failed", "address", addr, "err", err)
		}
	})
	wg.Go(func() {
		<-ctx.Done()
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		srv.Shutdown(sctx)
	})
	log.Info("dovecot auth policy listening", "address", ln.Addr().String())
	return nil
}
