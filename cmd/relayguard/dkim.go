package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/relayguard/relayguard/internal/address"
	"github.com/relayguard/relayguard/internal/config"
	"github.com/relayguard/relayguard/internal/dnsutil"
	"github.com/relayguard/relayguard/internal/msgauth"
)

func init() {
	dk := &cobra.Command{Use: "dkim", Short: "Make DKIM signing keys and check their DNS records"}
	var selector, algorithm string
	keygen := &cobra.Command{
		Use:   "keygen DOMAIN",
		Short: "Write a new DKIM key for DOMAIN under the data directory and print its DNS record",
		Long: `Write a new DKIM signing key for DOMAIN to DATA_DIR/dkim/DOMAIN/SELECTOR.key
and print the TXT record to publish at SELECTOR._domainkey.DOMAIN and the
[[dkim.key]] table that makes relayguard sign with it. An existing key is
never replaced: rotate keys by making one with a new selector.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return runDKIMKeygen(cmd.OutOrStdout(), args[0], selector, algorithm, time.Now())
		},
	}
	keygen.Flags().StringVar(&selector, "selector", "", "selector `name` (default: the algorithm and the month, e.g. rsa202612)")
	keygen.Flags().StringVar(&algorithm, "algorithm", msgauth.AlgRSA, "key `algorithm`: rsa (2048 bits) or ed25519 (RFC 8463)")
	var servers []string
	check := &cobra.Command{
		Use:   "check DOMAIN",
		Short: "Check that the DNS records of DOMAIN's DKIM keys publish those keys",
		Long: `Look up SELECTOR._domainkey.DOMAIN for every [[dkim.key]] of DOMAIN (or, when
none is configured, every key file under DATA_DIR/dkim/DOMAIN), compare the
published public key with the private key, and verify a test message signed
with the key against the published record. Exits 1 if any key is not
published, differs, is revoked, or cannot be looked up.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return runDKIMCheck(cmd.Context(), cmd.OutOrStdout(), args[0], servers)
		},
	}
	check.Flags().StringSliceVar(&servers, "dns-server", nil, "DNS `server` to ask (host or host:port; default: delivery.dns_server, else /etc/resolv.conf)")
	dk.AddCommand(keygen, check)
	rootCmd.AddCommand(dk)
}

func runDKIMKeygen(w io.Writer, domain, selector, algorithm string, now time.Time) error {
	cfg, err := stateConfig()
	if err != nil {
		return err
	}
	d, err := address.CanonicalDomain(domain)
	if err != nil {
		return fmt.Errorf("dkim keygen: domain %q: %w", domain, err)
	}
	if algorithm != msgauth.AlgRSA && algorithm != msgauth.AlgEd25519 {
		return fmt.Errorf("dkim keygen: --algorithm %q: want rsa or ed25519", algorithm)
	}
	if selector == "" {
		selector = strings.TrimSuffix(algorithm, "25519") + now.UTC().Format("200601")
	}
	if err := config.CheckSelector(selector); err != nil {
		return fmt.Errorf("dkim keygen: --selector: %w", err)
	}
	selector = strings.ToLower(selector)
	key, err := msgauth.GenerateKey(algorithm)
	if err != nil {
		return err
	}
	path := config.DKIMKeyFile(cfg.DataDir, d, selector)
	if err := msgauth.WriteKey(path, key); err != nil {
		return err
	}
	rec, err := msgauth.Record(key.Public())
	if err != nil {
		return err
	}
	fmt.Fprintf(w, "Wrote %s (%s).\n\nPublish this DNS record:\n\n%s\n\n", path, algorithm, msgauth.ZoneLine(selector, d, rec))
	fmt.Fprintf(w, "Then add this to the configuration and reload relayguard serve (kill -HUP):\n\n[[dkim.key]]\ndomain = %q\nselector = %q\n\n", d, selector)
	fmt.Fprintf(w, "Check the published record with: relayguard dkim check %s\n", d)
	return nil
}

// dkimKeys returns the keys `dkim check` looks at: the configured ones of
// domain, else the key files under the data directory.
func dkimKeys(cfg *config.Config, domain string) ([]config.DKIMKey, error) {
	var out []config.DKIMKey
	for _, k := range cfg.DKIM.Keys {
		if k.Domain == domain {
			out = append(out, k)
		}
	}
	if len(out) > 0 {
		return out, nil
	}
	files, _ := filepath.Glob(filepath.Join(cfg.DataDir, "dkim", domain, "*.key"))
	sort.Strings(files)
	for _, f := range files {
		out = append(out, config.DKIMKey{Domain: domain, Selector: strings.TrimSuffix(filepath.Base(f), ".key"), KeyFile: f})
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("dkim check: no [[dkim.key]] for %s and no key under %s", domain, filepath.Join(cfg.DataDir, "dkim", domain))
	}
	return out, nil
}

func runDKIMCheck(ctx context.Context, w io.Writer, domain string, servers []string) error {
	cfg, err := loadConfig()
	if err != nil {
		return err
	}
	d, err := address.CanonicalDomain(domain)
	if err != nil {
		return fmt.Errorf("dkim check: domain %q: %w", domain, err)
	}
	keys, err := dkimKeys(cfg, d)
	if err != nil {
		return err
	}
	if len(servers) == 0 && cfg.Delivery.DNSServer != "" {
		servers = []string{cfg.Delivery.DNSServer}
	}
	res, err := dnsutil.New(servers, 5*time.Second)
	if err != nil {
		return fmt.Errorf("dkim check: %w", err)
	}
	bad := 0
	for _, k := range keys {
		st := msgauth.CheckKey(ctx, res.LookupTXT, k)
		fmt.Fprintf(w, "%s: %s\n", msgauth.RecordName(k.Selector, k.Domain), st)
		if !st.OK {
			bad++
		}
	}
	if bad > 0 {
		return &exitError{code: 1, err: errors.New("dkim check: " + plural(bad, "key") + " not usable")}
	}
	return nil
}

func plural(n int, what string) string {
	if n == 1 {
		return "1 " + what
	}
	return fmt.Sprintf("%d %ss", n, what)
}
