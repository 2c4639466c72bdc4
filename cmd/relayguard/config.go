package main

import (
	"os"

	"github.com/spf13/cobra"
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
		Short: "Validate the configuration and exit",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if _, err := loadConfig(); err != nil {
				return err
			}
			cmd.Println("configuration OK")
			return nil
		},
	})
	rootCmd.AddCommand(cfg)
}
