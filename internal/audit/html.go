package audit

import (
	"html/template"
	"io"
	"sync"

	"github.com/relayguard/relayguard/internal/report"
)

// The HTML audit is one self-contained page in the report's style
// (report.StyleSheet, report.BarChart): inline CSS and SVG, no script, no
// external load, so that it shows the same in a browser and in a mail.

const auditCSS = `.sev{display:inline-block;min-width:5.5em;text-align:center;border-radius:3px;padding:1px 4px;font-weight:bold;font-size:.85em}
.sev-critical{background:#b00020;color:#fff}.sev-high{background:#e15759;color:#fff}.sev-medium{background:#f28e2b;color:#fff}
.sev-low{background:#edc948;color:#222}.sev-info{background:#bab0ac;color:#222}
.finding{border-left:4px solid #ccc;padding:.3em .8em;margin:.8em 0}.finding.critical{border-color:#b00020}.finding.high{border-color:#e15759}
.finding.medium{border-color:#f28e2b}.finding.low{border-color:#edc948}.finding h3{font-size:1em;margin:.2em 0}
.finding ul{margin:.2em 0 .2em 1.2em;padding:0}code{background:#f6f6f6;padding:1px 3px}.fixed{opacity:.55}
.grade{font-size:2.4em;font-weight:bold}`

// htmlTmpl is the page, parsed on first use: only the HTML audit needs it,
// and parsing it at start cost every command ~0.15 ms.
var htmlTmpl = sync.OnceValue(func() *template.Template {
	return template.Must(template.New("audit").Parse(`<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<title>relayguard audit of {{.R.Host}}</title>
<style>{{.CSS}}</style></head><body>
<h1>relayguard audit of {{.R.Host}}</h1>
<p>{{.R.Started.Format "2006-01-02 15:04:05 MST"}}, {{.R.Duration}}; areas: {{range $i, $a := .R.Areas}}{{if $i}}, {{end}}{{$a}}{{end}}.</p>
<div id="score"><span class="kpi"><b class="grade">{{.R.Grade}}</b>grade</span><span class="kpi"><b>{{.R.Score}}/100</b>score</span>
{{range .Sevs}}<span class="kpi"><b>{{index $.R.Counts .}}</b><span class="sev sev-{{.}}">{{.}}</span></span>{{end}}</div>
{{if .R.Problems}}<p><b>{{len .R.Problems}} checks could not be done</b>: the host cannot be called clean (see below).</p>{{end}}
<h2>Findings by area</h2>
{{if .AreaChart}}{{.AreaChart}}{{else}}<p>none</p>{{end}}
<h2>Findings</h2>
{{range .R.Findings}}<div class="finding {{.Severity}}{{if .Fixed}} fixed{{end}}" id="{{.Check}}">
<h3><span class="sev sev-{{.Severity}}">{{.Severity}}</span> {{.Title}}</h3>
<div><code>{{.Check}}</code> — {{.Subject}}{{if .Fixed}} — <b>fixed by --fix</b>{{end}}</div>
{{if .Evidence}}<ul>{{range .Evidence}}<li>{{.}}</li>{{end}}</ul>{{end}}
<div>fix: <code>{{.Fix}}</code>{{if .AutoFix}} (--fix: {{.AutoFix}}){{end}}</div></div>
{{else}}<p>no findings</p>{{end}}
<h2>SMTP listeners</h2>
{{if .R.Listeners}}<table><tr><th>port</th><th class="l">role</th><th class="l">addresses</th><th class="l">programs</th><th class="l">TLS</th><th class="l">AUTH before TLS</th><th class="l">relay tests</th></tr>
{{range .Listeners}}<tr><td>{{.Port}}</td><td class="l">{{.Role}}</td><td class="l">{{.Addrs}}</td><td class="l">{{.Programs}}</td><td class="l">{{.TLS}}</td><td class="l">{{.Auth}}</td><td class="l">{{.Relay}}</td></tr>
{{end}}</table>{{else}}<p>none found</p>{{end}}
{{if .R.Fixes}}<h2>Fixes</h2><ul>{{range .R.Fixes}}<li>{{if .Applied}}applied{{else if .Error}}<b>failed</b> ({{.Error}}){{else}}not applied ({{.Skipped}}){{end}}: <code>{{.Show}}</code></li>{{end}}</ul>{{end}}
{{if .R.Problems}}<h2>Could not check</h2><ul>{{range .R.Problems}}<li>{{.Area}}/{{.Check}}: {{.Error}}</li>{{end}}</ul>{{end}}
{{if .R.Notes}}<h2>Notes</h2><ul>{{range .R.Notes}}<li>{{.}}</li>{{end}}</ul>{{end}}
</body></html>
`))
})

type htmlListener struct {
	Port                                    uint16
	Role, Addrs, Programs, TLS, Auth, Relay string
}

// WriteHTML renders the report as one self-contained HTML page.
func (r *Report) WriteHTML(w io.Writer) error {
	var labels []string
	var values []int64
	for _, a := range Areas {
		n := 0
		for _, f := range r.Findings {
			if f.Area == a && f.Severity > Info {
				n++
			}
		}
		if n > 0 {
			labels, values = append(labels, a), append(values, int64(n))
		}
	}
	var chart template.HTML
	if len(labels) > 0 {
		chart = report.BarChart("chart-areas", "Findings by area (info not counted)", labels, values, "#e15759")
	}
	var ls []htmlListener
	for i := range r.Listeners {
		l := &r.Listeners[i]
		ls = append(ls, htmlListener{Port: l.Port, Role: l.Role, Addrs: joinSpace(l.Addrs), Programs: programNames(l),
			TLS: l.tlsCell(), Auth: l.authCell(), Relay: l.relayCell()})
	}
	var sevs []string
	for s := Critical; s >= Info; s-- {
		sevs = append(sevs, s.String())
	}
	return htmlTmpl().Execute(w, map[string]any{
		"R":         r,
		"CSS":       template.CSS(report.StyleSheet + auditCSS),
		"AreaChart": chart,
		"Listeners": ls,
		"Sevs":      sevs,
	})
}

func joinSpace(ss []string) string {
	out := ""
	for i, s := range ss {
		if i > 0 {
			out += " "
		}
		out += s
	}
	return out
}
