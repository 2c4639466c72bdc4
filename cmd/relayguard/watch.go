package main

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"os"
	"runtime/pprof"
	"time"

	"github.com/spf13/cobra"

	"github.com/relayguard/relayguard/internal/config"
	"github.com/relayguard/relayguard/internal/event"
	"github.com/relayguard/relayguard/internal/guard"
	"github.com/relayguard/relayguard/internal/logline"
	"github.com/relayguard/relayguard/internal/logwatch"
	"github.com/relayguard/relayguard/internal/server"
)

func init() {
	var replay bool
	var asJSON, stdin bool
	var admin, cpuProfile, memProfile string
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
				stop, err := startProfiles(cpuProfile, memProfile)
				if err != nil {
					return err
				}
				err = runReplay(cmd.Context(), cfg.Guard, cfg.Site.NeverBan(), args, asJSON, log)
				if perr := stop(); err == nil {
					err = perr
				}
				return err
			}
			if len(args) > 0 {
				return &exitError{code: 2, err: fmt.Errorf("watch: unexpected arguments %q (log files go in [guard] files, or use --replay)", args)}
			}
			if err := cfg.RequireDataDir(flagCreateDataDir); err != nil {
				return err
			}
			defer keepOnHUP(cmd.Context(), log, "watch")()
			var in io.Reader
			if stdin {
				in = os.Stdin
			}
			return server.Watch(cmd.Context(), cfg, log, in, admin)
		},
	}
	cmd.Flags().BoolVar(&replay, "replay", false, "replay the log files given as arguments and print the bans; touch nothing")
	cmd.Flags().BoolVar(&asJSON, "json", false, "with --replay: print one JSON object per ban")
	cmd.Flags().BoolVar(&stdin, "stdin", false, "also read log lines from standard input")
	cmd.Flags().StringVar(&admin, "admin", "", "serve /metrics, /healthz and the web console ([admin] console, tls) on `HOST:PORT`, e.g. 127.0.0.1:9025")
	cmd.Flags().StringVar(&cpuProfile, "cpuprofile", "", "with --replay: write a CPU profile (go tool pprof) to `file`")
	cmd.Flags().StringVar(&memProfile, "memprofile", "", "with --replay: write a heap profile of the live state at the end to `file`")
	rootCmd.AddCommand(cmd)
}

// startProfiles starts a CPU profile into cpu (if not ""); the returned
// stop ends it and writes a heap profile into mem (if not ""), for
// measuring --replay (docs/benchmarks/guard.md).
func startProfiles(cpu, mem string) (func() error, error) {
	var cf *os.File
	if cpu != "" {
		f, err := os.Create(cpu)
		if err != nil {
			return nil, fmt.Errorf("watch --cpuprofile: %w", err)
		}
		if err := pprof.StartCPUProfile(f); err != nil {
			f.Close()
			return nil, fmt.Errorf("watch --cpuprofile %s: %w", cpu, err)
		}
		cf = f
	}
	return func() error {
		if cf != nil {
			pprof.StopCPUProfile()
			if err := cf.Close(); err != nil {
				return fmt.Errorf("watch --cpuprofile: %w", err)
			}
		}
		if mem == "" {
			return nil
		}
		f, err := os.Create(mem)
		if err != nil {
			return fmt.Errorf("watch --memprofile: %w", err)
		}
		defer f.Close()
		if err := pprof.Lookup("heap").WriteTo(f, 0); err != nil {
			return fmt.Errorf("watch --memprofile %s: %w", mem, err)
		}
		return f.Close()
	}, nil
}

// runReplay runs the pipeline over files with an in-memory store and no
// enforcer, printing each ban as it is decided.
func runReplay(ctx context.Context, gc config.GuardConfig, never []netip.Prefix, files []string, asJSON bool, log *slog.Logger) error {
	out := bufio.NewWriterSize(os.Stdout, 64<<10)
	defer out.Flush()
	enc := json.NewEncoder(out)
	nbans := 0
	counters := guard.NewMemoryFor(gc) // bounded by guard.max_tracked
	counters.Log = log
	g := guard.New(guard.Options{Config: gc, Never: never, Replay: true, Counters: counters, Log: slog.New(slog.DiscardHandler), OnBan: func(b guard.Ban) {
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
	counting.Max, counting.Log = gc.MaxTracked, log
	start := time.Now()
	for _, f := range files {
		if f == "-" {
			// Opened as a file is (logline.Open): gzip, xz and journal
			// exports by content, a truncated one an error. Read raw, a
			// piped .gz was binary "lines" and a quiet exit 0.
			r, err := logline.Open(ctx, f)
			if err != nil {
				return err
			}
			emit := logwatch.Events(ctx, counting)
			err = logwatch.ReadLines(ctx, r, func(l string) { lines++; emit(l) })
			r.Close()
			if err != nil {
				return fmt.Errorf("logwatch: standard input: %w", err)
			}
			continue
		}
		// Files are parsed on every core; decisions stay in file order.
		// Nothing down the pipeline keeps an event's strings (Once and
		// the guard copy what they keep), so the buffers are reused.
		n, err := logwatch.ReplayFileTransient(ctx, f, g.Wants, func(evs []event.Event) {
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
		"lines_per_second", int64(float64(lines)/el.Seconds()), "tracked", counters.Tracked(), "dropped", counters.Evicted(), "pairing_dropped", counting.Dropped(), "first_failures", counters.Firsts(), "bans_held", g.Held())
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
