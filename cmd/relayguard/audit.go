package main

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/relayguard/relayguard/internal/audit"
	"github.com/relayguard/relayguard/internal/console"
	"github.com/relayguard/relayguard/internal/safeio"
	"github.com/relayguard/relayguard/internal/store"
)

var auditFlags struct {
	json, fix, yes, noOutside, catalog bool
	format, output, failOn             string
	areas, skip, postfix, logs         []string
	unitDir                            string
	timeout                            time.Duration
}

func init() {
	f := &auditFlags
	cmd := &cobra.Command{
		Use:   "audit [HOST[:PORT]...]",
		Short: "Is this host a spam springboard, or about to become one? Every finding with its fix",
		Long: `audit inspects the host it runs on: every SMTP listener (whatever program runs
it) relay-tested from an outside address over IPv4 and IPv6, plain and after
STARTTLS, with AUTH before TLS, weak mechanisms, VRFY/EXPN and open submission;
Postfix's configuration (postconf -n/-M/-P of every instance) and relayguard's;
the egress lockdown; accounts; the host's identity and reputation in DNS (PTR,
HELO, DNS blocklists, SPF, DKIM, DMARC, MTA-STS) and its TLS certificates; and
the queues (backscatter, spam runs). Each finding has a severity, the evidence
and the exact fix. See docs/audit.md for every check.

--fix applies the remedies it can after showing them: relayguard's own
(egress apply --persist, relayguard.toml) always; another program's
configuration (Postfix) only with --yes.

Remote hosts you own may be named: their SMTP ports (25, 465, 587, or the
port given) are probed and relay-tested from this host as well.

Exit status: 0 clean, 1 a finding at or above --fail-on, 2 some check could
not be done (so the host cannot be called clean).`,
		RunE: runAudit,
	}
	fl := cmd.Flags()
	fl.BoolVar(&f.json, "json", false, "print the report as JSON (same as --format json)")
	fl.StringVar(&f.format, "format", "text", "text, json or html (one self-contained page)")
	fl.StringVarP(&f.output, "output", "o", "", "write the report to `FILE` instead of standard output")
	fl.StringVar(&f.failOn, "fail-on", "medium", "exit 1 when a finding is at least this `severity` (info, low, medium, high, critical)")
	fl.BoolVar(&f.fix, "fix", false, "apply the safe remedies after showing them")
	fl.BoolVar(&f.yes, "yes", false, "with --fix, also change other programs' configuration (Postfix)")
	fl.StringSliceVar(&f.areas, "areas", nil, "audit only these `areas` ("+strings.Join(audit.Areas, ",")+")")
	fl.StringSliceVar(&f.skip, "skip", nil, "leave out these `areas`")
	fl.StringArrayVar(&f.postfix, "postfix-config", nil, "also lint the Postfix instance with this configuration `DIR` (repeatable; running instances and /etc/postfix are found)")
	fl.StringArrayVar(&f.logs, "log", nil, "read this log `FILE` for blocked egress attempts and account use (repeatable; default [report] logs)")
	fl.BoolVar(&f.catalog, "catalog", true, "check own addresses and domains against the built-in catalog of public DNS lists besides [dnsbl] zones")
	fl.BoolVar(&f.noOutside, "no-outside", false, "test listeners from this host instead of from an outside address in a private network namespace")
	fl.StringVar(&f.unitDir, "unit-dir", "/etc/systemd/system", "directory of the egress lockdown's systemd unit")
	fl.DurationVar(&f.timeout, "timeout", 10*time.Second, "timeout of each network exchange")
	rootCmd.AddCommand(cmd)
}

func runAudit(cmd *cobra.Command, args []string) error {
	f := &auditFlags
	if f.json {
		f.format = "json"
	}
	switch f.format {
	case "text", "json", "html":
	default:
		return &exitError{code: audit.ExitIncomplete, err: fmt.Errorf("audit: --format %q: want text, json or html", f.format)}
	}
	failOn, err := audit.ParseSeverity(f.failOn)
	if err != nil {
		return &exitError{code: audit.ExitIncomplete, err: fmt.Errorf("audit: --fail-on: %w", err)}
	}
	areas, err := auditAreas(f.areas, f.skip)
	if err != nil {
		return &exitError{code: audit.ExitIncomplete, err: err}
	}
	cfg, err := loadConfig()
	if err != nil {
		return &exitError{code: audit.ExitIncomplete, err: err}
	}
	log := newLogger(cfg)
	ctx := cmd.Context()
	o := audit.Options{Config: cfg, Areas: areas, Remote: args, PostfixDirs: f.postfix, Logs: f.logs, Catalog: f.catalog,
		NoOutside: f.noOutside, EgressUnitDir: f.unitDir, Timeout: f.timeout, Log: log}
	// The state is read only if it exists: an audit creates nothing.
	if fi, err := os.Stat(cfg.DataDir); err == nil && fi.IsDir() {
		st, err := store.Open(ctx, cfg.DataDir, cfg.Store.URL, log)
		if err != nil {
			return &exitError{code: audit.ExitIncomplete, err: err}
		}
		defer st.Close()
		o.Stores = st
	}
	rep := audit.Run(ctx, o)
	if f.fix {
		plan := rep.Plan()
		if len(plan) == 0 {
			fmt.Fprintln(cmd.ErrOrStderr(), "audit --fix: nothing to fix automatically")
		}
		rep.Fix(f.yes, func(s string) { fmt.Fprintln(cmd.ErrOrStderr(), "audit --fix: applying:", s) })
	}
	var out io.Writer = cmd.OutOrStdout()
	var buf strings.Builder
	if f.output != "" {
		out = &buf
	}
	switch f.format {
	case "json":
		err = rep.WriteJSON(out)
	case "html":
		err = rep.WriteHTML(out)
	default:
		err = rep.WriteText(out)
	}
	if err == nil && f.output != "" {
		err = safeio.WriteFile(f.output, []byte(buf.String()), 0o644)
	}
	if err != nil {
		return &exitError{code: audit.ExitIncomplete, err: fmt.Errorf("audit: %w", err)}
	}
	if o.Stores != nil {
		// The web console shows the latest audit's findings.
		if err := saveLatestAudit(cfg.DataDir, rep); err != nil {
			log.Warn("audit: the report is not kept for the console", "err", err)
		}
	}
	if code := rep.ExitCode(failOn); code != 0 {
		return &exitError{code: code}
	}
	return nil
}

// saveLatestAudit keeps rep as JSON where the web console reads it
// (console.AuditFile), owned by the data directory's owner: audit runs as
// root, the server that shows it as the package's relayguard user.
func saveLatestAudit(dataDir string, rep *audit.Report) error {
	var b strings.Builder
	if err := rep.WriteJSON(&b); err != nil {
		return err
	}
	path := console.AuditFile(dataDir)
	if err := safeio.WriteFile(path, []byte(b.String()), 0o644); err != nil {
		return err
	}
	if fi, err := os.Stat(dataDir); err == nil && os.Geteuid() == 0 {
		if st, ok := fi.Sys().(*syscall.Stat_t); ok && st.Uid != 0 {
			for _, p := range []string{filepath.Dir(path), path} {
				if err := os.Chown(p, int(st.Uid), int(st.Gid)); err != nil {
					return err
				}
			}
		}
	}
	return nil
}

// auditAreas resolves --areas and --skip.
func auditAreas(only, skip []string) ([]string, error) {
	known := func(a string) error {
		for _, k := range audit.Areas {
			if k == a {
				return nil
			}
		}
		return fmt.Errorf("audit: area %q: want one of %s", a, strings.Join(audit.Areas, ", "))
	}
	out := audit.Areas
	if len(only) > 0 {
		out = nil
		for _, a := range only {
			if err := known(a); err != nil {
				return nil, err
			}
			out = append(out, a)
		}
	}
	var res []string
	for _, a := range out {
		drop := false
		for _, s := range skip {
			if err := known(s); err != nil {
				return nil, err
			}
			drop = drop || s == a
		}
		if !drop {
			res = append(res, a)
		}
	}
	if len(res) == 0 {
		return nil, errors.New("audit: no area left to audit")
	}
	return res, nil
}
