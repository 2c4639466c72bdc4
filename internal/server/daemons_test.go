package server_test

import (
	"context"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/relayguard/relayguard/internal/config"
	"github.com/relayguard/relayguard/internal/redistest"
	"github.com/relayguard/relayguard/internal/server"
)

// TestDaemonsLeaveNoGoroutine: `relayguard policy`, `milter` and `watch`
// own every goroutine they start, as serve does (TestRunMetricsAndShutdown):
// each runs with Redis shared (pub/sub subscribers, health), its metrics
// listener and, for watch, a followed log file; when its context ends it
// returns and no goroutine it started is left. Found missing by review:
// only serve's shutdown was checked.
func TestDaemonsLeaveNoGoroutine(t *testing.T) {
	rs := redistest.Start(t)
	free := func() string {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer ln.Close()
		return ln.Addr().String()
	}
	for _, d := range []struct {
		name string
		run  func(context.Context, *config.Config, *slog.Logger) error
		// ready is a line of the log that says the daemon is running
		// (the front doors start their metrics listener last).
		ready string
	}{
		{"policy", func(ctx context.Context, cfg *config.Config, log *slog.Logger) error {
			return server.Policy(ctx, cfg, log, free())
		}, "metrics listening"},
		{"milter", func(ctx context.Context, cfg *config.Config, log *slog.Logger) error {
			return server.Milter(ctx, cfg, log, free())
		}, "metrics listening"},
		{"watch", func(ctx context.Context, cfg *config.Config, log *slog.Logger) error {
			return server.Watch(ctx, cfg, log, nil, free())
		}, "logwatch: following"},
	} {
		t.Run(d.name, func(t *testing.T) {
			dir := t.TempDir()
			logFile := filepath.Join(dir, "mail.log")
			if err := os.WriteFile(logFile, []byte("Dec  6 07:00:00 mx postfix/smtpd[1]: connect from unknown[192.0.2.9]\n"), 0o644); err != nil {
				t.Fatal(err)
			}
			cfg := config.Default()
			cfg.Hostname = "a.test"
			cfg.LocalDomains = []string{"a.test"}
			cfg.Store.URL = rs.URL()
			cfg.Policy.Listen = "127.0.0.1:0"
			cfg.Milter.Listen = "127.0.0.1:0"
			cfg.Milter.QueueDirectories = []string{dir}
			cfg.Guard.Files = []string{logFile}
			cfg.Firewall.Backend = "none"
			if err := cfg.Finish(filepath.Join(dir, "data")); err != nil {
				t.Fatal(err)
			}
			if err := os.MkdirAll(cfg.DataDir, 0o750); err != nil {
				t.Fatal(err)
			}

			leaks := goleak.IgnoreCurrent()
			var logs syncBuffer
			log := slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			done := make(chan error, 1)
			go func() { done <- d.run(ctx, cfg, log) }()
			deadline := time.Now().Add(30 * time.Second)
			for !strings.Contains(logs.String(), d.ready) {
				select {
				case err := <-done:
					t.Fatalf("%s returned before it was ready: %v\n%s", d.name, err, logs.String())
				case <-time.After(20 * time.Millisecond):
				}
				if time.Now().After(deadline) {
					t.Fatalf("%s not ready (no %q in its log):\n%s", d.name, d.ready, logs.String())
				}
			}
			cancel()
			select {
			case err := <-done:
				if err != nil {
					t.Fatalf("%s: %v\n%s", d.name, err, logs.String())
				}
			case <-time.After(30 * time.Second):
				t.Fatalf("%s did not return after its context ended:\n%s", d.name, logs.String())
			}
			if err := goleak.Find(leaks); err != nil {
				t.Fatalf("goroutines left after %s returned: %v\n%s", d.name, err, logs.String())
			}
		})
	}
}
