package audit

import (
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"
)

// WriteText renders the report for a terminal or a mail.
func (r *Report) WriteText(w io.Writer) error {
	fmt.Fprintf(w, "relayguard audit of %s, %s (%s)\n", r.Host, r.Started.Format("2006-01-02 15:04:05 MST"), r.Duration.Round(100*time.Millisecond))
	fmt.Fprintf(w, "score %d/100, grade %s: %s\n", r.Score, r.Grade, r.countLine())
	if len(r.Problems) > 0 {
		fmt.Fprintf(w, "%d checks could not be done (see the end): the host cannot be called clean\n", len(r.Problems))
	}
	if len(r.Findings) == 0 {
		fmt.Fprintln(w, "\nno findings")
	}
	for _, f := range r.Findings {
		fmt.Fprintf(w, "\n%-8s %s  %s\n", strings.ToUpper(f.Severity.String()), f.Check, f.Subject)
		fmt.Fprintf(w, "  %s\n", f.Title)
		for _, e := range f.Evidence {
			fmt.Fprintf(w, "  evidence: %s\n", e)
		}
		fmt.Fprintf(w, "  fix: %s\n", f.Fix)
		if f.AutoFix != "" {
			fmt.Fprintf(w, "  --fix: %s\n", f.AutoFix)
		}
	}
	if len(r.Listeners) > 0 {
		fmt.Fprintln(w, "\nSMTP listeners")
		tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "  PORT\tROLE\tADDRESSES\tPROGRAMS\tTLS\tAUTH BEFORE TLS\tRELAY TESTS")
		for _, l := range r.Listeners {
			fmt.Fprintf(tw, "  %d\t%s\t%s\t%s\t%s\t%s\t%s\n", l.Port, l.Role, strings.Join(l.Addrs, " "), programNames(&l), l.tlsCell(), l.authCell(), l.relayCell())
		}
		if err := tw.Flush(); err != nil {
			return err
		}
	}
	if len(r.Fixes) > 0 {
		fmt.Fprintln(w, "\nFixes")
		for _, x := range r.Fixes {
			switch {
			case x.Applied:
				fmt.Fprintf(w, "  applied: %s\n", x.Show)
			case x.Error != "":
				fmt.Fprintf(w, "  FAILED:  %s: %s\n", x.Show, x.Error)
			default:
				fmt.Fprintf(w, "  not applied (%s): %s\n", x.Skipped, x.Show)
			}
		}
	}
	if len(r.Problems) > 0 {
		fmt.Fprintln(w, "\nCould not check")
		for _, p := range r.Problems {
			fmt.Fprintf(w, "  %s/%s: %s\n", p.Area, p.Check, p.Error)
		}
	}
	if len(r.Notes) > 0 {
		fmt.Fprintln(w, "\nNotes")
		for _, n := range r.Notes {
			fmt.Fprintf(w, "  %s\n", n)
		}
	}
	return nil
}

func (r *Report) countLine() string {
	var parts []string
	for s := Critical; s >= Info; s-- {
		parts = append(parts, fmt.Sprintf("%d %s", r.Counts[s.String()], s))
	}
	return strings.Join(parts, ", ")
}

func (l *Listener) tlsCell() string {
	switch {
	case l.Probe == nil:
		return "-"
	case l.Probe.TLS != nil:
		mode := "STARTTLS"
		if l.ImplicitTLS {
			mode = "implicit"
		}
		return fmt.Sprintf("%s %s, cert until %s", mode, l.Probe.TLS.Version, l.Probe.TLS.NotAfter.Format("2006-01-02"))
	case l.Probe.TLSError != "":
		return "broken"
	}
	return "none"
}

func (l *Listener) authCell() string {
	if l.Probe == nil {
		return "-"
	}
	if len(l.Probe.AuthPlain) == 0 {
		return "no"
	}
	return strings.Join(l.Probe.AuthPlain, " ")
}

func (l *Listener) relayCell() string {
	var s []string
	for _, rr := range l.Relay {
		out := rr.Outcome
		if out == "" {
			out = "untestable"
		}
		if rr.Outcome == "open" {
			out = fmt.Sprintf("OPEN (%d/%d)", len(rr.Accepted), rr.Tests)
		}
		s = append(s, fmt.Sprintf("%s from %s: %s", rr.Target, rr.View, out))
	}
	if len(s) == 0 {
		return "-"
	}
	return strings.Join(s, "; ")
}
