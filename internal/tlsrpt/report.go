package tlsrpt

import (
	"bytes"
	"compress/gzip"
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/relayguard/relayguard/internal/queue"
	"github.com/relayguard/relayguard/internal/safeio"
)

// Report is an aggregate report (RFC 8460 §4).
type Report struct {
	OrganizationName string         `json:"organization-name"`
	DateRange        DateRange      `json:"date-range"`
	ContactInfo      string         `json:"contact-info"`
	ReportID         string         `json:"report-id"`
	Policies         []PolicyReport `json:"policies"`
}

// DateRange is the day a report covers.
type DateRange struct {
	Start time.Time `json:"start-datetime"`
	End   time.Time `json:"end-datetime"`
}

// PolicyReport is the results for one policy (RFC 8460 §4.4).
type PolicyReport struct {
	Policy   PolicyDesc      `json:"policy"`
	Summary  Summary         `json:"summary"`
	Failures []FailureDetail `json:"failure-details,omitempty"`
}

// PolicyDesc describes the policy.
type PolicyDesc struct {
	Type   string   `json:"policy-type"`
	String []string `json:"policy-string,omitempty"`
	Domain string   `json:"policy-domain"`
	MXHost []string `json:"mx-host,omitempty"`
}

// Summary counts sessions.
type Summary struct {
	OK     int `json:"total-successful-session-count"`
	Failed int `json:"total-failure-session-count"`
}

// FailureDetail is one kind of failure (RFC 8460 §4.3, §4.4).
type FailureDetail struct {
	ResultType string `json:"result-type"`
	MX         string `json:"receiving-mx-hostname,omitempty"`
	IP         string `json:"receiving-ip,omitempty"`
	Count      int    `json:"failed-session-count"`
	Reason     string `json:"failure-reason-code,omitempty"`
}

// build makes the report about domain for one day.
func build(d *day, domain, submitter, contact string) Report {
	start, _ := time.Parse(time.DateOnly, d.Date)
	rep := Report{
		OrganizationName: submitter,
		DateRange:        DateRange{Start: start.UTC(), End: start.Add(24*time.Hour - time.Second).UTC()},
		ContactInfo:      contact,
		ReportID:         d.Date + "_" + domain + "@" + submitter,
	}
	keys := make([]string, 0, len(d.Policies))
	for k := range d.Policies {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		p := d.Policies[k]
		if p.Domain != domain {
			continue
		}
		pr := PolicyReport{Policy: PolicyDesc{Type: p.Type, String: p.Strings, Domain: p.Domain, MXHost: p.MXPatterns},
			Summary: Summary{OK: p.OK, Failed: p.Failed}}
		if pr.Policy.Type == "" {
			pr.Policy.Type = "no-policy-found"
		}
		for _, c := range p.Failures {
			pr.Failures = append(pr.Failures, FailureDetail{ResultType: c.ResultType, MX: c.MX, IP: c.IP, Count: c.N, Reason: c.Reason})
		}
		sort.Slice(pr.Failures, func(i, j int) bool {
			a, b := pr.Failures[i], pr.Failures[j]
			return a.ResultType+a.MX+a.IP < b.ResultType+b.MX+b.IP
		})
		rep.Policies = append(rep.Policies, pr)
	}
	return rep
}

// LookupTXT is the DNS TXT lookup (net's error conventions).
type LookupTXT func(ctx context.Context, name string) ([]string, error)

// Spool stores a report mail durably (queue.Spool).
type Spool interface {
	Put(ctx context.Context, env *queue.Envelope, data io.Reader) (string, error)
}

// Sender sends the reports of past days.
type Sender struct {
	Rec       *Recorder
	TXT       LookupTXT
	Submitter string // this server's host name: organization-name, TLS-Report-Submitter
	From      string // report mail From: address
	Spool     Spool
	HTTP      *http.Client
	Log       *slog.Logger
}

// rua returns the report URIs a domain publishes at _smtp._tls.DOMAIN
// (RFC 8460 §3): none when there is no single TLSRPTv1 record.
func (s *Sender) rua(ctx context.Context, domain string) ([]string, error) {
	txts, err := s.TXT(ctx, "_smtp._tls."+domain)
	var de *net.DNSError
	if errors.As(err, &de) && de.IsNotFound {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var recs []string
	for _, t := range txts {
		if strings.HasPrefix(t, "v=TLSRPTv1") {
			recs = append(recs, t)
		}
	}
	if len(recs) != 1 {
		return nil, nil
	}
	var out []string
	for _, part := range strings.Split(recs[0], ";") {
		k, v, _ := strings.Cut(strings.TrimSpace(part), "=")
		if k != "rua" {
			continue
		}
		for _, u := range strings.Split(v, ",") {
			if u = strings.TrimSpace(u); u != "" {
				out = append(out, u)
			}
		}
	}
	return out, nil
}

// sentFile records which domains of a day got their report.
func (s *Sender) sentFile(date string) string { return s.Rec.file(date) + ".sent" }

// SendDue sends the reports of every stored day before today, one per
// policy domain that publishes a TLSRPT record, to each of its rua URIs
// (mailto: through the spool, https: by POST). A domain whose report
// could not be delivered is tried again at the next call, for three days;
// a day is removed once every domain is done.
func (s *Sender) SendDue(ctx context.Context) error {
	if err := s.Rec.Flush(); err != nil {
		s.Log.Error("tlsrpt: flushing results", "err", err)
	}
	var firstErr error
	for _, date := range s.Rec.pendingDays() {
		s.Rec.mu.Lock()
		d := s.Rec.loadDay(date)
		var domains []string
		for _, p := range d.Policies {
			if !slices.Contains(domains, p.Domain) {
				domains = append(domains, p.Domain)
			}
		}
		s.Rec.mu.Unlock()
		sort.Strings(domains)
		sent := map[string]bool{}
		if b, err := os.ReadFile(s.sentFile(date)); err == nil {
			for _, l := range strings.Split(string(b), "\n") {
				if l != "" {
					sent[l] = true
				}
			}
		}
		save := func() {
			var b strings.Builder
			for k := range sent {
				b.WriteString(k + "\n")
			}
			safeio.WriteFile(s.sentFile(date), []byte(b.String()), 0o640)
		}
		pending := 0
		for _, dom := range domains {
			if err := s.sendDomain(ctx, d, dom, sent, save); err != nil {
				s.Log.Warn("tlsrpt: report not sent; trying again later", "domain", dom, "date", date, "err", err)
				if firstErr == nil {
					firstErr = err
				}
				pending++
			}
		}
		age := s.Rec.now().UTC().Sub(d.start())
		if pending == 0 || age > 4*24*time.Hour {
			os.Remove(s.Rec.file(date))
			os.Remove(s.sentFile(date))
			s.Rec.mu.Lock()
			delete(s.Rec.days, date)
			s.Rec.mu.Unlock()
		}
	}
	return firstErr
}

func (d *day) start() time.Time {
	t, _ := time.Parse(time.DateOnly, d.Date)
	return t
}

// sendDomain sends one domain's report of a day to those of its rua URIs
// not in sent (keys "DOMAIN URI"), adding each that succeeds and calling
// save; a domain without a TLSRPT record wants none.
func (s *Sender) sendDomain(ctx context.Context, d *day, domain string, sent map[string]bool, save func()) error {
	uris, err := s.rua(ctx, domain)
	if err != nil {
		return fmt.Errorf("_smtp._tls.%s: %w", domain, err)
	}
	if len(uris) == 0 {
		return nil
	}
	s.Rec.mu.Lock()
	rep := build(d, domain, s.Submitter, "mailto:"+s.From)
	s.Rec.mu.Unlock()
	js, err := json.Marshal(rep)
	if err != nil {
		return err
	}
	var gz bytes.Buffer
	zw := gzip.NewWriter(&gz)
	zw.Write(js)
	zw.Close()
	var errs []error
	for _, u := range uris {
		if sent[domain+" "+u] {
			continue
		}
		var err error
		switch {
		case strings.HasPrefix(u, "mailto:"):
			err = s.mail(ctx, rep, domain, u, gz.Bytes())
		case strings.HasPrefix(u, "https:"):
			err = s.post(ctx, u, gz.Bytes())
		default:
			s.Log.Warn("tlsrpt: unsupported rua scheme ignored", "domain", domain, "rua", u)
			continue
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", u, err))
			continue
		}
		s.Log.Info("tlsrpt: report sent", "domain", domain, "date", d.Date, "rua", u, "policies", len(rep.Policies))
		sent[domain+" "+u] = true
		save()
	}
	return errors.Join(errs...)
}

// post sends a report by HTTPS (RFC 8460 §5.4).
func (s *Sender) post(ctx context.Context, u string, gz []byte) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, u, bytes.NewReader(gz))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/tlsrpt+gzip")
	resp, err := s.HTTP.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	if resp.StatusCode/100 != 2 {
		return fmt.Errorf("HTTP %s", resp.Status)
	}
	return nil
}

// mail spools a report mail (RFC 8460 §5.3): multipart/report with
// report-type "tlsrpt", a human part and the gzipped JSON.
func (s *Sender) mail(ctx context.Context, rep Report, domain, u string, gz []byte) error {
	pu, err := url.Parse(u)
	if err != nil || pu.Opaque == "" {
		return fmt.Errorf("bad mailto URI")
	}
	to := pu.Opaque
	var rb [12]byte
	rand.Read(rb[:])
	boundary := "=_tlsrpt_" + hex.EncodeToString(rb[:])
	begin, end := rep.DateRange.Start.Unix(), rep.DateRange.End.Unix()
	// RFC 8460 §5.1 file name: sender!policy-domain!begin!end.json.gz
	name := fmt.Sprintf("%s!%s!%d!%d.json.gz", s.Submitter, domain, begin, end)
	var b bytes.Buffer
	w := func(format string, a ...any) { fmt.Fprintf(&b, format+"\r\n", a...) }
	w("From: %s", s.From)
	w("To: <%s>", to)
	w("Date: %s", time.Now().Format(time.RFC1123Z))
	w("Subject: Report Domain: %s Submitter: %s Report-ID: <%s>", domain, s.Submitter, rep.ReportID)
	w("Message-ID: <%s.%s>", hex.EncodeToString(rb[:6]), rep.ReportID)
	w("TLS-Report-Domain: %s", domain)
	w("TLS-Report-Submitter: %s", s.Submitter)
	w("Auto-Submitted: auto-generated")
	w("MIME-Version: 1.0")
	w("Content-Type: multipart/report; report-type=\"tlsrpt\";")
	w("\tboundary=\"%s\"", boundary)
	w("")
	w("--%s", boundary)
	w("Content-Type: text/plain; charset=us-ascii")
	w("")
	w("This is an aggregate TLS report (RFC 8460) from %s about %s,", s.Submitter, domain)
	w("%s to %s.", rep.DateRange.Start.Format(time.RFC3339), rep.DateRange.End.Format(time.RFC3339))
	w("")
	w("--%s", boundary)
	w("Content-Type: application/tlsrpt+gzip")
	w("Content-Transfer-Encoding: base64")
	w("Content-Disposition: attachment; filename=\"%s\"", name)
	w("")
	enc := base64.StdEncoding.EncodeToString(gz)
	for len(enc) > 76 {
		w("%s", enc[:76])
		enc = enc[76:]
	}
	w("%s", enc)
	w("")
	w("--%s--", boundary)
	// The null sender: a report that cannot be delivered is not bounced
	// (no report about a report). Mode local: signed like our own mail.
	env := &queue.Envelope{From: "", Recipients: []queue.Recipient{{Addr: to}}, Mode: "local", Listener: "tlsrpt", Trusted: true}
	_, err = s.Spool.Put(ctx, env, &b)
	return err
}

// Run flushes results every minute and sends the due reports shortly
// after each UTC midnight (and once at start, for days a stopped server
// did not report), until ctx ends.
func (s *Sender) Run(ctx context.Context) {
	flush := time.NewTicker(time.Minute)
	defer flush.Stop()
	next := time.Now()
	for {
		if !time.Now().Before(next) {
			s.SendDue(ctx)
			next = time.Now().UTC().Truncate(24 * time.Hour).Add(24*time.Hour + 5*time.Minute)
		}
		select {
		case <-ctx.Done():
			s.Rec.Flush()
			return
		case <-flush.C:
			if err := s.Rec.Flush(); err != nil {
				s.Log.Error("tlsrpt: flushing results", "err", err)
			}
		case <-time.After(time.Until(next)):
		}
	}
}
