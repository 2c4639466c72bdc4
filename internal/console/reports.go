package console

import (
	"bytes"
	"fmt"
	"net/http"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/relayguard/relayguard/internal/config"
	"github.com/relayguard/relayguard/internal/logline"
	"github.com/relayguard/relayguard/internal/report"
)

// reports renders `relayguard report --format html` of one day from the
// [report] logs, and keeps the last few: a report reads whole log files,
// and a day whose logs did not change need not be read again.
type reports struct {
	cfg *config.Config

	run   sync.Mutex // one report at a time: each reads every log
	mu    sync.Mutex
	cache map[string]cachedReport
}

type cachedReport struct {
	sig  string // the logs' sizes and times when it was made
	html []byte
}

const maxCachedReports = 8

// logsSignature describes the log files as they are now; missing files
// are left out of the report (and named in the signature).
func logsSignature(files []string) (string, []string) {
	var b strings.Builder
	var present []string
	for _, f := range files {
		fi, err := os.Stat(f)
		if err != nil {
			fmt.Fprintf(&b, "%s:missing;", f)
			continue
		}
		present = append(present, f)
		fmt.Fprintf(&b, "%s:%d:%d;", f, fi.Size(), fi.ModTime().UnixNano())
	}
	return b.String(), present
}

// html returns the HTML report of day (YYYY-MM-DD).
func (rs *reports) html(r *http.Request, day string) ([]byte, error) {
	from, err := time.Parse("2006-01-02", day)
	if err != nil {
		return nil, badRequest("date %q: want YYYY-MM-DD", day)
	}
	files := rs.cfg.Report.Logs
	if len(files) == 0 {
		return nil, notFound("no log files to report on: set [report] logs (docs/report.md)")
	}
	rs.run.Lock()
	defer rs.run.Unlock()
	sig, present := logsSignature(files)
	rs.mu.Lock()
	if c, ok := rs.cache[day]; ok && c.sig == sig {
		rs.mu.Unlock()
		return c.html, nil
	}
	rs.mu.Unlock()
	if len(present) == 0 {
		return nil, notFound("none of the [report] logs is there: %s", strings.Join(files, ", "))
	}
	opt := report.DefaultOptions()
	opt.SyslogName = rs.cfg.Report.SyslogName
	opt.LocalDomains = rs.cfg.Site.LocalDomains
	opt.From, opt.To, opt.DateLabel = from, from.AddDate(0, 0, 1), day
	an := report.NewAnalyzer(opt)
	if err := an.ReadFiles(r.Context(), present, func() *logline.Parser { return &logline.Parser{} }); err != nil {
		return nil, err
	}
	sum := an.Summary()
	var text, out bytes.Buffer
	if err := sum.WriteText(&text, nil); err != nil {
		return nil, err
	}
	if err := sum.WriteHTML(&out, text.String()); err != nil {
		return nil, err
	}
	rs.mu.Lock()
	if rs.cache == nil || len(rs.cache) >= maxCachedReports {
		rs.cache = map[string]cachedReport{}
	}
	rs.cache[day] = cachedReport{sig: sig, html: out.Bytes()}
	rs.mu.Unlock()
	return out.Bytes(), nil
}

// reportCSP is the policy of a report page: it is the report's own
// self-contained HTML (inline style and SVG, no script), shown in a
// sandboxed frame of the console.
const reportCSP = "default-src 'none'; style-src 'unsafe-inline'; img-src data:; sandbox; frame-ancestors 'self'"

// report: GET /api/report?date=YYYY-MM-DD, the HTML report of that day.
func (c *Console) report(w http.ResponseWriter, r *http.Request, _ *principal) {
	day := r.URL.Query().Get("date")
	if day == "" {
		day = c.o.Now().Format("2006-01-02")
	}
	b, err := c.rep.html(r, day)
	if err != nil {
		code := http.StatusInternalServerError
		if ue, ok := err.(userError); ok {
			code = ue.code
		}
		fail(w, code, "%v", err)
		return
	}
	h := w.Header()
	h.Set("Content-Security-Policy", reportCSP)
	h.Set("X-Frame-Options", "SAMEORIGIN")
	h.Set("Content-Type", "text/html; charset=utf-8")
	w.Write(b)
}
