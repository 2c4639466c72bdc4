package report

import (
	"bufio"
	"bytes"
	"context"
	"io"
	"mime"
	"mime/multipart"
	"net"
	"net/mail"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"golang.org/x/net/html"
)

func artifactDir(t *testing.T) string {
	if d := os.Getenv("TEST_ARTIFACTS"); d != "" {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
		return d
	}
	return t.TempDir()
}

// TestHTMLInChromium renders the HTML report in headless Chromium: the
// screenshot must exist and not be blank, and the DOM Chromium built must
// hold the three charts with their bars.
func TestHTMLInChromium(t *testing.T) {
	chromium := requireBinary(t, "chromium")
	s := analyzeFixture(t, DefaultOptions())
	var text, page bytes.Buffer
	if err := s.WriteText(&text, nil); err != nil {
		t.Fatal(err)
	}
	if err := s.WriteHTML(&page, text.String()); err != nil {
		t.Fatal(err)
	}
	if strings.Contains(page.String(), "<script") || strings.Contains(page.String(), "http://") && !strings.Contains(page.String(), `xmlns="http://www.w3.org/2000/svg"`) {
		t.Error("HTML report is not self-contained")
	}
	art := artifactDir(t)
	htmlFile := filepath.Join(art, "report.html")
	if err := os.WriteFile(htmlFile, page.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	shot := filepath.Join(art, "report.png")
	base := []string{"--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
		"--disable-background-networking", "--disable-component-update", "--disable-sync",
		"--user-data-dir=" + t.TempDir(), "--window-size=1200,2000"}
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	if out, err := exec.CommandContext(ctx, chromium, append(base, "--screenshot="+shot, "file://"+htmlFile)...).CombinedOutput(); err != nil {
		t.Fatalf("chromium screenshot: %v\n%s", err, out)
	}
	png, err := os.ReadFile(shot)
	if err != nil {
		t.Fatalf("no screenshot: %v", err)
	}
	// A blank 1200x2000 PNG compresses to a few KB; a rendered report with
	// text and charts is far larger.
	if len(png) < 30000 || !bytes.HasPrefix(png, []byte("\x89PNG")) {
		t.Fatalf("screenshot %s looks blank (%d bytes)", shot, len(png))
	}
	dom, err := exec.CommandContext(ctx, chromium, append(base, "--dump-dom", "file://"+htmlFile)...).Output()
	if err != nil {
		t.Fatalf("chromium --dump-dom: %v", err)
	}
	for _, id := range []string{`id="chart-hours"`, `id="chart-reasons"`, `id="chart-subnets"`} {
		if !bytes.Contains(dom, []byte(id)) {
			t.Errorf("rendered DOM lacks %s", id)
		}
	}
	if n := bytes.Count(dom, []byte(`class="bar"`)); n < 24*5 {
		t.Errorf("only %d chart bars in the rendered DOM", n)
	}
	if !bytes.Contains(dom, []byte("203.0.113.0/24")) {
		t.Error("top attacking subnet not shown")
	}
	t.Logf("screenshot: %s (%d bytes)", shot, len(png))
}

// smtpSink is a minimal SMTP server (RFC 5321 subset) that records one
// message, for the --mail-to test.
func smtpSink(t *testing.T) (addr string, got chan string) { return smtpSinkTLS(t, false) }

// smtpSinkTLS optionally advertises STARTTLS (and fails the session if the
// client uses it).
func smtpSinkTLS(t *testing.T, starttls bool) (addr string, got chan string) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	got = make(chan string, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(time.Minute))
		r := bufio.NewReader(c)
		w := func(s string) { io.WriteString(c, s+"\r\n") }
		w("220 sink ESMTP")
		var env []string
		for {
			line, err := r.ReadString('\n')
			if err != nil {
				return
			}
			cmd := strings.ToUpper(strings.TrimSpace(line))
			switch {
			case strings.HasPrefix(cmd, "EHLO"):
				w("250-sink")
				if starttls {
					w("250-STARTTLS")
				}
				w("250 8BITMIME")
			case strings.HasPrefix(cmd, "MAIL FROM:"), strings.HasPrefix(cmd, "RCPT TO:"):
				env = append(env, strings.TrimSpace(line))
				w("250 ok")
			case cmd == "DATA":
				w("354 go")
				var b strings.Builder
				for {
					l, err := r.ReadString('\n')
					if err != nil {
						return
					}
					if l == ".\r\n" {
						break
					}
					b.WriteString(strings.TrimPrefix(l, "."))
				}
				got <- strings.Join(env, "\n") + "\n\n" + b.String()
				w("250 queued")
			case cmd == "QUIT":
				w("221 bye")
				return
			default:
				w("500 what")
			}
		}
	}()
	return ln.Addr().String(), got
}

func TestMailMultipart(t *testing.T) {
	addr, got := smtpSink(t)
	s := analyzeFixture(t, DefaultOptions())
	var text, page bytes.Buffer
	s.WriteText(&text, nil)
	s.WriteHTML(&page, text.String())
	m := &Mail{Server: addr, From: "relayguard@mx1.test", To: []string{"admin@mx1.test"}, Subject: "Mail report",
		Text: text.String(), HTML: page.String()}
	if err := m.Send(context.Background()); err != nil {
		t.Fatal(err)
	}
	raw := <-got
	envelope, data, _ := strings.Cut(raw, "\n\n")
	if !strings.Contains(envelope, "MAIL FROM:<relayguard@mx1.test>") || !strings.Contains(envelope, "RCPT TO:<admin@mx1.test>") {
		t.Errorf("envelope %q", envelope)
	}
	msg, err := mail.ReadMessage(strings.NewReader(data))
	if err != nil {
		t.Fatal(err)
	}
	if ids, err := msg.Header.AddressList("Message-Id"); err != nil || len(ids) != 1 || !strings.HasSuffix(ids[0].Address, "@mx1.test") {
		t.Errorf("Message-ID %q: %v, want one on the sender's domain", msg.Header.Get("Message-Id"), err)
	}
	mt, params, err := mime.ParseMediaType(msg.Header.Get("Content-Type"))
	if err != nil || mt != "multipart/alternative" {
		t.Fatalf("content type %q %v", mt, err)
	}
	mr := multipart.NewReader(msg.Body, params["boundary"])
	var types []string
	for {
		p, err := mr.NextPart() // decodes quoted-printable
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(p)
		ct := p.Header.Get("Content-Type")
		types = append(types, ct)
		switch {
		case strings.HasPrefix(ct, "text/plain"):
			if string(body) != strings.ReplaceAll(text.String(), "\n", "\r\n") {
				t.Error("text part differs from the text report")
			}
		case strings.HasPrefix(ct, "text/html"):
			if !bytes.Contains(body, []byte(`id="chart-hours"`)) {
				t.Error("HTML part lacks the charts")
			}
		}
	}
	if len(types) != 2 {
		t.Fatalf("parts %v", types)
	}
}

// A local server's STARTTLS (usually with a self-signed certificate) is not
// used over loopback.
func TestMailLoopbackSkipsSTARTTLS(t *testing.T) {
	addr, got := smtpSinkTLS(t, true)
	m := &Mail{Server: addr, From: "a@b.test", To: []string{"c@d.test"}, Subject: "s", Text: "t"}
	if err := m.Send(context.Background()); err != nil {
		t.Fatal(err)
	}
	if raw := <-got; !strings.Contains(raw, "text/plain") {
		t.Errorf("plain text mail expected:\n%s", raw)
	}
}

func TestMailErrorNamesServer(t *testing.T) {
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	addr := ln.Addr().String()
	ln.Close()
	err := (&Mail{Server: addr, From: "a@b", To: []string{"c@d"}}).Send(context.Background())
	if err == nil || !strings.Contains(err.Error(), addr) {
		t.Fatalf("error %v does not name %s", err, addr)
	}
}

// Log content is data: it is escaped everywhere in the HTML report.
func TestHTMLEscapesLogContent(t *testing.T) {
	in := `Nov 22 11:00:00 mx1 relayguard[1]: time=x level=INFO msg=rejected rule="<script>alert(1)</script>" client=192.0.2.1
Nov 22 11:00:01 mx1 postfix/smtpd[2]: NOQUEUE: reject: RCPT from unknown[192.0.2.2]: 554 5.7.1 <a@b>: Relay access denied; from=<x"><img src=x onerror=alert(1)>@e> to=<a@<b>.example> proto=ESMTP helo=<x>
`
	a := NewAnalyzer(DefaultOptions())
	a.ReadLines(strings.NewReader(in), fixtureParser())
	s := a.Summary()
	var text, page bytes.Buffer
	s.WriteText(&text, nil)
	if err := s.WriteHTML(&page, text.String()); err != nil {
		t.Fatal(err)
	}
	for _, bad := range []string{"<script>alert", "<img src=x", "<b>.example"} {
		if strings.Contains(page.String(), bad) {
			t.Errorf("HTML report contains unescaped %q", bad)
		}
	}
	if !strings.Contains(page.String(), "&lt;script&gt;alert(1)&lt;/script&gt;") {
		t.Error("the rule name is not shown (escaped)")
	}
}

// Long chart labels are shortened by characters: a UTF-8 reason (SMTPUTF8
// addresses, localised server replies) never becomes invalid UTF-8.
func TestHTMLChartLabelsStayUTF8(t *testing.T) {
	label := strings.Repeat("é", 60)
	svg := string(barChart("c", "t", []bar{{label, 3}}, "#000"))
	if !utf8.ValidString(svg) {
		t.Fatalf("chart is not valid UTF-8: %q", svg)
	}
	if want := strings.Repeat("é", 37) + "..."; !strings.Contains(svg, want) {
		t.Errorf("label not shortened to 37 characters and an ellipsis: %s", svg)
	}
}

// The HTML report fetches nothing: no element that loads a resource, no
// attribute with a URL, no CSS url() or @import, no script — whatever the
// log lines contain (URLs in reject texts stay text). Checked on the parsed
// document, with --verbose-msg-detail so that the reject texts keep their
// https:// links.
func TestHTMLSelfContained(t *testing.T) {
	o := DefaultOptions()
	o.VerboseMsgDetail = true
	s := analyzeFixture(t, o)
	var text, page bytes.Buffer
	s.WriteText(&text, nil)
	if err := s.WriteHTML(&page, text.String()); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(page.String(), "https://") {
		t.Fatal("fixture has no URL in its text: the test would prove nothing")
	}
	doc, err := html.Parse(bytes.NewReader(page.Bytes()))
	if err != nil {
		t.Fatal(err)
	}
	var walk func(n *html.Node)
	walk = func(n *html.Node) {
		if n.Type == html.ElementNode {
			switch n.Data {
			case "script", "link", "img", "iframe", "object", "embed", "image", "use", "video", "audio", "source", "base", "foreignobject":
				t.Errorf("HTML report has a <%s> element", n.Data)
			case "style":
				if c := n.FirstChild; c != nil && (strings.Contains(c.Data, "url(") || strings.Contains(c.Data, "@import")) {
					t.Errorf("stylesheet loads something: %q", c.Data)
				}
			}
			for _, a := range n.Attr {
				k := strings.ToLower(a.Key)
				switch {
				case k == "xmlns" && n.Data == "svg" && a.Val == "http://www.w3.org/2000/svg":
				case k == "src" || k == "href" || k == "srcset" || k == "action" || k == "poster" || k == "background" || strings.HasPrefix(k, "on"):
					t.Errorf("<%s %s=%q>", n.Data, a.Key, a.Val)
				case strings.Contains(a.Val, "://") || strings.Contains(a.Val, "url("):
					t.Errorf("<%s %s=%q> holds a URL", n.Data, a.Key, a.Val)
				}
			}
		}
		for c := n.FirstChild; c != nil; c = c.NextSibling {
			walk(c)
		}
	}
	walk(doc)
}
