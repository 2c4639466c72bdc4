package main

// `relayguard user`: the Cyrus saslpasswd2 / sasldblistusers2 equivalent.

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	"golang.org/x/term"

	"github.com/relayguard/relayguard/internal/accounts"
	"github.com/relayguard/relayguard/internal/config"
	"github.com/relayguard/relayguard/internal/queue"
	"github.com/relayguard/relayguard/internal/store"
	"github.com/relayguard/relayguard/internal/userdb"
)

var userPasswordStdin bool

func init() {
	userCmd := &cobra.Command{
		Use:   "user",
		Short: "Manage SMTP AUTH accounts and the addresses they may send as",
		Long: `Manage the accounts stored in DATA_DIR/relayguard.db.

An account name is a bare name ("alice", accepted at every local domain) or
an address ("alice@example.com"). Passwords are hashed with the configured
auth.password_hash (argon2id or bcrypt); SCRAM-SHA-256 keys are stored too,
and a CRAM-MD5 secret only when auth.cram_md5 is enabled.`,
	}

	add := &cobra.Command{
		Use:   "add USER",
		Short: "Create an account (password from a no-echo prompt, or --password-stdin)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return withUserDB(cmd, func(ctx context.Context, db *userdb.DB, cramOn bool) error {
				return storeNewPassword(cmd, args[0], cramOn, "added account", func(pw string) error { return db.Add(ctx, args[0], pw) })
			})
		},
	}
	add.Flags().BoolVar(&userPasswordStdin, "password-stdin", false, "read the password from the first line of standard input")

	passwd := &cobra.Command{
		Use:   "passwd USER",
		Short: "Change an account's password",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return withUserDB(cmd, func(ctx context.Context, db *userdb.DB, cramOn bool) error {
				if _, err := db.Get(ctx, args[0]); err != nil {
					return err
				}
				return storeNewPassword(cmd, args[0], cramOn, "password changed for", func(pw string) error { return db.SetPassword(ctx, args[0], pw) })
			})
		},
	}
	passwd.Flags().BoolVar(&userPasswordStdin, "password-stdin", false, "read the password from the first line of standard input")

	del := &cobra.Command{
		Use:   "del USER",
		Short: "Delete an account and its addresses",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return withUserDB(cmd, func(ctx context.Context, db *userdb.DB, _ bool) error {
				if err := db.Delete(ctx, args[0]); err != nil {
					return err
				}
				fmt.Fprintf(cmd.OutOrStdout(), "deleted account %s\n", args[0])
				return nil
			})
		},
	}

	var asJSON bool
	list := &cobra.Command{
		Use:   "list",
		Short: "List accounts (the sasldblistusers equivalent)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			return withUserDB(cmd, func(ctx context.Context, db *userdb.DB, _ bool) error {
				accts, err := db.List(ctx)
				if err != nil {
					return err
				}
				return printAccounts(cmd.OutOrStdout(), accts, asJSON)
			})
		},
	}
	list.Flags().BoolVar(&asJSON, "json", false, "print JSON")

	suspend := &cobra.Command{
		Use:   "suspend USER",
		Short: "Suspend an account everywhere: no AUTH, no mail through the policy service or milter, queued mail held",
		Long: `Suspend an account: relayguard serve refuses its logins (it still receives mail), the policy
service and the milter defer its mail, Dovecot's authentication policy refuses it, and its
queued mail on this host is held (serve's spool; Postfix's queue with postsuper -h). With a
shared store ([store] url) every server agrees within a second. USER need not be a relayguard
account: on a Postfix host it is the SASL login.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return withAccounts(cmd, func(ctx context.Context, db *userdb.DB, svc *accounts.Service) error {
				user := args[0]
				if err := db.Suspend(ctx, user); err != nil && !errors.Is(err, userdb.ErrNoSuchUser) {
					return err
				}
				created, err := svc.Suspend(ctx, user, config.SignalManual, "suspended by the operator (relayguard user suspend)")
				if err != nil {
					return err
				}
				if !created {
					fmt.Fprintf(cmd.OutOrStdout(), "account %s was already suspended\n", user)
					return nil
				}
				fmt.Fprintf(cmd.OutOrStdout(), "suspended account %s\n", user)
				return nil
			})
		},
	}
	unsuspend := &cobra.Command{
		Use:   "unsuspend USER",
		Short: "Lift a suspension and release the account's held mail",
		Long: `Lift the suspension of an account (made by a compromise signal, a send limit or "user
suspend") on every server sharing the store, and release its mail held on this host (serve's
spool; Postfix's queue with postsuper -H). The other servers release theirs within a second.
Change the account's password first.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return withAccounts(cmd, func(ctx context.Context, db *userdb.DB, svc *accounts.Service) error {
				user := args[0]
				dbErr := db.Unsuspend(ctx, user)
				if dbErr != nil && !errors.Is(dbErr, userdb.ErrNoSuchUser) {
					return dbErr
				}
				sp, ok, released, err := svc.Unsuspend(ctx, user)
				if err != nil {
					return err
				}
				if !ok && dbErr != nil {
					return fmt.Errorf("account %q is not suspended", user)
				}
				out := cmd.OutOrStdout()
				fmt.Fprintf(out, "unsuspended account %s\n", user)
				if ok {
					fmt.Fprintf(out, "  suspended %s by %s: %s (%s)\n", sp.Since.Local().Format(time.DateTime), sp.By, sp.Signal, sp.Evidence)
				}
				fmt.Fprintf(out, "  released %d held message(s) on this host\n", released)
				return nil
			})
		},
	}

	addr := &cobra.Command{Use: "addr", Short: "Manage the addresses an account may use as envelope sender"}
	addrAdd := &cobra.Command{
		Use:   "add USER ADDRESS",
		Short: "Let USER send as ADDRESS",
		Args:  cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			return withUserDB(cmd, func(ctx context.Context, db *userdb.DB, _ bool) error {
				if err := db.AddAddress(ctx, args[0], args[1]); err != nil {
					return err
				}
				a, _ := userdb.NormalizeAddress(args[1])
				fmt.Fprintf(cmd.OutOrStdout(), "%s may now send as %s\n", args[0], a)
				return nil
			})
		},
	}
	addrDel := &cobra.Command{
		Use:   "del USER ADDRESS",
		Short: "Withdraw ADDRESS from USER",
		Args:  cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			return withUserDB(cmd, func(ctx context.Context, db *userdb.DB, _ bool) error {
				if err := db.DelAddress(ctx, args[0], args[1]); err != nil {
					return err
				}
				fmt.Fprintf(cmd.OutOrStdout(), "%s may no longer send as %s\n", args[0], args[1])
				return nil
			})
		},
	}
	addrList := &cobra.Command{
		Use:   "list USER",
		Short: "List the addresses USER may send as",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return withUserDB(cmd, func(ctx context.Context, db *userdb.DB, _ bool) error {
				addrs, err := db.Addresses(ctx, args[0])
				if err != nil {
					return err
				}
				for _, a := range addrs {
					fmt.Fprintln(cmd.OutOrStdout(), a)
				}
				return nil
			})
		},
	}
	addr.AddCommand(addrAdd, addrDel, addrList)

	userCmd.AddCommand(add, passwd, del, list, suspend, unsuspend, addr)
	rootCmd.AddCommand(userCmd)
}

// storeNewPassword reads a new password for user (no-echo prompt, or
// --password-stdin), stores it with store, and says done with the
// account's name.
func storeNewPassword(cmd *cobra.Command, user string, cramOn bool, done string, store func(pw string) error) error {
	pw, err := readNewPassword(cmd, userPasswordStdin)
	if err != nil {
		return err
	}
	if err := store(pw); err != nil {
		return err
	}
	name, _ := userdb.NormalizeName(user)
	fmt.Fprintf(cmd.OutOrStdout(), "%s %s\n", done, name)
	cramWarning(cmd, cramOn)
	return nil
}

// withUserDB opens the configured database and account store around fn.
func withUserDB(cmd *cobra.Command, fn func(ctx context.Context, db *userdb.DB, cramOn bool) error) error {
	cfg, err := stateConfig()
	if err != nil {
		return err
	}
	ctx := cmd.Context()
	if ctx == nil {
		ctx = context.Background()
	}
	sqldb, err := store.OpenSQLite(ctx, cfg.DataDir)
	if err != nil {
		return err
	}
	defer sqldb.Close()
	db, err := userdb.Open(ctx, sqldb, userdb.Options{
		PasswordHash:    cfg.Auth.PasswordHash,
		SCRAMIterations: cfg.Auth.SCRAMIterations,
		CRAMMD5:         cfg.Auth.CRAMMD5,
		Logger:          newLogger(cfg),
	})
	if err != nil {
		return err
	}
	return fn(ctx, db, cfg.Auth.CRAMMD5)
}

func cramWarning(cmd *cobra.Command, on bool) {
	if on {
		fmt.Fprintln(cmd.ErrOrStderr(), "warning: auth.cram_md5 is enabled, so a CRAM-MD5 secret was stored; it is password-equivalent: anyone who reads the database can log in as this account over CRAM-MD5")
	}
}

// readNewPassword reads a password from the first line of stdin
// (--password-stdin) or from a terminal prompt without echo, asked twice.
func readNewPassword(cmd *cobra.Command, fromStdin bool) (string, error) {
	in := cmd.InOrStdin()
	if fromStdin {
		line, err := bufio.NewReader(io.LimitReader(in, userdb.MaxPasswordLen+3)).ReadString('\n')
		if err != nil && !errors.Is(err, io.EOF) {
			return "", fmt.Errorf("reading the password from standard input: %w", err)
		}
		pw := strings.TrimSuffix(strings.TrimSuffix(line, "\n"), "\r")
		if pw == "" {
			return "", errors.New("empty password on standard input; refusing to set it")
		}
		return pw, nil
	}
	f, ok := in.(*os.File)
	if !ok || !term.IsTerminal(int(f.Fd())) {
		return "", errors.New("standard input is not a terminal: use --password-stdin to pipe the password in")
	}
	errw := cmd.ErrOrStderr()
	fmt.Fprint(errw, "Password: ")
	p1, err := term.ReadPassword(int(f.Fd()))
	fmt.Fprintln(errw)
	if err != nil {
		return "", fmt.Errorf("reading the password: %w", err)
	}
	if len(p1) == 0 {
		return "", errors.New("empty password; refusing to set it")
	}
	fmt.Fprint(errw, "Again: ")
	p2, err := term.ReadPassword(int(f.Fd()))
	fmt.Fprintln(errw)
	if err != nil {
		return "", fmt.Errorf("reading the password: %w", err)
	}
	if !bytes.Equal(p1, p2) {
		return "", errors.New("the two passwords differ; nothing changed")
	}
	return string(p1), nil
}

func printAccounts(w io.Writer, accts []userdb.Account, asJSON bool) error {
	if asJSON {
		if accts == nil {
			accts = []userdb.Account{}
		}
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		return enc.Encode(accts)
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "NAME\tCREATED\tSTATUS\tCRAM-MD5\tADDRESSES")
	for _, a := range accts {
		status := "active"
		if a.Suspended {
			status = "suspended"
		}
		cram := "no"
		if a.HasCRAM {
			cram = "yes"
		}
		addrs := strings.Join(a.Addresses, ",")
		if addrs == "" {
			addrs = "-"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", a.Name, a.Created.Format("2006-01-02 15:04:05Z"), status, cram, addrs)
	}
	return tw.Flush()
}

// withAccounts opens the account store and the accounts' state (SQLite,
// and Redis when [store] url names it) around fn; the responder holds and
// releases mail in serve's spool (when this host has one) and in the
// Postfix queues of [accounts] postfix_config_directories.
func withAccounts(cmd *cobra.Command, fn func(ctx context.Context, db *userdb.DB, svc *accounts.Service) error) error {
	cfg, err := stateConfig()
	if err != nil {
		return err
	}
	ctx := cmd.Context()
	if ctx == nil {
		ctx = context.Background()
	}
	log := newLogger(cfg)
	st, err := store.Open(ctx, cfg.DataDir, cfg.Store.URL, log)
	if err != nil {
		return err
	}
	defer st.Close()
	db, err := userdb.Open(ctx, st.DB, userdb.Options{PasswordHash: cfg.Auth.PasswordHash,
		SCRAMIterations: cfg.Auth.SCRAMIterations, CRAMMD5: cfg.Auth.CRAMMD5, Logger: log})
	if err != nil {
		return err
	}
	var holders []accounts.Holder
	if fi, err := os.Stat(filepath.Join(cfg.Spool.Dir, "msg")); err == nil && fi.IsDir() {
		sp, err := queue.OpenForAdmin(cfg.Spool.Dir, nil)
		if err != nil {
			return err
		}
		defer sp.Close()
		holders = append(holders, accounts.SpoolHolder{Spool: sp})
	}
	svc, err := accounts.Open(ctx, cfg, st, accounts.Setup{Command: "user", Holders: holders, Log: log})
	if err != nil {
		return err
	}
	return fn(ctx, db, svc)
}
