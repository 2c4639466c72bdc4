package server

import (
	"context"
	"crypto/tls"
	"fmt"
	"log/slog"
	"net/http"
	"sync"
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/relayguard/relayguard/internal/config"
	"github.com/relayguard/relayguard/internal/console"
	"github.com/relayguard/relayguard/internal/prom"
	"github.com/relayguard/relayguard/internal/store"
)

// adminListener is the admin HTTP listener of serve and watch: /metrics,
// /healthz and, with admin.console, the web console. It is bound before
// anything starts (a port in use fails the start); the console is put in
// later, when the parts it shows exist (until then its paths answer 503).
type adminListener struct {
	*prom.Server
	console atomic.Pointer[console.Console]
}

func (a *adminListener) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	c := a.console.Load()
	if c == nil {
		http.Error(w, "starting", http.StatusServiceUnavailable)
		return
	}
	c.Handler().ServeHTTP(w, r)
}

// listenAdmin binds addr for reg's metrics and the console; with HTTPS
// (admin.tls) it serves TLS with tlsConf (the process's certificate).
func listenAdmin(cfg *config.Config, addr string, reg prometheus.Gatherer, tlsConf func() (*tls.Config, error)) (*adminListener, error) {
	a := &adminListener{}
	o := prom.Options{OnShutdown: func() {
		if c := a.console.Load(); c != nil {
			c.Stop()
		}
	}}
	if cfg.Admin.Console {
		o.Handler = a
	}
	if httpsAdmin(cfg, addr) {
		tc, err := tlsConf()
		if err != nil {
			return nil, fmt.Errorf("admin: TLS: %w", err)
		}
		o.TLS = tc
	}
	srv, err := prom.ListenWith(addr, reg, o)
	if err != nil {
		return nil, fmt.Errorf("admin: %w", err)
	}
	a.Server = srv
	return a, nil
}

// httpsAdmin says whether the admin listener at addr serves HTTPS.
func httpsAdmin(cfg *config.Config, addr string) bool {
	ac := cfg.Admin
	ac.Listen = addr
	return ac.HTTPS()
}

// URL is where the admin listener is reached.
func (a *adminListener) URL(cfg *config.Config, addr string) string {
	scheme := "http"
	if httpsAdmin(cfg, addr) {
		scheme = "https"
	}
	return scheme + "://" + a.Addr().String()
}

// startConsole builds the console of o over the process's stores, puts it
// on the admin listener and runs its background work in a goroutine of
// wg until ctx is done.
func (a *adminListener) startConsole(ctx context.Context, wg *sync.WaitGroup, cfg *config.Config, addr string,
	st *store.Stores, log *slog.Logger, o console.Options) (*console.Console, error) {
	if !cfg.Admin.Console {
		return nil, nil
	}
	admins, err := console.OpenAdmins(ctx, st.DB, cfg.Auth.HashMemory)
	if err != nil {
		return nil, err
	}
	o.Config, o.Admins, o.Log, o.HTTPS = cfg, admins, log, httpsAdmin(cfg, addr)
	c, err := console.New(o)
	if err != nil {
		return nil, err
	}
	wg.Go(func() { c.Run(ctx) })
	a.console.Store(c)
	return c, nil
}
