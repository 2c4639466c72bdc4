package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"runtime/debug"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/relayguard/relayguard/internal/config"
	"github.com/relayguard/relayguard/internal/logline"
	"github.com/relayguard/relayguard/internal/report"
)

var reportFlags struct {
	date, format, output, mailTo, subject, syslogName string
	hosts, users, detail                              int
	bounceDetail, deferralDetail, rejectDetail        int
	smtpDetail, warnDetail, abuseTop                  int
	problemsFirst, verbose, iso, zeroFill, ignoreCase bool
	smtpdStats, mailq, quiet, rejAddFrom, journal     bool
	journalArgs                                       []string
}

var reportCmd = &cobra.Command{
	Use:   "report [FILE...]",
	Short: "Summarise Postfix, Dovecot and relayguard logs (pflogsumm-compatible, plus the abuse view)",
	Long: `report reads mail logs (files, .gz and .xz read directly; standard input if
no file is named and [report] logs is empty; the systemd journal with --journal)
and prints pflogsumm 1.1.5's sections with its numbers, followed by the abuse
view: SMTP AUTH failures by address and subnet, relay attempts, DNSBL rejections,
backscatter signs, and relayguard's bans and egress blocks.

Options use pflogsumm's spelling; "_" and "-" are interchangeable in long options.`,
	RunE: runReport,
}

func init() {
	f := reportCmd.Flags()
	// -h is pflogsumm's host limit, so --help has no short form here.
	f.Bool("help", false, "help for report")
	f.StringVarP(&reportFlags.date, "date", "d", "", "only lines of `today|yesterday|YYYY-MM-DD|FROM..TO` (dates inclusive)")
	f.IntVarP(&reportFlags.hosts, "hosts", "h", -1, "top `N` host/domain entries (0: none; default all)")
	f.IntVarP(&reportFlags.users, "users", "u", -1, "top `N` sender/recipient entries (0: none; default all)")
	f.IntVar(&reportFlags.detail, "detail", -1, "limit every table not otherwise limited to `N` entries")
	f.IntVar(&reportFlags.bounceDetail, "bounce-detail", -1, "top `N` bounce reasons (0: none)")
	f.IntVar(&reportFlags.deferralDetail, "deferral-detail", -1, "top `N` deferral reasons (0: none)")
	f.IntVar(&reportFlags.rejectDetail, "reject-detail", -1, "top `N` reject/warning/hold/discard reasons (0: none)")
	f.IntVar(&reportFlags.smtpDetail, "smtp-detail", -1, "top `N` smtp delivery failures (0: none)")
	f.IntVar(&reportFlags.warnDetail, "smtpd-warning-detail", -1, "top `N` warnings (0: none)")
	f.IntVar(&reportFlags.abuseTop, "abuse-top", report.DefaultAbuseLimit, "top `N` rows of the abuse view's tables by address, subnet and domain (0: none; -1: all)")
	f.BoolVar(&reportFlags.problemsFirst, "problems-first", false, "print the problem reports before the traffic tables")
	f.BoolVar(&reportFlags.verbose, "verbose-msg-detail", false, "do not shorten reasons in the problem reports")
	f.BoolVar(&reportFlags.iso, "iso-date-time", false, "ISO 8601 dates and times in the per-day and per-hour tables")
	f.BoolVar(&reportFlags.zeroFill, "zero-fill", false, "list days with no traffic in the per-day table")
	f.BoolVarP(&reportFlags.ignoreCase, "ignore-case", "i", false, "fold whole addresses to lower case")
	f.StringVar(&reportFlags.syslogName, "syslog-name", "", "Postfix syslog_name `NAME` (default from [report] syslog_name: postfix)")
	f.BoolVar(&reportFlags.smtpdStats, "smtpd-stats", false, "smtpd connection statistics")
	f.BoolVar(&reportFlags.mailq, "mailq", false, "append relayguard's mail queue")
	f.BoolVarP(&reportFlags.quiet, "quiet", "q", false, "leave out sections that have nothing to show")
	f.BoolVar(&reportFlags.rejAddFrom, "rej-add-from", false, "show the sender next to rejected recipients")
	f.StringVar(&reportFlags.format, "format", "", "`text`, json or html (default from [report] format: text)")
	f.StringVarP(&reportFlags.output, "output", "o", "", "write the report to `FILE` instead of standard output")
	f.BoolVar(&reportFlags.journal, "journal", false, "read the systemd journal (journalctl -o json)")
	f.StringArrayVar(&reportFlags.journalArgs, "journal-arg", nil, "extra journalctl `ARG` (repeatable), e.g. --journal-arg=--unit=postfix@-")
	f.StringVar(&reportFlags.mailTo, "mail-to", "", "mail the report to `ADDR[,ADDR...]` through [report] smtp_server")
	f.StringVar(&reportFlags.subject, "subject", "", "subject of the mailed report (default: \"Mail report for HOST\")")
	f.SetNormalizeFunc(func(_ *pflag.FlagSet, name string) pflag.NormalizedName {
		return pflag.NormalizedName(strings.ReplaceAll(name, "_", "-"))
	})
	rootCmd.AddCommand(reportCmd)
}

// parseDateRange turns -d into [from, to) and the label pflogsumm prints.
func parseDateRange(s string, now time.Time) (from, to time.Time, label string, err error) {
	day := func(t time.Time) time.Time { return time.Date(t.Year(), t.Month(), t.Day(), 0, 0, 0, 0, time.UTC) }
	parse := func(v string) (time.Time, error) {
		switch v {
		case "today":
			return day(now), nil
		case "yesterday":
			return day(now).AddDate(0, 0, -1), nil
		}
		t, err := time.Parse("2006-01-02", v)
		if err != nil {
			return t, fmt.Errorf("-d %q: want today, yesterday, YYYY-MM-DD or FROM..TO", s)
		}
		return t, nil
	}
	if a, b, ok := strings.Cut(s, ".."); ok {
		if from, err = parse(a); err != nil {
			return
		}
		if to, err = parse(b); err != nil {
			return
		}
		if to.Before(from) {
			return from, to, "", fmt.Errorf("-d %q: end before start", s)
		}
		return from, to.AddDate(0, 0, 1), from.Format("2006-01-02") + " to " + to.Format("2006-01-02"), nil
	}
	if from, err = parse(s); err != nil {
		return
	}
	label = from.Format("2006-01-02")
	if s == "today" || s == "yesterday" {
		label = fmt.Sprintf("%s %2d", from.Format("Jan"), from.Day())
	}
	return from, from.AddDate(0, 0, 1), label, nil
}

func runReport(cmd *cobra.Command, args []string) error {
	cfg, err := loadConfig()
	if err != nil {
		return err
	}
	rf := &reportFlags
	opt := report.DefaultOptions()
	opt.SyslogName = cfg.Report.SyslogName
	if rf.syslogName != "" {
		opt.SyslogName = rf.syslogName
	}
	opt.IgnoreCase, opt.VerboseMsgDetail, opt.SMTPDStats = rf.ignoreCase, rf.verbose, rf.smtpdStats
	opt.RejAddFrom, opt.ISODateTime, opt.ZeroFill = rf.rejAddFrom, rf.iso, rf.zeroFill
	opt.ProblemsFirst, opt.Quiet = rf.problemsFirst, rf.quiet
	opt.LocalDomains = cfg.Site.LocalDomains
	limits := []struct {
		name string
		v    int
		dst  *int
	}{
		{"hosts", rf.hosts, &opt.HostLimit}, {"users", rf.users, &opt.UserLimit},
		{"bounce-detail", rf.bounceDetail, &opt.BounceDetail}, {"deferral-detail", rf.deferralDetail, &opt.DeferralDetail},
		{"reject-detail", rf.rejectDetail, &opt.RejectDetail}, {"smtp-detail", rf.smtpDetail, &opt.SMTPDetail},
		{"smtpd-warning-detail", rf.warnDetail, &opt.WarningDetail}, {"abuse-top", rf.abuseTop, &opt.AbuseLimit},
	}
	for _, l := range limits {
		*l.dst = l.v
		if !cmd.Flags().Changed(l.name) && cmd.Flags().Changed("detail") {
			*l.dst = rf.detail
		}
		if *l.dst < -1 {
			return fmt.Errorf("--%s %d: must be 0 or more", l.name, *l.dst)
		}
	}
	if rf.date != "" {
		opt.From, opt.To, opt.DateLabel, err = parseDateRange(rf.date, time.Now())
		if err != nil {
			return err
		}
	}
	// --mail-to is checked before the (possibly long) reading of the logs.
	var mailTo []string
	if rf.mailTo != "" {
		if mailTo, err = report.ParseRecipients(rf.mailTo); err != nil {
			return fmt.Errorf("--mail-to: %w", err)
		}
		if cfg.Report.SMTPServer == "" {
			return fmt.Errorf("--mail-to: [report] smtp_server is empty")
		}
	}
	format := cfg.Report.Format
	if rf.format != "" {
		format = rf.format
	}
	switch format {
	case "text", "json", "html":
	default:
		return fmt.Errorf("--format %q: want text, json or html", format)
	}

	ctx := cmd.Context()
	// Collecting less often (GOGC 200) saves CPU time, and the soft limit
	// makes the collector run earlier rather than let the heap pass it
	// (peak RSS under 200 MB on a 1,000,000-line botnet log). GOGC 50-400
	// and a collection before the summary were measured in session 5: the
	// page faults follow what the summary needs resident, and CPU did not
	// move (docs/benchmarks/report.md).
	debug.SetGCPercent(200)
	debug.SetMemoryLimit(reportMemoryLimit)
	an := report.NewAnalyzer(opt)
	newParser := func() *logline.Parser { return &logline.Parser{} }
	files := args
	if len(files) == 0 && !rf.journal {
		files = cfg.Report.Logs
	}
	if rf.journal {
		jargs := rf.journalArgs
		if !opt.From.IsZero() {
			jargs = append(jargs, "--since="+opt.From.Format("2006-01-02"), "--until="+opt.To.Format("2006-01-02"))
		}
		if err := an.ReadJournal(ctx, "", jargs, time.Local); err != nil {
			return err
		}
	}
	if len(files) > 0 {
		if err := an.ReadFiles(ctx, files, newParser); err != nil {
			return err
		}
	} else if !rf.journal {
		if err := an.ReadLines(os.Stdin, newParser()); err != nil {
			return fmt.Errorf("standard input: %w", err)
		}
	}
	sum := an.Summary()

	var mailq func(io.Writer) error
	if rf.mailq {
		// pflogsumm runs mailq(1); relayguard's queue is listed as by
		// `relayguard queue list`. A queue that cannot be read is reported
		// in the section rather than failing the whole report.
		mailq = func(w io.Writer) error {
			if err := queueList(w); err != nil {
				fmt.Fprintf(w, "(%v)\n", err)
			}
			return nil
		}
	}
	if format == "text" && len(mailTo) == 0 {
		// Straight to the output: the text of a botnet's log is tens of
		// megabytes, not worth holding twice.
		return writeReportText(sum, rf.output, mailq)
	}
	// The text is made only where it is shown: in the HTML report and in
	// the mail (JSON made it for nothing, a botnet's ~10 MB).
	var text bytes.Buffer
	if format != "json" || len(mailTo) > 0 {
		if err := sum.WriteText(&text, mailq); err != nil {
			return err
		}
	}
	var out bytes.Buffer
	switch format {
	case "text":
		out.Write(text.Bytes())
	case "json":
		err = sum.WriteJSON(&out)
	case "html":
		err = sum.WriteHTML(&out, text.String())
	}
	if err != nil {
		return err
	}
	if len(mailTo) > 0 {
		return mailReport(ctx, cfg, sum, mailTo, text.String(), format == "html" || cfg.Report.HTMLMail)
	}
	if rf.output != "" {
		if err := os.WriteFile(rf.output, out.Bytes(), 0o644); err != nil {
			return err
		}
		return nil
	}
	_, err = os.Stdout.Write(out.Bytes())
	return err
}

// reportMemoryLimit is the soft memory limit of `relayguard report`.
const reportMemoryLimit = 160 << 20

// writeReportText writes the text report to the file output ("" for
// standard output).
func writeReportText(sum *report.Summary, output string, mailq func(io.Writer) error) error {
	if output == "" {
		return sum.WriteText(os.Stdout, mailq)
	}
	f, err := os.OpenFile(output, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		return err
	}
	if err := sum.WriteText(f, mailq); err != nil {
		f.Close()
		return fmt.Errorf("%s: %w", output, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("%s: %w", output, err)
	}
	return nil
}

// mailReport sends the report to --mail-to through [report] smtp_server.
func mailReport(ctx context.Context, cfg *config.Config, sum *report.Summary, to []string, text string, withHTML bool) error {
	host := cfg.Hostname
	if host == "" {
		host, _ = os.Hostname()
	}
	from := cfg.Report.MailFrom
	if from == "" {
		from = "relayguard@" + host
	}
	subject := reportFlags.subject
	if subject == "" {
		subject = "Mail report for " + host
		if sum.DateLabel != "" {
			subject += " (" + sum.DateLabel + ")"
		}
	}
	m := &report.Mail{Server: cfg.Report.SMTPServer, From: from, To: to, Subject: subject, Text: text, User: cfg.Report.SMTPUser}
	if cfg.Report.SMTPPasswordFile != "" {
		b, err := os.ReadFile(cfg.Report.SMTPPasswordFile)
		if err != nil {
			return fmt.Errorf("report.smtp_password_file: %w", err)
		}
		m.Password = strings.TrimSpace(string(b))
	}
	if withHTML {
		var h bytes.Buffer
		if err := sum.WriteHTML(&h, text); err != nil {
			return err
		}
		m.HTML = h.String()
	}
	return m.Send(ctx)
}
