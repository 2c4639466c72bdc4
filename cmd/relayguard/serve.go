package main

import (
	"os"
	"os/signal"
	"syscall"

	"github.com/spf13/cobra"

	"github.com/relayguard/relayguard/internal/server"
)

func init() {
	rootCmd.AddCommand(&cobra.Command{
		Use:   "serve",
		Short: "Run the SMTP server (MX, submission, submissions) and the admin/metrics listener",
		Long: `Run the SMTP server. With no --config it runs on the embedded default
configuration: MX on 127.0.0.1:2525, submission (STARTTLS, AUTH required) on
127.0.0.1:5587, submissions (implicit TLS) on 127.0.0.1:5465, admin/metrics on
127.0.0.1:9025, state under ./relayguard-data.

SIGHUP (systemctl reload) rereads the configuration and the certificate and
applies them to new sessions without dropping the open ones; a configuration
that does not pass the checks of "config check" is refused with a log line
and the running one stays. SIGTERM or SIGINT stops the server.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, err := loadConfig()
			if err != nil {
				return err
			}
			log, level := newLoggerLevel(cfg)
			hup := make(chan os.Signal, 1)
			signal.Notify(hup, syscall.SIGHUP)
			defer signal.Stop(hup)
			return server.Run(cmd.Context(), cfg, log, server.Options{Reload: hup, Load: loadConfig, Level: level})
		},
	})
}
