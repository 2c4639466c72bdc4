package relaytest

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"
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
		// Tests that got no answer (errors) or only a 4xx that is not a
		// policy refusal were not decided: the verdict line says so.
		inc := ""
		if k := rep.Incomplete(); k > 0 {
			inc = fmt.Sprintf("; %d of them not completed (error or temporary failure), see above", k)
		}
		if rep.AuthUser != "" {
			return fmt.Sprintf("RESULT: no relays accepted for authenticated user %s (0/%d tests%s)", rep.AuthUser, n, inc)
		}
		return fmt.Sprintf("RESULT: no relays accepted (0/%d tests%s)", n, inc)
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

// Result is the outcome of one test.
type Result struct {
	ID        string     `json:"id"` // phase/name
	Phase     string     `json:"phase"`
	Name      string     `json:"name"`
	Group     string     `json:"group"`
	MailFrom  string     `json:"mail_from"`
	RcptTo    string     `json:"rcpt_to"`
	Exchanges []Exchange `json:"exchanges"`
	Verdict   string     `json:"verdict"`
	Stage     string     `json:"stage"` // mail, rcpt, data or connect
	Error     string     `json:"error,omitempty"`
}

// Report is the outcome of a run.
type Report struct {
	Addr       string           `json:"addr"`
	Banner     string           `json:"banner"`
	ServerName string           `json:"server_name"`
	IP         string           `json:"ip"`
	Source     string           `json:"source"`
	From       string           `json:"from"`
	To         string           `json:"to"`
	AuthUser   string           `json:"auth_user,omitempty"`
	Extensions []string         `json:"extensions"`
	STARTTLS   bool             `json:"starttls_offered"`
	SMTPUTF8   bool             `json:"smtputf8_offered"`
	Phases     []PhaseInfo      `json:"phases"`
	Results    []Result         `json:"results"`
	Counts     map[string]int   `json:"counts"`
	Outcome    string           `json:"outcome"` // closed, open, untestable
	Untestable *UntestableError `json:"untestable,omitempty"`
	Notes      []string         `json:"notes,omitempty"`
	Duration   time.Duration    `json:"duration_ns"`
}

// PhaseInfo tells how a phase was set up.
type PhaseInfo struct {
	Name  string `json:"name"`
	TLS   bool   `json:"tls"`
	Setup string `json:"setup"` // e.g. the AUTH reply
}

// Reasons a server could not be tested.
const (
	ReasonRefused    = "connection refused"
	ReasonConnect    = "cannot connect"
	ReasonCancelled  = "interrupted"
	ReasonOption     = "bad option"
	ReasonNoBanner   = "no banner"
	ReasonTempfailed = "all tests tempfailed"
	ReasonNoTLS      = "STARTTLS not offered"
	ReasonAuth       = "authentication failed"
	ReasonProtocol   = "protocol error"
)

// UntestableError says why a server could not be tested (exit status 2).
type UntestableError struct {
	Reason string `json:"reason"`
	Err    error  `json:"-"`
	Detail string `json:"detail"`
}

func (e *UntestableError) Error() string {
	if e.Err != nil {
		return e.Reason + ": " + e.Err.Error()
	}
	return e.Reason
}

func (e *UntestableError) Unwrap() error { return e.Err }

// PolicyDenial reports whether the last reply carries an enhanced status
// code of class 4.7 or 5.7, "security or policy status" (RFC 3463 3.8):
// a deliberate refusal, even when sent as a 4xx.
func (res Result) PolicyDenial() bool {
	if len(res.Exchanges) == 0 {
		return false
	}
	es := EnhancedCode(res.Exchanges[len(res.Exchanges)-1].Reply.Text)
	return strings.HasPrefix(es, "4.7.") || strings.HasPrefix(es, "5.7.")
}

// EnhancedCode returns the enhanced status code (RFC 3463, RFC 2034) that
// starts a reply text, or "".
func EnhancedCode(text string) string {
	w, _, _ := strings.Cut(text, " ")
	parts := strings.Split(w, ".")
	if len(parts) != 3 || len(parts[0]) != 1 || !strings.Contains("245", parts[0]) {
		return ""
	}
	for _, p := range parts[1:] {
		if len(p) == 0 || len(p) > 3 || strings.Trim(p, "0123456789") != "" {
			return ""
		}
	}
	return w
}

// classify maps a reply code to a verdict: 2xx accepted, 530/535 (RFC 4954
// 6) authentication required, 4xx temporary, other 5xx rejected.
func classify(code int) string {
	switch {
	case code/100 == 2:
		return Accepted
	case code == 530 || code == 535:
		return AuthRequired
	case code/100 == 4:
		return Temporary
	case code/100 == 5:
		return Rejected
	}
	return Failed
}

// finish counts verdicts and decides the outcome.
func (rep *Report) finish(err error) {
	policy := 0
	for _, res := range rep.Results {
		rep.Counts[res.Verdict]++
		if res.Verdict == Temporary && res.PolicyDenial() {
			policy++
		}
	}
	if policy > 0 {
		rep.Notes = append(rep.Notes, fmt.Sprintf("%d temporary replies carry a 4.7.x policy status (RFC 3463 3.8, e.g. Postfix defer_unauth_destination): the server refuses those relays, only with a 4xx code", policy))
	}
	var ue *UntestableError
	switch {
	case errors.As(err, &ue):
		ue.Detail = ue.Error()
		rep.Untestable = ue
	case err != nil:
		reason := ReasonProtocol
		if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
			reason = ReasonCancelled
		}
		rep.Untestable = &UntestableError{Reason: reason, Err: err, Detail: reason + ": " + err.Error()}
	case rep.Counts[Accepted] > 0:
		rep.Outcome = "open"
		return
	case len(rep.Results) > 0 && rep.Counts[Temporary]+rep.Counts[Failed] == len(rep.Results) && policy == 0:
		e := fmt.Errorf("%d temporary, %d errors of %d tests", rep.Counts[Temporary], rep.Counts[Failed], len(rep.Results))
		rep.Untestable = &UntestableError{Reason: ReasonTempfailed, Err: e, Detail: ReasonTempfailed + ": " + e.Error()}
	default:
		rep.Outcome = "closed"
		return
	}
	if rep.Counts[Accepted] > 0 {
		// Some tests ran and relayed before the run broke off: that is
		// still an open relay.
		rep.Outcome = "open"
		return
	}
	rep.Outcome = "untestable"
}

// Incomplete counts the tests that ended without a decision: an error, or
// a 4xx without a 4.7.x policy status.
func (rep *Report) Incomplete() int {
	n := 0
	for _, res := range rep.Results {
		if res.Verdict == Failed || res.Verdict == Temporary && !res.PolicyDenial() {
			n++
		}
	}
	return n
}

// AcceptedIDs lists the IDs of accepted tests.
func (rep *Report) AcceptedIDs() []string {
	var out []string
	for _, res := range rep.Results {
		if res.Verdict == Accepted {
			out = append(out, res.ID)
		}
	}
	return out
}
