package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/spf13/cobra"

	"github.com/relayguard/relayguard/internal/certs"
	"github.com/relayguard/relayguard/internal/config"
	"github.com/relayguard/relayguard/internal/event"
	"github.com/relayguard/relayguard/internal/queue"
	"github.com/relayguard/relayguard/internal/smtpd"
	"github.com/relayguard/relayguard/internal/store"
	"github.com/relayguard/relayguard/internal/userdb"
)

func init() {
	rootCmd.AddCommand(&cobra.Command{
		Use:   "serve",
		Short: "Run the SMTP server (MX, submission, submissions) and the admin/metrics listener",
		Long: `Run the SMTP server. With no --config it runs on the embedded default
configuration: MX on 127.0.0.1:2525, submission (STARTTLS, AUTH required) on
127.0.0.1:5587, submissions (implicit TLS) on 127.0.0.1:5465, admin/metrics on
127.0.0.1:9025, state under ./relayguard-data.`,
		Args: cobra.NoArgs,
		RunE: runServe,
	})
}

func runServe(cmd *cobra.Command, _ []string) error {
	ctx, cancel := context.WithCancel(cmd.Context())
	defer cancel()
	cfg, err := loadConfig()
	if err != nil {
		return err
	}
	log := newLogger(cfg)
	slog.SetDefault(log)

	if err := os.MkdirAll(cfg.DataDir, 0o750); err != nil {
		return fmt.Errorf("data dir %s: %w", cfg.DataDir, err)
	}
	// A self-signed certificate is made only at the default location: a
	// configured path that does not exist is an operator's typo, not a
	// place to write a key.
	var created bool
	if cfg.TLS.CertFile == filepath.Join(cfg.DataDir, "tls", "cert.pem") && cfg.TLS.KeyFile == filepath.Join(cfg.DataDir, "tls", "key.pem") {
		created, err = certs.EnsureSelfSigned(cfg.TLS.CertFile, cfg.TLS.KeyFile, []string{cfg.Hostname, "localhost", "127.0.0.1", "::1"})
		if err != nil {
			return err
		}
	}
	if created {
		log.Info("created a self-signed certificate; replace it with a real one for production", "cert", cfg.TLS.CertFile, "key", cfg.TLS.KeyFile)
	}
	tlsConf, err := certs.Load(cfg.TLS.CertFile, cfg.TLS.KeyFile)
	if err != nil {
		return err
	}
	db, err := store.OpenSQLite(ctx, cfg.DataDir)
	if err != nil {
		return err
	}
	defer db.Close()
	users, err := userdb.Open(ctx, db, userdbOptions(cfg))
	if err != nil {
		return err
	}
	spool, err := queue.OpenSpool(cfg.Spool.Dir, cfg.Spool.GroupCommit.D(), log)
	if err != nil {
		return err
	}
	defer spool.Close()

	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	prometheus.DefaultRegisterer = reg
	prometheus.DefaultGatherer = reg
	bus := &event.Bus{}
	deps := smtpd.Deps{
		Users: users, Creds: users, Spool: spool, TLS: tlsConf, Events: bus, Log: log,
		Metrics: smtpd.NewMetrics(reg),
	}
	stop, err := wireExtensions(ctx, cfg, log, db, bus, spool, &deps, reg)
	if err != nil {
		return err
	}
	defer stop()
	srv, err := smtpd.New(cfg, deps)
	if err != nil {
		return err
	}

	lns, err := openListeners(cfg)
	if err != nil {
		return err
	}
	var wg sync.WaitGroup
	errc := make(chan error, len(lns)+1)
	for i, ln := range lns {
		lc := cfg.Listeners[i]
		log.Info("listening", "listener", lc.Name, "mode", lc.Mode, "address", ln.Addr().String())
		fmt.Fprintf(os.Stderr, "relayguard: %s (%s) listening on %s\n", lc.Name, lc.Mode, ln.Addr())
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := srv.Serve(ctx, ln, lc); err != nil {
				errc <- err
			}
		}()
	}
	var admin *http.Server
	if cfg.Admin.Listen != "" {
		aln, err := net.Listen("tcp", cfg.Admin.Listen)
		if err != nil {
			return fmt.Errorf("admin listener %s: %w", cfg.Admin.Listen, err)
		}
		mux := http.NewServeMux()
		mux.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
		mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) { fmt.Fprintln(w, "ok") })
		admin = &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
		go func() {
			if err := admin.Serve(aln); err != nil && !errors.Is(err, http.ErrServerClosed) {
				errc <- fmt.Errorf("admin listener: %w", err)
			}
		}()
		log.Info("listening", "listener", "admin", "address", aln.Addr().String())
		fmt.Fprintf(os.Stderr, "relayguard: admin/metrics on http://%s/metrics\n", aln.Addr())
	}
	fmt.Fprintf(os.Stderr, "relayguard: data in %s; local domains %s\n", cfg.DataDir, strings.Join(cfg.LocalDomains, ", "))
	fmt.Fprintf(os.Stderr, "relayguard: add a user with: relayguard user add USER --data-dir %s\n", cfg.DataDir)

	select {
	case <-ctx.Done():
	case err = <-errc:
	}
	log.Info("shutting down")
	cancel()
	if admin != nil {
		sctx, c := context.WithTimeout(context.Background(), 5*time.Second)
		admin.Shutdown(sctx)
		c()
	}
	srv.Shutdown()
	wg.Wait()
	return err
}

func userdbOptions(cfg *config.Config) userdb.Options {
	return userdb.Options{PasswordHash: cfg.Auth.PasswordHash, SCRAMIterations: cfg.Auth.SCRAMIterations, CRAMMD5: cfg.Auth.CRAMMD5}
}

// openListeners binds every configured listener. An address of the form
// "systemd:NAME" takes the socket systemd passed with FileDescriptorName=NAME
// (socket activation, sd_listen_fds(3)), so that ports 25/465/587 can be
// bound by systemd while relayguard runs unprivileged.
func openListeners(cfg *config.Config) ([]net.Listener, error) {
	activated := systemdListeners()
	var out []net.Listener
	for _, lc := range cfg.Listeners {
		var ln net.Listener
		if name, ok := strings.CutPrefix(lc.Address, "systemd:"); ok {
			ln = activated[name]
			if ln == nil {
				closeAll(out)
				return nil, fmt.Errorf("listener %s: no socket named %q passed by systemd (LISTEN_FDNAMES)", lc.Name, name)
			}
		} else {
			var err error
			ln, err = net.Listen("tcp", lc.Address)
			if err != nil {
				closeAll(out)
				if errors.Is(err, syscall.EACCES) {
					return nil, fmt.Errorf("listener %s: %w (ports below 1024 need root, CAP_NET_BIND_SERVICE or systemd socket activation; see README)", lc.Name, err)
				}
				return nil, fmt.Errorf("listener %s: %w", lc.Name, err)
			}
		}
		out = append(out, ln)
	}
	return out, nil
}

func closeAll(lns []net.Listener) {
	for _, l := range lns {
		l.Close()
	}
}

// systemdListeners returns the sockets passed by systemd, by name
// (LISTEN_PID, LISTEN_FDS, LISTEN_FDNAMES; fds start at 3).
func systemdListeners() map[string]net.Listener {
	out := map[string]net.Listener{}
	if os.Getenv("LISTEN_PID") != strconv.Itoa(os.Getpid()) {
		return out
	}
	n, _ := strconv.Atoi(os.Getenv("LISTEN_FDS"))
	names := strings.Split(os.Getenv("LISTEN_FDNAMES"), ":")
	for i := 0; i < n; i++ {
		fd := 3 + i
		syscall.CloseOnExec(fd)
		f := os.NewFile(uintptr(fd), "systemd-"+strconv.Itoa(fd))
		ln, err := net.FileListener(f)
		f.Close()
		if err != nil {
			continue
		}
		name := strconv.Itoa(fd)
		if i < len(names) && names[i] != "" {
			name = names[i]
		}
		out[name] = ln
	}
	return out
}
