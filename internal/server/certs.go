package server

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/relayguard/relayguard/internal/certs"
	"github.com/relayguard/relayguard/internal/config"
)

// runCerts keeps the certificate in use current while serve runs: the
// files are checked every tls.reload_interval (and reread by a reload on
// SIGHUP, which a certbot deploy hook can send), and with tls.acme the
// ACME client obtains and renews it. p is the process's one certificate provider;
// every listener reads the certificate through it. The ACME challenge
// listener is bound before runCerts returns, so that a port in use fails
// the start. stop ends the goroutines.
func runCerts(ctx context.Context, cfg *config.Config, log *slog.Logger, p *certs.Provider) (stop func(), err error) {
	ctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	stop = func() { cancel(); wg.Wait() }
	if cfg.TLS.ACME {
		client := http.DefaultClient
		if cfg.TLS.ACMECAFile != "" {
			pem, err := os.ReadFile(cfg.TLS.ACMECAFile)
			if err != nil {
				cancel()
				return nil, fmt.Errorf("tls.acme_ca_file: %w", err)
			}
			pool := x509.NewCertPool()
			if !pool.AppendCertsFromPEM(pem) {
				cancel()
				return nil, fmt.Errorf("tls.acme_ca_file %q: no PEM certificate in it", cfg.TLS.ACMECAFile)
			}
			client = &http.Client{Timeout: time.Minute, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
		}
		a, err := certs.NewACME(certs.ACMEOptions{
			Directory: cfg.TLS.ACMEDirectory, Email: cfg.TLS.ACMEEmail, Names: cfg.TLS.ACMENames,
			Dir: filepath.Join(cfg.DataDir, "acme"), CertFile: cfg.TLS.ACMECertFile(cfg.DataDir), KeyFile: cfg.TLS.ACMEKeyFile(cfg.DataDir),
			Challenge: cfg.TLS.ACMEChallenge, Listen: cfg.TLS.ACMEListen, HTTPClient: client, Log: log,
		}, p)
		if err != nil {
			cancel()
			return nil, err
		}
		if err := a.Listen(); err != nil {
			cancel()
			return nil, err
		}
		log.Info("listening", "listener", "acme", "challenge", cfg.TLS.ACMEChallenge, "address", a.Addr().String())
		wg.Add(1)
		go func() { defer wg.Done(); a.Run(ctx) }()
	}
	wg.Add(1)
	go func() { defer wg.Done(); p.Watch(ctx, cfg.TLS.ReloadInterval.D()) }()
	// SIGHUP rereads the files too: see reload.go, which owns the signal.
	return stop, nil
}
