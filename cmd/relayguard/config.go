package main

import (
	"fmt"
	"os"
	"strings"

	"github.com/spf13/cobra"

	"github.com/relayguard/relayguard/internal/server"
)

func init() {
	cfg := &cobra.Command{Use: "config", Short: "Show or check the configuration"}
	cfg.AddCommand(&cobra.Command{
		Use:   "print",
		Short: "Print the effective configuration as commented TOML",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := loadConfig()
			if err != nil {
				return err
			}
			b, err := c.Marshal()
			if err != nil {
				return err
			}
			_, err = os.Stdout.Write(b)
			return err
		},
	})
	cfg.AddCommand(&cobra.Command{
		Use:   "check",
		Short: "Validate the configuration (everything serve checks before it starts) and exit",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := loadConfig()
			if err != nil {
				return err
			}
			if err := server.Check(c); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "configuration OK: hostname %s, local domains %s, data in %s\n",
				c.Hostname, strings.Join(c.Site.LocalDomains, ", "), c.DataDir)
			return nil
		},
	})
	rootCmd.AddCommand(cfg)
}
