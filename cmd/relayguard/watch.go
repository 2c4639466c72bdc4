package main

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/spf13/cobra"

	"github.com/relayguard/relayguard/internal/config"
	"github.com/relayguard/relayguard/internal/event"
	"github.com/relayguard/relayguard/internal/firewall"
	"github.com/relayguard/relayguard/internal/guard"
	"github.com/relayguard/relayguard/internal/logwatch"
)

func init() {
	var replay bool
	var asJSON, stdin bool
	cmd := &cobra.Command{
		Use:   "watch [--replay FILE...]",
		Short: "Follow Postfix/Dovecot/relayguard logs and ban attackers through the firewall",
		Long: `watch follows the log files and journal named in [guard] (and stdin with --stdin),
turns SASL failures, relay attempts, rejections and protocol abuse into bans, and applies
them through the firewall enforcer of [firewall].

With --replay FILE... it runs the same pipeline over old logs (plain or .gz; "-" is stdin)
without touching the firewall or the ban database, and prints what it would have banned.`,
		RunE: func(cmd *cobra.Command, args []string) error {
			cfg, err := loadConfig()
			if err != nil {
				return err
			}
			log := newLogger(cfg)
			if replay {
				if len(args) == 0 {
					return &exitError{code: 2, err: fmt.Errorf("watch --replay: name at least one log file (or - for stdin)")}
				}
				return runReplay(cmd.Context(), cfg.Guard, cfg.Site.NeverBan(), args, asJSON, log)
			}
			if len(args) > 0 {
				return &exitError{code: 2, err: fmt.Errorf("watch: unexpected arguments %q (log files go in [guard] files, or use --replay)", args)}
			}
			if err := cfg.RequireDataDir(flagCreateDataDir); err != nil {
				return err
			}
			return runWatch(cmd.Context(), cfg, stdin, log)
		},
	}
	cmd.Flags().BoolVar(&replay, "replay", false, "replay the log files given as arguments and print the bans; touch nothing")
	cmd.Flags().BoolVar(&asJSON, "json", false, "with --replay: print one JSON object per ban")
	cmd.Flags().BoolVar(&stdin, "stdin", false, "also read log lines from standard input")
	rootCmd.AddCommand(cmd)
}

// runReplay runs the pipeline over files with an in-memory store and no
// enforcer, printing each ban as it is decided.
func runReplay(ctx context.Context, gc config.GuardConfig, never []netip.Prefix, files []string, asJSON bool, log *slog.Logger) error {
	out := bufio.NewWriterSize(os.Stdout, 64<<10)
	defer out.Flush()
	enc := json.NewEncoder(out)
	nbans := 0
	g := guard.New(guard.Options{Config: gc, Never: never, Replay: true, Log: slog.New(slog.DiscardHandler), OnBan: func(b guard.Ban) {
		nbans++
		if asJSON {
			enc.Encode(toJSON(b))
			return
		}
		fmt.Fprintf(out, "would ban %s for %s (until %s, repeat %d): %s\n", b.Prefix, b.Until.Sub(b.Created),
			b.Until.UTC().Format(time.RFC3339), b.Count, b.Reason)
	}})
	var lines, events int64
	// One failed login logged by several processes counts once.
	counting := logwatch.NewOnce(countingSink{next: g, n: &events})
	start := time.Now()
	for _, f := range files {
		if f == "-" {
			emit := logwatch.Events(ctx, counting)
			if err := logwatch.ReadLines(ctx, os.Stdin, func(l string) { lines++; emit(l) }); err != nil {
				return err
			}
			continue
		}
		// Files are parsed on every core; decisions stay in file order.
		n, err := logwatch.ReplayFile(ctx, f, func(evs []event.Event) {
			for _, e := range evs {
				counting.Publish(ctx, e)
			}
		})
		lines += n
		if err != nil {
			return err
		}
	}
	el := time.Since(start)
	log.Info("replay done", "lines", lines, "events", events, "bans", nbans, "seconds", el.Seconds(),
		"lines_per_second", int64(float64(lines)/el.Seconds()))
	return nil
}

type countingSink struct {
	next event.Sink
	n    *int64
}

func (c countingSink) Publish(ctx context.Context, e event.Event) {
	*c.n++
	c.next.Publish(ctx, e)
}

// runWatch follows the configured sources and enforces bans until ctx is done.
func runWatch(ctx context.Context, cfg *config.Config, stdin bool, log *slog.Logger) error {
	enf, err := firewall.New(cfg.Firewall, log)
	if err != nil {
		return err
	}
	if err := enf.Setup(ctx); err != nil {
		return fmt.Errorf("watch: firewall setup: %w", err)
	}
	st, err := openStores(ctx, cfg, log)
	if err != nil {
		return err
	}
	defer st.Close()
	g, err := guard.Open(ctx, cfg, log, st, guard.Options{Enforcer: enf})
	if err != nil {
		return err
	}
	state, err := logwatch.NewSQLiteState(ctx, st.DB)
	if err != nil {
		return err
	}

	// The guard's sync loop, and each source in its own goroutine (the
	// guard is safe for concurrent use); all are waited for before the
	// stores close.
	var wg sync.WaitGroup
	g.Start(ctx, st.Redis, &wg)

	// Every source feeds one Once: the lines Postfix and Dovecot (which may
	// log to different files) write for one failed login count once.
	sink := logwatch.NewOnce(g)
	var sources atomic.Int32
	for _, f := range cfg.Guard.Files {
		sources.Add(1)
		wg.Add(1)
		go func(path string) {
			defer wg.Done()
			fl := &logwatch.Follower{Path: path, State: state, Log: log}
			if err := fl.Run(ctx, logwatch.Events(ctx, sink)); err != nil {
				log.Error("watch: file source stopped", "file", path, "err", err)
			}
		}(f)
	}
	if cfg.Guard.Journal {
		sources.Add(1)
		wg.Add(1)
		go func() {
			defer wg.Done()
			j := &logwatch.Journal{Units: cfg.Guard.JournalUnits, State: state, Log: log}
			if err := j.Run(ctx, sink); err != nil {
				log.Error("watch: journal source stopped", "err", err)
			}
		}()
	}
	if stdin {
		sources.Add(1)
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := logwatch.ReadLines(ctx, os.Stdin, logwatch.Events(ctx, sink)); err != nil {
				log.Error("watch: stdin", "err", err)
			}
		}()
	}
	if sources.Load() == 0 {
		log.Warn("watch: no log source configured ([guard] files, journal, or --stdin); enforcing stored bans only")
	}
	log.Info("watching", "files", cfg.Guard.Files, "journal", cfg.Guard.Journal, "stdin", stdin, "firewall", cfg.Firewall.Backend, "shared", st.Shared())
	<-ctx.Done()
	wg.Wait()
	return nil
}
