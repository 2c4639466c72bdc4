package main

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/netip"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/relayguard/relayguard/internal/config"
	"github.com/relayguard/relayguard/internal/guard"
	"github.com/relayguard/relayguard/internal/store"
)

// openStores opens the process's state stores: the SQLite database in the
// data directory and, with [store] url, the one Redis client (unreachable is
// logged, not fatal). A command opens them once and passes them down.
// The data directory must exist (or --create-data-dir): only serve makes
// it unasked.
func openStores(ctx context.Context, cfg *config.Config, log *slog.Logger) (*store.Stores, error) {
	if err := cfg.RequireDataDir(flagCreateDataDir); err != nil {
		return nil, err
	}
	return store.Open(ctx, cfg.DataDir, cfg.Store.URL, log)
}

// cliGuard is the guard of a short-lived command (ban add/del/list,
// firewall setup) with the stores it opened. Close the stores.
func cliGuard(ctx context.Context, cfg *config.Config) (*guard.Guard, *store.Stores, error) {
	log := newLogger(cfg)
	st, err := openStores(ctx, cfg, log)
	if err != nil {
		return nil, nil, err
	}
	g, err := guard.Open(ctx, cfg.Guard, cfg.Site, log, st, guard.Options{})
	if err != nil {
		st.Close()
		return nil, nil, err
	}
	return g, st, nil
}

// withStateGuard runs fn with the guard of the configured state
// (stateConfig, cliGuard) and closes its stores after.
func withStateGuard(ctx context.Context, fn func(*guard.Guard) error) error {
	cfg, err := stateConfig()
	if err != nil {
		return err
	}
	g, st, err := cliGuard(ctx, cfg)
	if err != nil {
		return err
	}
	defer st.Close()
	return fn(g)
}

// storedBans returns the bans in force in the guard's store (the shared one
// when [store] url is set), for `firewall setup` to load into the kernel.
func storedBans(ctx context.Context, cfg *config.Config) ([]guard.Ban, error) {
	g, st, err := cliGuard(ctx, cfg)
	if err != nil {
		return nil, err
	}
	defer st.Close()
	if err := g.Sync(ctx, false); err != nil {
		return nil, err
	}
	return g.Bans(), nil
}

func parseBanPrefix(s string) (netip.Prefix, error) {
	p, err := config.ParsePrefix(s)
	if err != nil {
		return p, &exitError{code: 2, err: fmt.Errorf("ban: %q is not an address or CIDR prefix: %w", s, err)}
	}
	return p, nil
}

type banJSON struct {
	Prefix  string     `json:"prefix"`
	Until   *time.Time `json:"until"` // null: permanent
	Reason  string     `json:"reason"`
	Source  string     `json:"source"`
	Created time.Time  `json:"created"`
	Count   int        `json:"count"`
}

func toJSON(b guard.Ban) banJSON {
	j := banJSON{Prefix: b.Prefix.String(), Reason: b.Reason, Source: b.Source, Created: b.Created.UTC(), Count: b.Count}
	if !b.Permanent() {
		u := b.Until.UTC()
		j.Until = &u
	}
	return j
}

func init() {
	firewallBans = storedBans
	banCmd := &cobra.Command{Use: "ban", Short: "Add, remove and list bans (IPv4 and IPv6 addresses and prefixes)"}

	var forDur, reason string
	add := &cobra.Command{
		Use:   "add CIDR",
		Short: "Ban an address or prefix (permanently unless --for is given)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			p, err := parseBanPrefix(args[0])
			if err != nil {
				return err
			}
			var d config.Duration
			if forDur != "" {
				if err := d.UnmarshalText([]byte(forDur)); err != nil || d <= 0 {
					return &exitError{code: 2, err: fmt.Errorf("ban add: --for %q: want a positive duration such as 30m, 12h or 7d", forDur)}
				}
			}
			return withStateGuard(cmd.Context(), func(g *guard.Guard) error {
				b, err := g.Ban(cmd.Context(), p, d.D(), reason)
				if err != nil {
					return err
				}
				until := "permanently"
				if !b.Permanent() {
					until = "until " + b.Until.UTC().Format(time.RFC3339)
				}
				fmt.Fprintf(cmd.OutOrStdout(), "banned %s %s\n", b.Prefix, until)
				return nil
			})
		},
	}
	add.Flags().StringVar(&forDur, "for", "", "ban `duration` (e.g. 30m, 12h, 7d); default permanent")
	add.Flags().StringVar(&reason, "reason", "", "reason shown in ban list")

	del := &cobra.Command{
		Use:   "del CIDR",
		Short: "Lift the ban of exactly this address or prefix",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			p, err := parseBanPrefix(args[0])
			if err != nil {
				return err
			}
			return withStateGuard(cmd.Context(), func(g *guard.Guard) error {
				found, err := g.Unban(cmd.Context(), p)
				if err != nil {
					return err
				}
				if !found {
					return &exitError{code: 1, err: fmt.Errorf("ban del: %s is not banned", p)}
				}
				fmt.Fprintf(cmd.OutOrStdout(), "unbanned %s\n", p)
				return nil
			})
		},
	}

	var asJSON bool
	list := &cobra.Command{
		Use:   "list",
		Short: "List the bans in force",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, err := stateConfig()
			if err != nil {
				return err
			}
			bans, err := storedBans(cmd.Context(), cfg)
			if err != nil {
				return err
			}
			out := cmd.OutOrStdout()
			if asJSON {
				js := make([]banJSON, 0, len(bans))
				for _, b := range bans {
					js = append(js, toJSON(b))
				}
				enc := json.NewEncoder(out)
				enc.SetIndent("", "  ")
				return enc.Encode(js)
			}
			tw := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "PREFIX\tUNTIL\tCOUNT\tSOURCE\tREASON")
			for _, b := range bans {
				until := "permanent"
				if !b.Permanent() {
					until = b.Until.UTC().Format(time.RFC3339)
				}
				fmt.Fprintf(tw, "%s\t%s\t%d\t%s\t%s\n", b.Prefix, until, b.Count, b.Source, b.Reason)
			}
			return tw.Flush()
		},
	}
	list.Flags().BoolVar(&asJSON, "json", false, "print JSON")

	banCmd.AddCommand(add, del, list)
	rootCmd.AddCommand(banCmd)
}
