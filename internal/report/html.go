package report

import (
	"bytes"
	"encoding/json"
	"fmt"
	"html/template"
	"io"
	"strings"
	"sync"
)

// WriteJSON writes the summary as indented JSON: json.Encoder's output
// with SetIndent("", "  "), indented by appendIndented (the Encoder's
// indenting, a scanner's step per byte, was 1,027 M of the 2,300 M
// instructions of a botnet's 30 MB).
func (s *Summary) WriteJSON(w io.Writer) error {
	b, err := json.Marshal(s)
	if err != nil {
		return err
	}
	out := appendIndented(make([]byte, 0, len(b)+len(b)/2), b, "  ")
	_, err = w.Write(append(out, '\n'))
	return err
}

// appendIndented appends src, compact JSON as json.Marshal makes it (no
// space outside strings), indented as json.Indent does it with no prefix:
// a new line and an indent a level after an opening bracket or brace and
// after a comma, and before a closing one, but for an empty array or
// object ("[]", "{}"); ": " after a name. A string is copied whole, to its
// closing quote (one not escaped by a backslash).
func appendIndented(dst, src []byte, indent string) []byte {
	depth := 0
	pad := "\n" + strings.Repeat(indent, 16) // (a new line and its indent appended at once)
	newline := func() {
		if n := 1 + depth*len(indent); n <= len(pad) {
			dst = append(dst, pad[:n]...)
			return
		}
		dst = append(dst, '\n')
		for range depth {
			dst = append(dst, indent...)
		}
	}
	for i := 0; i < len(src); i++ {
		switch c := src[i]; c {
		case '"':
			j := i + 1
			for {
				q := bytes.IndexByte(src[j:], '"')
				if q < 0 { // (not from json.Marshal: copied as it is)
					j = len(src)
					break
				}
				if e := bytes.IndexByte(src[j:j+q], '\\'); e >= 0 {
					j += e + 2 // an escape's two bytes (an escaped quote among them)
					continue
				}
				j += q + 1
				break
			}
			j = min(j, len(src))
			dst = append(dst, src[i:j]...)
			i = j - 1
		case '{', '[':
			if i+1 < len(src) && (src[i+1] == '}' || src[i+1] == ']') {
				dst = append(dst, c, src[i+1])
				i++
				continue
			}
			dst = append(dst, c)
			depth++
			newline()
		case '}', ']':
			depth--
			newline()
			dst = append(dst, c)
		case ',':
			dst = append(dst, c)
			newline()
		case ':':
			dst = append(dst, ':', ' ')
		default: // a number, true, false or null: to the next comma or close
			j := i + 1
			for j < len(src) && src[j] != ',' && src[j] != '}' && src[j] != ']' {
				j++
			}
			dst = append(dst, src[i:j]...)
			i = j - 1
		}
	}
	return dst
}

// The HTML report is one self-contained file: inline CSS, inline SVG
// charts, no scripts and no external assets, so that it shows the same in
// a browser and in a mail client.

type bar struct {
	Label string
	Value int64
}

// barChart draws horizontal bars as SVG.
func barChart(id, title string, bars []bar, color string) template.HTML {
	const w, rowH, labelW = 760, 22, 260
	if len(bars) == 0 {
		return ""
	}
	var maxV int64 = 1
	for _, b := range bars {
		maxV = max(maxV, b.Value)
	}
	h := len(bars)*rowH + 30
	var sb strings.Builder
	fmt.Fprintf(&sb, `<svg id="%s" class="chart" xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" viewBox="0 0 %d %d" role="img" aria-label="%s">`,
		id, w, h, w, h, template.HTMLEscapeString(title))
	fmt.Fprintf(&sb, `<title>%s</title>`, template.HTMLEscapeString(title))
	for i, b := range bars {
		y := 20 + i*rowH
		bw := int(float64(w-labelW-70) * float64(b.Value) / float64(maxV))
		label := b.Label
		if r := []rune(label); len(r) > 40 { // cut whole characters, never inside UTF-8
			label = string(r[:37]) + "..."
		}
		fmt.Fprintf(&sb, `<text x="%d" y="%d" text-anchor="end" font-size="12" font-family="sans-serif">%s</text>`, labelW-6, y+14, template.HTMLEscapeString(label))
		fmt.Fprintf(&sb, `<rect class="bar" x="%d" y="%d" width="%d" height="%d" fill="%s"/>`, labelW, y+2, max(bw, 1), rowH-6, color)
		fmt.Fprintf(&sb, `<text x="%d" y="%d" font-size="12" font-family="sans-serif">%d</text>`, labelW+bw+6, y+14, b.Value)
	}
	sb.WriteString(`</svg>`)
	return template.HTML(sb.String())
}

// hourChart draws the per-hour traffic as grouped columns.
func hourChart(s *Summary) template.HTML {
	const w, h, left, bottom = 960, 280, 50, 40
	series := []struct {
		name, color string
		get         func(DayRow) int64
	}{
		{"received", "#4e79a7", func(r DayRow) int64 { return r.Received }},
		{"delivered", "#59a14f", func(r DayRow) int64 { return r.Delivered }},
		{"deferred", "#f28e2b", func(r DayRow) int64 { return r.Deferred }},
		{"bounced", "#b07aa1", func(r DayRow) int64 { return r.Bounced }},
		{"rejected", "#e15759", func(r DayRow) int64 { return r.Rejected }},
	}
	var maxV int64 = 1
	for _, r := range s.Hours {
		for _, se := range series {
			maxV = max(maxV, se.get(r))
		}
	}
	var sb strings.Builder
	fmt.Fprintf(&sb, `<svg id="chart-hours" class="chart" xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" viewBox="0 0 %d %d" role="img" aria-label="Traffic per hour">`, w, h, w, h)
	sb.WriteString(`<title>Traffic per hour</title>`)
	plotH := h - bottom - 30
	slot := float64(w-left-10) / 24
	bw := slot / float64(len(series)+1)
	fmt.Fprintf(&sb, `<line x1="%d" y1="%d" x2="%d" y2="%d" stroke="#333"/>`, left, h-bottom, w-10, h-bottom)
	fmt.Fprintf(&sb, `<text x="%d" y="%d" font-size="11" text-anchor="end" font-family="sans-serif">%d</text>`, left-4, h-bottom-plotH+4, maxV)
	fmt.Fprintf(&sb, `<text x="%d" y="%d" font-size="11" text-anchor="end" font-family="sans-serif">0</text>`, left-4, h-bottom)
	for hr, r := range s.Hours {
		x0 := float64(left) + float64(hr)*slot
		for i, se := range series {
			v := se.get(r)
			bh := float64(plotH) * float64(v) / float64(maxV)
			fmt.Fprintf(&sb, `<rect class="bar" x="%.1f" y="%.1f" width="%.1f" height="%.1f" fill="%s"><title>%02d:00 %s: %d</title></rect>`,
				x0+float64(i)*bw, float64(h-bottom)-bh, bw, bh, se.color, hr, se.name, v)
		}
		fmt.Fprintf(&sb, `<text x="%.1f" y="%d" font-size="11" text-anchor="middle" font-family="sans-serif">%02d</text>`, x0+slot/2, h-bottom+14, hr)
	}
	for i, se := range series {
		x := left + i*120
		fmt.Fprintf(&sb, `<rect x="%d" y="%d" width="12" height="12" fill="%s"/><text x="%d" y="%d" font-size="12" font-family="sans-serif">%s</text>`,
			x, h-16, se.color, x+16, h-6, se.name)
	}
	sb.WriteString(`</svg>`)
	return template.HTML(sb.String())
}

// StyleSheet is the CSS of relayguard's HTML pages (the report, the
// audit), inline in each page so that it stays self-contained.
const StyleSheet = `body{font-family:sans-serif;margin:1.5em;color:#222;max-width:1000px}
h1{font-size:1.5em}h2{font-size:1.15em;border-bottom:1px solid #ccc;margin-top:1.6em}
table{border-collapse:collapse;margin:.5em 0}td,th{padding:2px 8px;border-bottom:1px solid #eee;text-align:right}
td.l,th.l{text-align:left}pre{background:#f6f6f6;padding:.6em;overflow-x:auto;font-size:12px}
.kpi{display:inline-block;margin:0 1.2em .8em 0}.kpi b{display:block;font-size:1.4em}
`

// BarChart draws labelled horizontal bars as inline SVG (the report's
// charts), for other relayguard pages.
func BarChart(id, title string, labels []string, values []int64, color string) template.HTML {
	bars := make([]bar, 0, len(labels))
	for i, l := range labels {
		bars = append(bars, bar{l, values[i]})
	}
	return barChart(id, title, bars, color)
}

// htmlTmpl is the page, parsed on first use: only --format html needs it,
// and parsing it at start cost every command ~0.15 ms.
var htmlTmpl = sync.OnceValue(func() *template.Template {
	return template.Must(template.New("report").Parse(`<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<title>relayguard mail report{{if .S.DateLabel}} for {{.S.DateLabel}}{{end}}</title>
<style>{{.CSS}}</style></head><body>
<h1>relayguard mail report{{if .S.DateLabel}} for {{.S.DateLabel}}{{end}}</h1>
<p>{{.S.Lines}} lines read{{if not .S.First.IsZero}}, {{.S.First.Format "2006-01-02 15:04"}} – {{.S.Last.Format "2006-01-02 15:04"}}{{end}}.</p>
<h2>Grand Totals</h2>
<div>{{with .S.Totals}}
<span class="kpi"><b>{{.Received}}</b>received</span><span class="kpi"><b>{{.Delivered}}</b>delivered</span>
<span class="kpi"><b>{{.Forwarded}}</b>forwarded</span><span class="kpi"><b>{{.Deferred}}</b>deferred ({{.Deferrals}} deferrals)</span>
<span class="kpi"><b>{{.Bounced}}</b>bounced</span><span class="kpi"><b>{{.Rejected}}</b>rejected ({{.RejectedPct}}%)</span>
<span class="kpi"><b>{{.RejectWarnings}}</b>reject warnings</span><span class="kpi"><b>{{.Held}}</b>held</span>
<span class="kpi"><b>{{.Discarded}}</b>discarded ({{.DiscardedPct}}%)</span>
<span class="kpi"><b>{{.BytesReceived}}</b>bytes received</span><span class="kpi"><b>{{.BytesDelivered}}</b>bytes delivered</span>
<span class="kpi"><b>{{.Senders}}</b>senders</span><span class="kpi"><b>{{.SendingDomains}}</b>sending hosts/domains</span>
<span class="kpi"><b>{{.Recipients}}</b>recipients</span><span class="kpi"><b>{{.RecipientDomains}}</b>recipient hosts/domains</span>
{{end}}</div>
<h2>Traffic per hour</h2>
{{.HourChart}}
<h2>Rejections by reason</h2>
{{if .ReasonChart}}{{.ReasonChart}}{{else}}<p>none</p>{{end}}
{{if .S.Abuse.Accounts}}<h2>Account containment</h2>
<table><tr><th class="l">time</th><th class="l">account</th><th class="l">event</th><th class="l">signal</th><th class="l">evidence</th><th class="l">by</th></tr>
{{range .S.Abuse.Accounts}}<tr><td class="l">{{if not .Time.IsZero}}{{.Time.Format "2006-01-02 15:04:05"}}{{end}}</td><td class="l">{{.User}}</td><td class="l">{{.Event}}</td><td class="l">{{.Rule}}</td><td class="l">{{.Reason}}</td><td class="l">{{.By}}</td></tr>
{{end}}</table>
{{end}}<h2>Top attacking subnets</h2>
{{if .SubnetChart}}{{.SubnetChart}}
<table><tr><th class="l">subnet</th><th>auth failures</th><th>relay attempts</th><th>rejections</th><th>total</th></tr>
{{range .S.Abuse.TopSubnets}}<tr><td class="l">{{.Subnet}}</td><td>{{.AuthFailures}}</td><td>{{.Relay}}</td><td>{{.Rejects}}</td><td>{{.Total}}</td></tr>
{{end}}</table>{{else}}<p>none</p>{{end}}
<h2>SMTP AUTH failures by subnet</h2>
{{if .S.Abuse.AuthBySubnet}}<table><tr><th class="l">subnet</th><th>failures</th><th>addresses</th><th class="l">users tried</th></tr>
{{range .S.Abuse.AuthBySubnet}}<tr><td class="l">{{.Key}}</td><td>{{.Failures}}</td><td>{{.Addresses}}</td><td class="l">{{range $i, $u := .Users}}{{if $i}}, {{end}}{{$u.Key}} ({{$u.Count}}){{end}}</td></tr>
{{end}}</table>{{else}}<p>none</p>{{end}}
<h2>Relay attempts by target domain</h2>
{{if .S.Abuse.RelayByDomain}}<table>{{range .S.Abuse.RelayByDomain}}<tr><td>{{.Count}}</td><td class="l">{{.Key}}</td></tr>{{end}}</table>{{else}}<p>none</p>{{end}}
<h2>DNSBL rejections by list</h2>
{{if .S.Abuse.DNSBL}}<table>{{range .S.Abuse.DNSBL}}<tr><td>{{.Count}}</td><td class="l">{{.Key}}</td></tr>{{end}}</table>{{else}}<p>none</p>{{end}}
<h2>Backscatter signs</h2>
<p>{{.S.Abuse.NDNs}} non-delivery notices, {{.S.Abuse.Backscatter}} of their deliveries to senders that never sent from here.</p>
<h2>Full report</h2>
<pre>{{.Text}}</pre>
</body></html>
`))
})

// WriteHTML writes the self-contained HTML report; text is the text
// report, included in full at the end.
func (s *Summary) WriteHTML(w io.Writer, text string) error {
	var reasons, subnets []bar
	for _, r := range limit(s.Abuse.RejectReasons, 15) {
		reasons = append(reasons, bar{r.Key, r.Count})
	}
	for _, r := range limit(s.Abuse.TopSubnets, 15) {
		subnets = append(subnets, bar{r.Subnet, r.Total})
	}
	return htmlTmpl().Execute(w, map[string]any{
		"S":           s,
		"CSS":         template.CSS(StyleSheet),
		"HourChart":   hourChart(s),
		"ReasonChart": barChart("chart-reasons", "Rejections by reason", reasons, "#e15759"),
		"SubnetChart": barChart("chart-subnets", "Top attacking subnets", subnets, "#76b7b2"),
		"Text":        text,
	})
}
