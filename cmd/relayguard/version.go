package main

import (
	"encoding/json"
	"os"

	"github.com/spf13/cobra"

	"github.com/relayguard/relayguard/internal/version"
)

func init() {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "version",
		Short: "Print the version and the commit this binary was built from",
		Long: `Print relayguard's module version, the commit it was built from (with its time
and whether the tree had uncommitted changes) and the Go toolchain, as stamped
into the binary by the go command. "relayguard --version" prints the same.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			info := version.Get()
			if asJSON {
				enc := json.NewEncoder(os.Stdout)
				enc.SetIndent("", "  ")
				return enc.Encode(info)
			}
			_, err := os.Stdout.WriteString(info.String())
			return err
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print a JSON object (module, version, commit, commit_time, modified, go, platform)")
	rootCmd.AddCommand(cmd)
	// --version prints the same report as the version command.
	rootCmd.Version = version.Get().Version
	rootCmd.SetVersionTemplate(version.Get().String())
}
