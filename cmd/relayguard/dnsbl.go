package main

import (
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/relayguard/relayguard/internal/config"
	"github.com/relayguard/relayguard/internal/dnsbl"
	"github.com/relayguard/relayguard/internal/dnsutil"
	"github.com/relayguard/relayguard/internal/policy"
)

func init() {
	top := &cobra.Command{Use: "dnsbl", Short: "Check addresses against DNS lists, and the lists' health"}

	var asJSON, noCatalog, noHealth bool
	check := &cobra.Command{
		Use:   "check IP|DOMAIN...",
		Short: "Look up addresses and domains in well-known DNS lists and the configured zones",
		Long: `Look up each IP address in the client-IP lists and each domain in the domain lists:
relayguard's built-in catalog of well-known lists plus the [dnsbl] zones of the configuration.
Exit status: 0 not listed, 1 listed in at least one block list, 2 some block list could not
be asked (timeout, SERVFAIL, an error code such as 127.255.255.254, or a disabled zone).
Each list's health is checked at the same time: a dead list, one that lists everything or
one that refuses is shown as skipped, with the reason, never as a listing. Every target and
every list is asked concurrently under one deadline (dnsbl.timeout).
Large lists refuse queries sent through public resolvers: set dnsbl.resolvers to your own.`,
		Args: cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			cfg, log, res, err := dnsblResolver()
			if err != nil {
				return err
			}
			policy.WarnPublicResolvers(log, res.Servers())
			lists, err := dnsbl.Lists(!noCatalog, cfg.DNSBL.Zones, cfg.DNSBL.DomainZones)
			if err != nil {
				return err
			}
			// A list that died and now answers for every address
			// (blackholes.us, AHBL...) would "list" everyone: its health is
			// checked at the same time, and a disabled list is shown as such.
			rep, err := dnsbl.Lookup(cmd.Context(), res, lists, args, !noHealth, dnsbl.Options{
				Timeout: cfg.DNSBL.Timeout.D(), Logger: log})
			if err != nil {
				return &exitError{code: 2, err: fmt.Errorf("dnsbl check: %w", err)}
			}
			rows := rep.Rows
			if asJSON {
				enc := json.NewEncoder(cmd.OutOrStdout())
				enc.SetIndent("", "  ")
				if err := enc.Encode(rows); err != nil {
					return err
				}
			} else {
				printCheck(cmd.OutOrStdout(), rows)
			}
			// A block list that could not be asked (timeout, SERVFAIL), that
			// answered an error code (e.g. 127.255.255.254: public resolver)
			// or that is disabled says nothing: never "not listed".
			switch {
			case rep.Listed():
				return &exitError{code: 1}
			case rep.Unanswered():
				return &exitError{code: 2}
			}
			return nil
		},
	}
	check.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	check.Flags().BoolVar(&noCatalog, "no-catalog", false, "ask only the configured zones, not the built-in catalog")
	check.Flags().BoolVar(&noHealth, "no-health", false, "skip the lists' health check (RFC 5782 §5 test points, lists-everything probes) before asking")

	var healthJSON bool
	health := &cobra.Command{
		Use:   "health",
		Short: "Check every configured zone: healthy, dead, lists-everything or refusing",
		Long: `Ask every [dnsbl] zone (and every zone named in a restriction) for its RFC 5782 §5 test
points (127.0.0.2 and ::FFFF:7F00:2 listed, 127.0.0.1 not) and for random documentation
addresses that no list may contain. Exit status 1 if any zone is disabled, 2 if DNS itself
cannot be reached (no list and no list's parent domain answers): then no zone is judged.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, log, res, err := dnsblResolver()
			if err != nil {
				return err
			}
			// A positive interval: zones start unknown until this check
			// (RunHealth does not run here).
			ck, err := dnsbl.New(res, dnsbl.Options{Zones: cfg.DNSBL.Zones, DomainZones: cfg.DNSBL.DomainZones,
				Timeout: cfg.DNSBL.Timeout.D(), Logger: log, HealthInterval: time.Hour})
			if err != nil {
				return err
			}
			// The engine adds the zones named in restrictions (reject_rbl_client ZONE) to the checks.
			if _, err := policy.New(cfg.Site, cfg.Policy, cfg.DNSBL, policy.Deps{Logger: log, Resolver: res, DNSBL: ck}); err != nil {
				return err
			}
			policy.WarnPublicResolvers(log, res.Servers())
			hs := ck.CheckHealth(cmd.Context())
			type row struct {
				Zone    string    `json:"zone"`
				State   string    `json:"state"`
				IPv6    bool      `json:"ipv6"`
				Detail  string    `json:"detail,omitempty"`
				Checked time.Time `json:"checked"`
			}
			var rows []row
			bad := false
			up, why := ck.DNSReachable()
			for _, h := range hs {
				if h.State == dnsbl.Unknown && !up {
					h.Detail = "not judged: DNS unreachable: " + why
				}
				rows = append(rows, row{h.Zone, h.State.String(), h.IPv6, h.Detail, h.Checked})
				bad = bad || h.State.Disabled()
			}
			if healthJSON {
				enc := json.NewEncoder(cmd.OutOrStdout())
				enc.SetIndent("", "  ")
				if err := enc.Encode(rows); err != nil {
					return err
				}
			} else if len(rows) == 0 {
				fmt.Fprintln(cmd.OutOrStdout(), "no DNS list configured (dnsbl.zones, dnsbl.domain_zones)")
			} else {
				tw := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 2, ' ', 0)
				fmt.Fprintln(tw, "ZONE\tSTATE\tIPV6\tDETAIL")
				for _, r := range rows {
					fmt.Fprintf(tw, "%s\t%s\t%v\t%s\n", r.Zone, r.State, r.IPv6, r.Detail)
				}
				tw.Flush()
			}
			switch {
			case !up:
				return &exitError{code: 2, err: fmt.Errorf("dnsbl health: DNS unreachable: %s", why)}
			case bad:
				return &exitError{code: 1}
			}
			return nil
		},
	}
	health.Flags().BoolVar(&healthJSON, "json", false, "print JSON")
	top.AddCommand(check, health)
	rootCmd.AddCommand(top)
}

func printCheck(w io.Writer, rows []dnsbl.Row) {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "TARGET\tLIST\tKIND\tLISTED\tANSWER\tMEANING")
	for _, r := range rows {
		listed := "no"
		switch {
		case r.Listed:
			listed = "LISTED"
		case r.Result != dnsbl.Clean.String():
			listed = r.Result
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", r.Target, r.List, r.Kind, listed, strings.Join(r.Answers, ","), r.Meaning)
	}
	tw.Flush()
}

// dnsblResolver loads the configuration and makes the logger and the
// resolver the dnsbl commands ask (dnsbl.resolvers, dnsbl.timeout).
func dnsblResolver() (*config.Config, *slog.Logger, *dnsutil.Resolver, error) {
	cfg, err := loadConfig()
	if err != nil {
		return nil, nil, nil, err
	}
	res, err := dnsutil.New(cfg.DNSBL.Resolvers, cfg.DNSBL.Timeout.D())
	if err != nil {
		return nil, nil, nil, err
	}
	return cfg, newLogger(cfg), res, nil
}
