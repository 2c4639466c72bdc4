package main

import (
	"context"
	"log/slog"
	"os"
	"os/signal"
	"sync"
	"syscall"
)

// keepOnHUP makes SIGHUP harmless for a daemon that cannot reload (policy,
// milter, watch): Go's default for SIGHUP is to end the process (exit 129),
// so a `kill -HUP` or a habit learnt from serve's `systemctl reload` used to
// stop the service silently. It logs that the signal changed nothing and
// that a restart applies the configuration. The returned stop ends the
// watching goroutine and waits for it.
func keepOnHUP(ctx context.Context, log *slog.Logger, name string) (stop func()) {
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	ctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			select {
			case <-ctx.Done():
				return
			case <-hup:
				log.Warn("SIGHUP ignored: this daemon does not reload its configuration; restart it to apply changes", "daemon", name)
			}
		}
	}()
	return func() {
		signal.Stop(hup)
		cancel()
		wg.Wait()
	}
}
