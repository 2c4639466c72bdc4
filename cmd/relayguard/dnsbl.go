package main

import (
	"encoding/json"
	"fmt"
	"io"
	"net/netip"
	"strings"
	"sync"
	"text/tabwriter"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/spf13/cobra"

	"github.com/relayguard/relayguard/internal/dnsbl"
	"github.com/relayguard/relayguard/internal/dnsbl/zonespec"
	"github.com/relayguard/relayguard/internal/dnsutil"
	"github.com/relayguard/relayguard/internal/policy"
)

// checkRow is one line of `dnsbl check`.
type checkRow struct {
	Target  string   `json:"target"`
	List    string   `json:"list"`
	Kind    string   `json:"kind"` // block or allow
	Result  string   `json:"result"`
	Listed  bool     `json:"listed"`
	Answers []string `json:"answers,omitempty"`
	Meaning string   `json:"meaning,omitempty"`
}

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
Each list's health is checked first: a dead list, one that lists everything or one that
refuses is shown as skipped, with the reason, never as a listing.
Large lists refuse queries sent through public resolvers: set dnsbl.resolvers to your own.`,
		Args: cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			cfg, err := loadConfig()
			if err != nil {
				return err
			}
			log := newLogger(cfg)
			res, err := dnsutil.New(cfg.DNSBL.Resolvers, cfg.DNSBL.Timeout.D())
			if err != nil {
				return err
			}
			policy.WarnPublicResolvers(log, res.Servers())
			meanings := map[string]map[string]string{}
			allow := map[string]bool{}
			var ipSpecs, domSpecs []string
			if !noCatalog {
				for _, c := range dnsbl.Catalog {
					z, _ := zonespec.Parse(c.Spec)
					meanings[z.Name], allow[z.Name] = c.Meanings, c.Allow
					if c.Domain {
						domSpecs = append(domSpecs, c.Spec)
					} else {
						ipSpecs = append(ipSpecs, c.Spec)
					}
				}
			}
			for _, s := range cfg.DNSBL.Zones {
				z, _ := zonespec.Parse(s)
				allow[z.Name] = z.Weight < 0
				ipSpecs = append(ipSpecs, s)
			}
			domSpecs = append(domSpecs, cfg.DNSBL.DomainZones...)
			ck, err := dnsbl.New(res, dnsbl.Options{Zones: dedupe(ipSpecs), DomainZones: dedupe(domSpecs),
				Timeout: cfg.DNSBL.Timeout.D(), Logger: log, Registerer: prometheus.NewRegistry()})
			if err != nil {
				return err
			}
			for _, a := range args {
				if _, err := netip.ParseAddr(a); err != nil {
					if _, ok := dnsName(a); !ok {
						return &exitError{code: 2, err: fmt.Errorf("dnsbl check: %q is neither an IP address nor a domain name", a)}
					}
				}
			}
			if !noHealth {
				// A list that died and now answers for every address
				// (blackholes.us, AHBL...) would "list" everyone: check the
				// lists' health first and report the disabled ones as such.
				ck.CheckHealth(cmd.Context())
			}
			var rows []checkRow
			for _, a := range args {
				var zones []*dnsbl.Zone
				var qname func(z *dnsbl.Zone) string
				if ip, err := netip.ParseAddr(a); err == nil {
					zones = ck.Zones()
					qname = func(z *dnsbl.Zone) string { return dnsbl.IPQuery(ip, z.Name) }
				} else if _, ok := dnsName(a); ok {
					zones = ck.DomainZones()
					qname = func(z *dnsbl.Zone) string { return dnsbl.DomainQuery(a, z.Name) }
				} else {
					return &exitError{code: 2, err: fmt.Errorf("dnsbl check: %q is neither an IP address nor a domain name", a)}
				}
				out := make([]checkRow, len(zones))
				var wg sync.WaitGroup
				for i, z := range zones {
					wg.Add(1)
					go func() {
						defer wg.Done()
						r := ck.Query(cmd.Context(), z, qname(z))
						row := checkRow{Target: a, List: z.Name, Kind: "block", Result: r.Status.String(), Listed: r.Status == dnsbl.Listed}
						if allow[z.Name] {
							row.Kind = "allow"
						}
						for _, x := range r.Answers {
							row.Answers = append(row.Answers, x.String())
							if m := meanings[z.Name][x.String()]; m != "" && row.Meaning == "" {
								row.Meaning = m
							}
						}
						if r.Detail != "" {
							row.Meaning = r.Detail
						}
						out[i] = row
					}()
				}
				wg.Wait()
				rows = append(rows, out...)
			}
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
			listed, failed := false, false
			for _, r := range rows {
				listed = listed || (r.Listed && r.Kind == "block")
				switch r.Result {
				case dnsbl.TempError.String(), dnsbl.ListError.String(), dnsbl.Skipped.String():
					failed = failed || r.Kind == "block"
				}
			}
			switch {
			case listed:
				return &exitError{code: 1}
			case failed:
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
addresses that no list may contain. Exit status 1 if any zone is disabled.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, err := loadConfig()
			if err != nil {
				return err
			}
			log := newLogger(cfg)
			res, err := dnsutil.New(cfg.DNSBL.Resolvers, cfg.DNSBL.Timeout.D())
			if err != nil {
				return err
			}
			reg := prometheus.NewRegistry()
			ck, err := dnsbl.New(res, dnsbl.Options{Zones: cfg.DNSBL.Zones, DomainZones: cfg.DNSBL.DomainZones,
				Timeout: cfg.DNSBL.Timeout.D(), Logger: log, Registerer: reg})
			if err != nil {
				return err
			}
			// The engine adds the zones named in restrictions (reject_rbl_client ZONE) to the checks.
			eng, err := policy.New(cfg, policy.Deps{Logger: log, Resolver: res, Registerer: reg, DNSBL: ck})
			if err != nil {
				return err
			}
			eng.Close()
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
			for _, h := range hs {
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
			if bad {
				return &exitError{code: 1}
			}
			return nil
		},
	}
	health.Flags().BoolVar(&healthJSON, "json", false, "print JSON")
	top.AddCommand(check, health)
	rootCmd.AddCommand(top)
}

func printCheck(w io.Writer, rows []checkRow) {
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

func dedupe(specs []string) []string {
	seen := map[string]bool{}
	var out []string
	for _, s := range specs {
		z, err := zonespec.Parse(s)
		if err != nil || seen[z.Name] {
			continue
		}
		seen[z.Name] = true
		out = append(out, s)
	}
	return out
}

func dnsName(s string) (string, bool) {
	s = strings.TrimSuffix(strings.ToLower(s), ".")
	if !strings.Contains(s, ".") || len(s) > 253 {
		return "", false
	}
	for _, c := range s {
		if !(c == '.' || c == '-' || c == '_' || c >= '0' && c <= '9' || c >= 'a' && c <= 'z') {
			return "", false
		}
	}
	return s, true
}
