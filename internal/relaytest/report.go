package relaytest

import (
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
)

// WriteText prints the report for a person: the server, one line per test,
// the counts of each verdict, and the verdict line.
func (rep *Report) WriteText(w io.Writer) error {
	fmt.Fprintf(w, "relaytest: %s\n", rep.Addr)
	if rep.Banner != "" {
		fmt.Fprintf(w, "  banner:      %s\n", rep.Banner)
		fmt.Fprintf(w, "  server name: %s   address: %s   testing from: %s\n", rep.ServerName, rep.IP, rep.Source)
		fmt.Fprintf(w, "  outside:     from <%s> to <%s>\n", rep.From, rep.To)
		fmt.Fprintf(w, "  offers:      STARTTLS %s, SMTPUTF8 %s\n", yesNo(rep.STARTTLS), yesNo(rep.SMTPUTF8))
	}
	for _, p := range rep.Phases {
		fmt.Fprintf(w, "  phase %-9s %s\n", p.Name+":", p.Setup)
	}
	for _, n := range rep.Notes {
		fmt.Fprintf(w, "  note: %s\n", n)
	}
	if len(rep.Results) > 0 {
		fmt.Fprintln(w)
		tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
		for _, res := range rep.Results {
			fmt.Fprintf(tw, "  %s\t%s\t%s\t%s\n", strings.ToUpper(res.Verdict), res.ID, "<"+res.MailFrom+"> → <"+res.RcptTo+">", lastReply(res))
		}
		tw.Flush()
		fmt.Fprintln(w)
	}
	fmt.Fprintf(w, "SUMMARY: %d tests: %d accepted, %d rejected, %d authentication required, %d temporary, %d errors (%.2fs)\n",
		len(rep.Results), rep.Counts[Accepted], rep.Counts[Rejected], rep.Counts[AuthRequired], rep.Counts[Temporary], rep.Counts[Failed], rep.Duration.Seconds())
	_, err := fmt.Fprintln(w, rep.ResultLine())
	return err
}

// ResultLine is the one-line verdict.
func (rep *Report) ResultLine() string {
	n, acc := len(rep.Results), rep.Counts[Accepted]
	switch rep.Outcome {
	case "open":
		if rep.AuthUser != "" {
			return fmt.Sprintf("RESULT: relay accepted for authenticated user %s — %d/%d tests accepted", rep.AuthUser, acc, n)
		}
		return fmt.Sprintf("RESULT: OPEN RELAY — %d/%d tests accepted", acc, n)
	case "closed":
		if rep.AuthUser != "" {
			return fmt.Sprintf("RESULT: no relays accepted for authenticated user %s (0/%d tests)", rep.AuthUser, n)
		}
		return fmt.Sprintf("RESULT: no relays accepted (0/%d tests)", n)
	}
	detail := ""
	if rep.Untestable != nil {
		detail = rep.Untestable.Detail
	}
	return "RESULT: could not test — " + detail
}

// WriteJSON writes the whole report as one JSON document.
func (rep *Report) WriteJSON(w io.Writer) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	enc.SetEscapeHTML(false)
	return enc.Encode(struct {
		*Report
		Result string `json:"result"`
	}{rep, rep.ResultLine()})
}

func lastReply(res Result) string {
	if res.Error != "" {
		return res.Error
	}
	if len(res.Exchanges) == 0 {
		return ""
	}
	e := res.Exchanges[len(res.Exchanges)-1]
	verb, _, _ := strings.Cut(e.Command, ":")
	verb, _, _ = strings.Cut(verb, " ")
	return verb + " " + e.Reply.String()
}

func yesNo(b bool) string {
	if b {
		return "yes"
	}
	return "no"
}
