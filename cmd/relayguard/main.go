// Command relayguard is a mail server and mail-server guard that keeps a host
// from becoming a spam springboard. See README.md.
package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"

	"github.com/spf13/cobra"

	"github.com/relayguard/relayguard/internal/config"
)

// Global flags, accepted by every subcommand so that `user add` and `serve`
// always agree on where state is.
var (
	flagConfig        string
	flagDataDir       string
	flagCreateDataDir bool
)

// defaultConfigFile is the default of --config: empty, the embedded
// configuration, for a plain build; the Debian package's build
// (dist/cmd/mkdeb) sets /etc/relayguard/relayguard.toml with -ldflags -X.
var defaultConfigFile string

var rootCmd = &cobra.Command{
	Use:   "relayguard",
	Short: "A mail server and mail-server guard that cannot be abused as a spam relay",
	Long: `relayguard keeps a mail server from becoming a spam springboard. It is one
program with several roles, each a subcommand: an SMTP server (serve), a Postfix
policy service (policy), a log watcher that bans attackers through the firewall
(watch), an outbound port-25 lockdown (egress), an open-relay tester
(relaytest), pflogsumm-style reports (report), and the administration of
accounts, bans, the queue and the firewall.

Every subcommand reads the same configuration file (--config; see
relayguard.toml(5)) and data directory (--data-dir), so that "relayguard user
add" and "relayguard serve" always agree on where state is.`,
	SilenceUsage:  true,
	SilenceErrors: true,
}

func init() {
	configUsage := "TOML configuration `file` (default: the embedded configuration)"
	if defaultConfigFile != "" {
		configUsage = "TOML configuration `file`"
	}
	rootCmd.PersistentFlags().StringVar(&flagConfig, "config", defaultConfigFile, configUsage)
	rootCmd.PersistentFlags().StringVar(&flagDataDir, "data-dir", "", "state `directory` (overrides the configuration's data_dir)")
	rootCmd.PersistentFlags().BoolVar(&flagCreateDataDir, "create-data-dir", false, "create the data directory if it does not exist (serve always does)")
}

// loadConfig reads --config (or the embedded defaults) and applies --data-dir.
// Relative --config and --data-dir are made absolute the first time, so
// that a later load (serve's reload on SIGHUP) reads the same file and
// state whatever the working directory is then.
func loadConfig() (*config.Config, error) {
	for _, p := range []*string{&flagConfig, &flagDataDir} {
		if *p != "" && !filepath.IsAbs(*p) {
			abs, err := filepath.Abs(*p)
			if err != nil {
				return nil, fmt.Errorf("%s: %w", *p, err)
			}
			*p = abs
		}
	}
	c, err := config.Load(flagConfig)
	if err != nil {
		return nil, err
	}
	if err := c.Finish(flagDataDir); err != nil {
		return nil, err
	}
	return c, nil
}

// stateConfig is loadConfig for a command that reads or writes the state
// in the data directory: the directory must exist (or --create-data-dir),
// and root acts as its owner (actAsDataDirOwner).
func stateConfig() (*config.Config, error) {
	c, err := loadConfig()
	if err != nil {
		return nil, err
	}
	if err := c.RequireDataDir(flagCreateDataDir); err != nil {
		return nil, err
	}
	if err := actAsDataDirOwner(c.DataDir); err != nil {
		return nil, err
	}
	return c, nil
}

// daemonCommand is the command of a daemon for an existing Postfix host
// (policy, milter): its own --listen (overriding listenKey) and --metrics
// flags, the state stores of the data directory, and run until a signal.
func daemonCommand(use, short, long, listenKey string, setListen func(*config.Config, string),
	run func(context.Context, *config.Config, *slog.Logger, string) error) *cobra.Command {
	var listen, metrics string
	cmd := &cobra.Command{
		Use: use, Short: short, Long: long, Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, err := stateConfig()
			if err != nil {
				return err
			}
			if listen != "" {
				setListen(cfg, listen)
			}
			log := newLogger(cfg)
			defer keepOnHUP(cmd.Context(), log, use)()
			return run(cmd.Context(), cfg, log, metrics)
		},
	}
	cmd.Flags().StringVar(&listen, "listen", "", "listen `address` (host:port or unix:/path), overrides "+listenKey)
	cmd.Flags().StringVar(&metrics, "metrics", "", "serve Prometheus /metrics on this `address` (off by default)")
	return cmd
}

// newLogger builds the slog logger the configuration asks for.
func newLogger(c *config.Config) *slog.Logger {
	log, _ := newLoggerLevel(c)
	return log
}

// newLoggerLevel is newLogger with the level as a variable a reload sets.
// The logger is also the process's default, which takes the standard
// logger's lines too: net/http's servers (the admin listener of serve and
// watch, /metrics of policy and milter, Dovecot's policy endpoint) report
// a bad TLS handshake through it, and those lines were plain text among
// [log] format = "json" records in every command but serve.
func newLoggerLevel(c *config.Config) (*slog.Logger, *slog.LevelVar) {
	lvl := &slog.LevelVar{}
	var l slog.Level
	if l.UnmarshalText([]byte(c.Log.Level)) == nil {
		lvl.Set(l)
	}
	opts := &slog.HandlerOptions{Level: lvl}
	var log *slog.Logger
	if c.Log.Format == "json" {
		log = slog.New(slog.NewJSONHandler(os.Stderr, opts))
	} else {
		log = slog.New(slog.NewTextHandler(os.Stderr, opts))
	}
	slog.SetDefault(log)
	return log, lvl
}

// exitError carries a specific exit status out of a command.
type exitError struct {
	code int
	err  error
}

func (e *exitError) Error() string {
	if e.err == nil {
		return fmt.Sprintf("exit status %d", e.code)
	}
	return e.err.Error()
}

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := rootCmd.ExecuteContext(ctx); err != nil {
		var ee *exitError
		if errors.As(err, &ee) {
			if ee.err != nil {
				fmt.Fprintln(os.Stderr, "relayguard:", ee.err)
			}
			os.Exit(ee.code)
		}
		fmt.Fprintln(os.Stderr, "relayguard:", err)
		os.Exit(1)
	}
}
