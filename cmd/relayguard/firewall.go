package main

import (
	"context"
	"fmt"

	"github.com/spf13/cobra"

	"github.com/relayguard/relayguard/internal/ban"
	"github.com/relayguard/relayguard/internal/config"
	"github.com/relayguard/relayguard/internal/firewall"
)

// firewallBans returns the bans in force from the guard's store, for
// `firewall setup` to reconcile the kernel with. It stays nil until the
// guard's store is wired in (by the guard's own file), and setup then only
// creates the firewall's objects.
var firewallBans func(ctx context.Context, cfg *config.Config) ([]ban.Ban, error)

var flagFirewallBackend string

func init() {
	fw := &cobra.Command{
		Use:   "firewall",
		Short: "Manage the kernel firewall objects that enforce bans (nftables, iptables+ipset, ufw)",
	}
	fw.PersistentFlags().StringVar(&flagFirewallBackend, "backend", "", "override firewall.backend: none, nftables, iptables or ufw")
	fw.AddCommand(
		&cobra.Command{
			Use:   "setup",
			Short: "Create relayguard's table/sets/chain (idempotent, keeps bans) and load the bans in force",
			Args:  cobra.NoArgs,
			RunE: func(cmd *cobra.Command, _ []string) error {
				cfg, e, err := firewallEnforcer()
				if err != nil {
					return err
				}
				if err := e.Setup(cmd.Context()); err != nil {
					return err
				}
				if firewallBans != nil {
					bans, err := firewallBans(cmd.Context(), cfg)
					if err != nil {
						return fmt.Errorf("firewall setup: reading bans: %w", err)
					}
					if err := e.Reconcile(cmd.Context(), bans); err != nil {
						return err
					}
					fmt.Fprintf(cmd.OutOrStdout(), "firewall %s: set up, %d bans loaded\n", cfg.Firewall.Backend, len(bans))
					return nil
				}
				fmt.Fprintf(cmd.OutOrStdout(), "firewall %s: set up\n", cfg.Firewall.Backend)
				return nil
			},
		},
		&cobra.Command{
			Use:   "teardown",
			Short: "Remove everything relayguard put in the firewall (objects and bans)",
			Args:  cobra.NoArgs,
			RunE: func(cmd *cobra.Command, _ []string) error {
				cfg, e, err := firewallEnforcer()
				if err != nil {
					return err
				}
				if err := e.Teardown(cmd.Context()); err != nil {
					return err
				}
				fmt.Fprintf(cmd.OutOrStdout(), "firewall %s: removed\n", cfg.Firewall.Backend)
				return nil
			},
		},
		&cobra.Command{
			Use:   "status",
			Short: "Show relayguard's firewall objects, ban counts and drop counters",
			Args:  cobra.NoArgs,
			RunE: func(cmd *cobra.Command, _ []string) error {
				_, e, err := firewallEnforcer()
				if err != nil {
					return err
				}
				s, err := e.Status(cmd.Context())
				if err != nil {
					return err
				}
				fmt.Fprint(cmd.OutOrStdout(), s)
				return nil
			},
		},
	)
	rootCmd.AddCommand(fw)
}

func firewallEnforcer() (*config.Config, firewall.Enforcer, error) {
	cfg, err := loadConfig()
	if err != nil {
		return nil, nil, err
	}
	if flagFirewallBackend != "" {
		cfg.Firewall.Backend = flagFirewallBackend
		if err := cfg.Validate(); err != nil {
			return nil, nil, fmt.Errorf("--backend: %w", err)
		}
	}
	e, err := firewall.New(cfg.Firewall, newLogger(cfg))
	if err != nil {
		return nil, nil, err
	}
	return cfg, e, nil
}
