package main

// `relayguard admin`: the web console's admin accounts and API tokens.

import (
	"context"
	"fmt"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/relayguard/relayguard/internal/config"
	"github.com/relayguard/relayguard/internal/console"
	"github.com/relayguard/relayguard/internal/store"
)

func init() {
	var pwStdin, asJSON bool
	var role, label, expires string
	top := &cobra.Command{
		Use:   "admin",
		Short: "Manage the web console's admin accounts and API tokens",
		Long: `Manage the accounts that log in to the web console (served on the admin listener by
relayguard serve, and by relayguard watch --admin). They are separate from the mail
accounts of "relayguard user": a mail password never opens the console. Role admin acts
(ban, unban, hold, release, delete, suspend); role readonly only looks.

API tokens let scripts use the console's JSON API with curl:
  curl -H "Authorization: Bearer $TOKEN" http://127.0.0.1:9025/api/bans
A token is shown once, when it is made; only its SHA-256 is stored. See docs/console.md.`,
	}

	add := &cobra.Command{
		Use:   "add NAME",
		Short: "Create an admin account (password from a no-echo prompt, or --password-stdin)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return withAdmins(cmd, func(ctx context.Context, a *console.Admins) error {
				if err := console.CheckAdminName(args[0]); err != nil {
					return err
				}
				pw, err := readNewPassword(cmd, pwStdin)
				if err != nil {
					return err
				}
				if err := a.Add(ctx, args[0], pw, role); err != nil {
					return err
				}
				fmt.Fprintf(cmd.OutOrStdout(), "added admin %s (%s)\n", args[0], role)
				return nil
			})
		},
	}
	add.Flags().BoolVar(&pwStdin, "password-stdin", false, "read the password from the first line of standard input")
	add.Flags().StringVar(&role, "role", console.RoleAdmin, "`admin` (acts) or readonly (only looks)")

	passwd := &cobra.Command{
		Use:   "passwd NAME",
		Short: "Change an admin's password",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return withAdmins(cmd, func(ctx context.Context, a *console.Admins) error {
				pw, err := readNewPassword(cmd, pwStdin)
				if err != nil {
					return err
				}
				if err := a.SetPassword(ctx, args[0], pw); err != nil {
					return err
				}
				fmt.Fprintf(cmd.OutOrStdout(), "password changed for admin %s (sessions already open stay until they end)\n", args[0])
				return nil
			})
		},
	}
	passwd.Flags().BoolVar(&pwStdin, "password-stdin", false, "read the password from the first line of standard input")

	setRole := &cobra.Command{
		Use:   "role NAME admin|readonly",
		Short: "Change an admin's role (API tokens follow at once)",
		Args:  cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			return withAdmins(cmd, func(ctx context.Context, a *console.Admins) error {
				if err := a.SetRole(ctx, args[0], args[1]); err != nil {
					return err
				}
				fmt.Fprintf(cmd.OutOrStdout(), "admin %s is now %s\n", args[0], args[1])
				return nil
			})
		},
	}

	del := &cobra.Command{
		Use:   "del NAME",
		Short: "Delete an admin account and its API tokens",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return withAdmins(cmd, func(ctx context.Context, a *console.Admins) error {
				if err := a.Remove(ctx, args[0]); err != nil {
					return err
				}
				fmt.Fprintf(cmd.OutOrStdout(), "deleted admin %s and its tokens\n", args[0])
				return nil
			})
		},
	}

	list := &cobra.Command{
		Use:   "list",
		Short: "List the admin accounts",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return withAdmins(cmd, func(ctx context.Context, a *console.Admins) error {
				ads, err := a.List(ctx)
				if err != nil {
					return err
				}
				if asJSON {
					return writeJSON(cmd.OutOrStdout(), ads)
				}
				tw := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 2, ' ', 0)
				fmt.Fprintln(tw, "NAME\tROLE\tCREATED")
				for _, ad := range ads {
					fmt.Fprintf(tw, "%s\t%s\t%s\n", ad.Name, ad.Role, ad.Created.Local().Format(time.DateTime))
				}
				return tw.Flush()
			})
		},
	}
	list.Flags().BoolVar(&asJSON, "json", false, "print JSON")

	token := &cobra.Command{
		Use:   "token NAME",
		Short: "Make an API token for an admin and print it (shown this once)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			var ttl time.Duration
			if expires != "" {
				var d config.Duration
				if err := d.UnmarshalText([]byte(expires)); err != nil || d.D() <= 0 {
					return fmt.Errorf("--expires %q: want a duration such as 90d or 12h", expires)
				}
				ttl = d.D()
			}
			return withAdmins(cmd, func(ctx context.Context, a *console.Admins) error {
				tok, t, err := a.NewToken(ctx, args[0], label, ttl)
				if err != nil {
					return err
				}
				fmt.Fprintln(cmd.OutOrStdout(), tok)
				exp := "never"
				if !t.Expires.IsZero() {
					exp = t.Expires.Local().Format(time.DateTime)
				}
				fmt.Fprintf(cmd.ErrOrStderr(), "token %d for admin %s (%s), expires %s; it is not shown again\n", t.ID, t.Admin, t.Label, exp)
				return nil
			})
		},
	}
	token.Flags().StringVar(&label, "label", "", "what the token is for (shown by admin tokens)")
	token.Flags().StringVar(&expires, "expires", "", "the token stops working after `DURATION` (e.g. 90d); default never")

	tokens := &cobra.Command{
		Use:   "tokens [NAME]",
		Short: "List API tokens (all, or an admin's)",
		Args:  cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			name := ""
			if len(args) == 1 {
				name = args[0]
			}
			return withAdmins(cmd, func(ctx context.Context, a *console.Admins) error {
				ts, err := a.Tokens(ctx, name)
				if err != nil {
					return err
				}
				if asJSON {
					return writeJSON(cmd.OutOrStdout(), ts)
				}
				tw := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 2, ' ', 0)
				fmt.Fprintln(tw, "ID\tADMIN\tLABEL\tCREATED\tEXPIRES\tLAST USED")
				for _, t := range ts {
					fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%s\t%s\n", t.ID, t.Admin, t.Label, t.Created.Local().Format(time.DateTime),
						orNever(t.Expires), orNever(t.LastUsed))
				}
				return tw.Flush()
			})
		},
	}
	tokens.Flags().BoolVar(&asJSON, "json", false, "print JSON")

	revoke := &cobra.Command{
		Use:   "revoke ID",
		Short: "Revoke an API token (its id from admin tokens)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			id, err := console.ParseTokenID(args[0])
			if err != nil {
				return err
			}
			return withAdmins(cmd, func(ctx context.Context, a *console.Admins) error {
				if err := a.Revoke(ctx, id); err != nil {
					return err
				}
				fmt.Fprintf(cmd.OutOrStdout(), "revoked token %d\n", id)
				return nil
			})
		},
	}

	top.AddCommand(add, passwd, setRole, del, list, token, tokens, revoke)
	rootCmd.AddCommand(top)
}

func orNever(t time.Time) string {
	if t.IsZero() {
		return "-"
	}
	return t.Local().Format(time.DateTime)
}

// withAdmins opens the admin store of the data directory.
func withAdmins(cmd *cobra.Command, fn func(ctx context.Context, a *console.Admins) error) error {
	cfg, err := stateConfig()
	if err != nil {
		return err
	}
	ctx := cmd.Context()
	if ctx == nil {
		ctx = context.Background()
	}
	db, err := store.OpenSQLite(ctx, cfg.DataDir)
	if err != nil {
		return err
	}
	defer db.Close()
	a, err := console.OpenAdmins(ctx, db, cfg.Auth.HashMemory)
	if err != nil {
		return err
	}
	return fn(ctx, a)
}
