package tlsrpt

import (
	"bytes"
	"compress/gzip"
	"context"
	"crypto/tls"
	"encoding/base64"
	"encoding/json"
	"io"
	"log/slog"
	"mime"
	"mime/multipart"
	"net/http"
	"net/mail"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/relayguard/relayguard/internal/deliver"
	"github.com/relayguard/relayguard/internal/dnsutil"
	"github.com/relayguard/relayguard/internal/dnsutil/dnstest"
	"github.com/relayguard/relayguard/internal/msgauth/authtest"
	"github.com/relayguard/relayguard/internal/queue"
)

type receiver struct {
	mu      sync.Mutex
	reports [][]byte
	ctype   string
	down    bool
}

func startReceiver(t *testing.T, ca *authtest.CA) (*receiver, string) {
	t.Helper()
	rv := &receiver{}
	ln, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{Certificates: []tls.Certificate{ca.Issue(t, time.Time{}, "127.0.0.1")}})
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		rv.mu.Lock()
		defer rv.mu.Unlock()
		if rv.down {
			http.Error(w, "down", http.StatusServiceUnavailable)
			return
		}
		b, _ := io.ReadAll(r.Body)
		rv.reports = append(rv.reports, b)
		rv.ctype = r.Header.Get("Content-Type")
	})}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return rv, "https://" + ln.Addr().String() + "/tlsrpt"
}

func gunzipReport(t *testing.T, gz []byte) Report {
	t.Helper()
	zr, err := gzip.NewReader(bytes.NewReader(gz))
	if err != nil {
		t.Fatal(err)
	}
	js, _ := io.ReadAll(zr)
	var rep Report
	if err := json.Unmarshal(js, &rep); err != nil {
		t.Fatalf("report JSON: %v\n%s", err, js)
	}
	// The keys RFC 8460 §4.4 names, spelled as it spells them.
	for _, k := range []string{`"organization-name"`, `"date-range"`, `"start-datetime"`, `"contact-info"`, `"report-id"`,
		`"policy-type"`, `"policy-domain"`, `"total-successful-session-count"`, `"total-failure-session-count"`,
		`"result-type"`, `"failed-session-count"`} {
		if !bytes.Contains(js, []byte(k)) {
			t.Fatalf("report lacks %s:\n%s", k, js)
		}
	}
	return rep
}

// Results recorded during a day become, after it, one report per policy
// domain that publishes _smtp._tls: POSTed as application/tlsrpt+gzip to
// an https rua and mailed (multipart/report, report-type tlsrpt) to a
// mailto rua through the spool; a domain without the record gets none; a
// receiver that is down is tried again, and a sent day is not sent twice.
func TestDailyReports(t *testing.T) {
	ca := authtest.NewCA(t)
	rv, url := startReceiver(t, ca)
	dns := dnstest.Start(t)
	dns.Add(t, `_smtp._tls.sts.test. 300 IN TXT "v=TLSRPTv1; rua=mailto:tlsrpt@reports.test,`+url+`"`)
	res, _ := dnsutil.New([]string{dns.Addr}, time.Second)
	dir := t.TempDir()
	rec, err := NewRecorder(dir+"/tlsrpt", nil)
	if err != nil {
		t.Fatal(err)
	}
	yesterday := time.Now().UTC().Add(-24 * time.Hour)
	rec.now = func() time.Time { return yesterday }
	pol := []string{"version: STSv1", "mode: enforce", "mx: mx.sts.test", "max_age: 86400"}
	for range 3 {
		rec.Record(deliver.TLSResult{Domain: "sts.test", Type: "sts", Policy: pol, MXPatterns: []string{"mx.sts.test"}, MX: "mx.sts.test", IP: "192.0.2.1", OK: true})
	}
	rec.Record(deliver.TLSResult{Domain: "sts.test", Type: "sts", Policy: pol, MXPatterns: []string{"mx.sts.test"}, MX: "mx.sts.test", IP: "192.0.2.2",
		Failure: "certificate-host-mismatch", Reason: "x509: certificate is valid for other.test"})
	rec.Record(deliver.TLSResult{Domain: "quiet.test", Type: "tlsa", Policy: []string{"3 1 1 abcd"}, MX: "mx.quiet.test", OK: true})
	if err := rec.Flush(); err != nil {
		t.Fatal(err)
	}
	rec.now = time.Now // the day is over

	spool, err := queue.OpenSpool(dir+"/spool", time.Millisecond, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer spool.Close()
	snd := &Sender{Rec: rec, TXT: res.LookupTXT, Submitter: "mail.sender.test", From: "tlsrpt-noreply@mail.sender.test",
		Spool: spool, Log: slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelError})),
		HTTP: &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: ca.Pool()}}}}

	rv.mu.Lock()
	rv.down = true
	rv.mu.Unlock()
	if err := snd.SendDue(context.Background()); err == nil {
		t.Fatal("SendDue reported no error with the receiver down")
	}
	rv.mu.Lock()
	rv.down = false
	rv.mu.Unlock()
	if err := snd.SendDue(context.Background()); err != nil {
		t.Fatal(err)
	}
	rv.mu.Lock()
	posted := rv.reports
	ctype := rv.ctype
	rv.mu.Unlock()
	if len(posted) != 1 || ctype != "application/tlsrpt+gzip" {
		t.Fatalf("%d reports POSTed (Content-Type %q), want 1", len(posted), ctype)
	}
	rep := gunzipReport(t, posted[0])
	if len(rep.Policies) != 1 {
		t.Fatalf("report: %+v", rep)
	}
	p := rep.Policies[0]
	if p.Policy.Type != "sts" || p.Policy.Domain != "sts.test" || p.Summary.OK != 3 || p.Summary.Failed != 1 ||
		len(p.Failures) != 1 || p.Failures[0].ResultType != "certificate-host-mismatch" || p.Failures[0].IP != "192.0.2.2" ||
		rep.DateRange.Start.Format(time.DateOnly) != yesterday.Format(time.DateOnly) {
		t.Fatalf("report content: %+v", rep)
	}

	// The mailed copy: one, though the POST failed once (the mail was
	// spooled at the first try and is not sent again).
	envs, _ := spool.List()
	var mails []*queue.Envelope
	for _, e := range envs {
		if e.Listener == "tlsrpt" {
			mails = append(mails, e)
		}
	}
	if len(mails) != 1 || mails[0].Recipients[0].Addr != "tlsrpt@reports.test" || mails[0].From != "" {
		t.Fatalf("spooled reports: %+v", mails)
	}
	rc, _ := spool.Open(mails[0].ID)
	msg, err := mail.ReadMessage(rc)
	if err != nil {
		t.Fatal(err)
	}
	mt, params, _ := mime.ParseMediaType(msg.Header.Get("Content-Type"))
	if mt != "multipart/report" || params["report-type"] != "tlsrpt" || msg.Header.Get("TLS-Report-Domain") != "sts.test" ||
		!strings.HasPrefix(msg.Header.Get("Subject"), "Report Domain: sts.test Submitter: mail.sender.test Report-ID: <") {
		t.Fatalf("report mail header: %v", msg.Header)
	}
	mr := multipart.NewReader(msg.Body, params["boundary"])
	var attached []byte
	for {
		part, err := mr.NextPart()
		if err != nil {
			break
		}
		if part.Header.Get("Content-Type") == "application/tlsrpt+gzip" {
			b, _ := io.ReadAll(part)
			attached, _ = base64.StdEncoding.DecodeString(strings.NewReplacer("\r", "", "\n", "").Replace(string(b)))
			if !strings.Contains(part.Header.Get("Content-Disposition"), "mail.sender.test!sts.test!") {
				t.Fatalf("attachment name: %s", part.Header.Get("Content-Disposition"))
			}
		}
	}
	rc.Close()
	if got := gunzipReport(t, attached); got.ReportID != rep.ReportID {
		t.Fatalf("mailed report %q, posted %q", got.ReportID, rep.ReportID)
	}
	// Nothing left to send.
	if err := snd.SendDue(context.Background()); err != nil {
		t.Fatal(err)
	}
	rv.mu.Lock()
	defer rv.mu.Unlock()
	if len(rv.reports) != 1 {
		t.Fatalf("a day was reported twice")
	}
	if _, err := os.Stat(rec.file(yesterday.Format(time.DateOnly))); !os.IsNotExist(err) {
		t.Fatalf("the sent day is still stored: %v", err)
	}
}
