package server

import (
	"context"
	"log/slog"
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
