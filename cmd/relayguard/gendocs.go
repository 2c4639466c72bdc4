package main

import (
	"fmt"
	"os"
	"path/filepath"

	"github.com/spf13/cobra"

	"github.com/relayguard/relayguard/internal/config"
	"github.com/relayguard/relayguard/internal/mandoc"
	"github.com/relayguard/relayguard/internal/version"
)

// rootFiles is the FILES section of relayguard(8): where the Debian package
// (dist/) puts things.
const rootFiles = `.SH FILES
.TP
.I /etc/relayguard/relayguard.toml
The configuration, read by every command and unit of the package (see
.BR relayguard.toml (5)).
.TP
.I /var/lib/relayguard
The data directory: the database (accounts, bans, counters), the spool, the
local Maildirs and the self\-signed certificate made on first start. Owned by
the
.B relayguard
user, mode 0750.
.TP
.I /lib/systemd/system/relayguard.service
.B relayguard serve
from the sockets
.BR relayguard\-mx.socket ,
.B relayguard\-submission.socket
and
.B relayguard\-submissions.socket
(ports 25, 587 and 465); also
.BR relayguard\-policy.service ,
.B relayguard\-milter.service
and
.BR relayguard\-watch.service .
.SH "SEE ALSO"
.BR relayguard.toml (5),
.BR postfix (1),
.BR systemd.socket (5)
`

func init() {
	var manDir, complDir string
	cmd := &cobra.Command{
		Use:    "gen-docs",
		Short:  "Write the manual pages and shell completions (used to build the Debian package)",
		Hidden: true,
		Args:   cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			info := version.Get()
			h := mandoc.Header{Version: info.Version, Date: info.Time}
			if manDir != "" {
				if err := os.MkdirAll(manDir, 0o755); err != nil {
					return err
				}
				if _, err := mandoc.Commands(rootCmd, manDir, h, rootFiles); err != nil {
					return err
				}
				f, err := os.Create(filepath.Join(manDir, "relayguard.toml.5"))
				if err != nil {
					return err
				}
				if err := mandoc.ConfigPage(f, config.Default(), h); err != nil {
					f.Close()
					return err
				}
				if err := f.Close(); err != nil {
					return err
				}
			}
			if complDir != "" {
				if err := writeCompletions(complDir); err != nil {
					return err
				}
			}
			if manDir == "" && complDir == "" {
				return fmt.Errorf("gen-docs: name --man DIR and/or --completions DIR")
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&manDir, "man", "", "write relayguard.8, one page per subcommand and relayguard.toml.5 into `DIR`")
	cmd.Flags().StringVar(&complDir, "completions", "", "write relayguard.bash, _relayguard (zsh) and relayguard.fish into `DIR`")
	rootCmd.AddCommand(cmd)
}

// writeCompletions writes the bash, zsh and fish completion scripts.
func writeCompletions(dir string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	for name, gen := range map[string]func(*os.File) error{
		"relayguard.bash": func(f *os.File) error { return rootCmd.GenBashCompletionV2(f, true) },
		"_relayguard":     func(f *os.File) error { return rootCmd.GenZshCompletion(f) },
		"relayguard.fish": func(f *os.File) error { return rootCmd.GenFishCompletion(f, true) },
	} {
		f, err := os.Create(filepath.Join(dir, name))
		if err != nil {
			return err
		}
		if err := gen(f); err != nil {
			f.Close()
			return fmt.Errorf("completion %s: %w", name, err)
		}
		if err := f.Close(); err != nil {
			return err
		}
	}
	return nil
}
