package report

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/hex"
	"fmt"
	"mime"
	"mime/multipart"
	"mime/quotedprintable"
	"net"
	"net/mail"
	"net/smtp"
	"net/textproto"
	"strings"
	"time"
)

// Mail is a report to send.
type Mail struct {
	Server   string // host:port
	From     string
	To       []string
	Subject  string
	Text     string
	HTML     string // "" sends text/plain only
	User     string // SMTP AUTH PLAIN user ("" for none)
	Password string
	Date     time.Time
}

// Build returns the RFC 5322 message: text/plain, or multipart/alternative
// (RFC 2046 section 5.1.4) with the text first and the HTML last, both
// quoted-printable.
func (m *Mail) Build() ([]byte, error) {
	var b bytes.Buffer
	date := m.Date
	if date.IsZero() {
		date = time.Now()
	}
	from := m.From
	if a, err := mail.ParseAddress(from); err == nil {
		from = a.String() // a non-ASCII display name is RFC 2047-encoded
	}
	fmt.Fprintf(&b, "From: %s\r\n", from)
	fmt.Fprintf(&b, "To: %s\r\n", strings.Join(m.To, ", "))
	fmt.Fprintf(&b, "Subject: %s\r\n", mime.QEncoding.Encode("utf-8", m.Subject))
	fmt.Fprintf(&b, "Date: %s\r\n", date.Format(time.RFC1123Z))
	fmt.Fprintf(&b, "Message-ID: %s\r\n", messageID(envelopeAddr(m.From), date))
	fmt.Fprintf(&b, "Auto-Submitted: auto-generated\r\n")
	fmt.Fprintf(&b, "MIME-Version: 1.0\r\n")
	part := func(w *bytes.Buffer, body string) error {
		qp := quotedprintable.NewWriter(w)
		if _, err := qp.Write([]byte(strings.ReplaceAll(body, "\n", "\r\n"))); err != nil {
			return err
		}
		return qp.Close()
	}
	if m.HTML == "" {
		b.WriteString("Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n")
		if err := part(&b, m.Text); err != nil {
			return nil, err
		}
		return b.Bytes(), nil
	}
	var body bytes.Buffer
	mw := multipart.NewWriter(&body)
	fmt.Fprintf(&b, "Content-Type: multipart/alternative; boundary=%q\r\n\r\n", mw.Boundary())
	for _, p := range []struct{ typ, text string }{{"text/plain", m.Text}, {"text/html", m.HTML}} {
		w, err := mw.CreatePart(textproto.MIMEHeader{
			"Content-Type":              {p.typ + "; charset=utf-8"},
			"Content-Transfer-Encoding": {"quoted-printable"},
		})
		if err != nil {
			return nil, err
		}
		var pb bytes.Buffer
		if err := part(&pb, p.text); err != nil {
			return nil, err
		}
		if _, err := w.Write(pb.Bytes()); err != nil {
			return nil, err
		}
	}
	if err := mw.Close(); err != nil {
		return nil, err
	}
	b.Write(body.Bytes())
	return b.Bytes(), nil
}

// Send delivers the report through m.Server with net/smtp, using STARTTLS
// (RFC 3207) when a non-loopback server offers it.
func (m *Mail) Send(ctx context.Context) error {
	msg, err := m.Build()
	if err != nil {
		return err
	}
	host, _, err := net.SplitHostPort(m.Server)
	if err != nil {
		return fmt.Errorf("mail: smtp server %q: %w", m.Server, err)
	}
	var d net.Dialer
	conn, err := d.DialContext(ctx, "tcp", m.Server)
	if err != nil {
		return fmt.Errorf("mail: %w", err)
	}
	if dl, ok := ctx.Deadline(); ok {
		conn.SetDeadline(dl)
	} else {
		conn.SetDeadline(time.Now().Add(2 * time.Minute))
	}
	c, err := smtp.NewClient(conn, host)
	if err != nil {
		conn.Close()
		return fmt.Errorf("mail: %s: %w", m.Server, err)
	}
	defer c.Close()
	// Over loopback (the default, a local Postfix) TLS adds nothing, and
	// local servers usually present a self-signed certificate, so STARTTLS
	// is used only towards other hosts, where the certificate is verified.
	if ok, _ := c.Extension("STARTTLS"); ok && !isLoopback(host) {
		if err := c.StartTLS(&tls.Config{ServerName: host}); err != nil {
			return fmt.Errorf("mail: %s: STARTTLS: %w", m.Server, err)
		}
	}
	if m.User != "" {
		if err := c.Auth(smtp.PlainAuth("", m.User, m.Password, host)); err != nil {
			return fmt.Errorf("mail: %s: AUTH: %w", m.Server, err)
		}
	}
	from := envelopeAddr(m.From)
	if err := c.Mail(from); err != nil {
		return fmt.Errorf("mail: %s: MAIL FROM:<%s>: %w", m.Server, from, err)
	}
	for _, to := range m.To {
		to = envelopeAddr(to)
		if err := c.Rcpt(to); err != nil {
			return fmt.Errorf("mail: %s: RCPT TO:<%s>: %w", m.Server, to, err)
		}
	}
	w, err := c.Data()
	if err != nil {
		return fmt.Errorf("mail: %s: DATA: %w", m.Server, err)
	}
	if _, err := w.Write(msg); err != nil {
		return fmt.Errorf("mail: %s: %w", m.Server, err)
	}
	if err := w.Close(); err != nil {
		return fmt.Errorf("mail: %s: end of data: %w", m.Server, err)
	}
	return c.Quit()
}

// messageID makes a unique Message-ID (RFC 5322 section 3.6.4) on the
// sender's domain: not every relay adds a missing one.
func messageID(from string, t time.Time) string {
	dom := "localhost"
	if i := strings.LastIndexByte(from, '@'); i >= 0 && i+1 < len(from) {
		dom = from[i+1:]
	}
	var r [8]byte
	rand.Read(r[:])
	return fmt.Sprintf("<relayguard-report.%d.%s@%s>", t.Unix(), hex.EncodeToString(r[:]), dom)
}

// envelopeAddr is the bare address of a header address such as
// "Reports <r@example.org>" (RFC 5322 section 3.4): MAIL FROM and RCPT TO
// take only the addr-spec (RFC 5321 section 4.1.2).
func envelopeAddr(s string) string {
	if a, err := mail.ParseAddress(s); err == nil {
		return a.Address
	}
	return s
}

// ParseRecipients parses a comma-separated list of addresses (--mail-to),
// each with or without a display name. An error names the bad entry.
func ParseRecipients(list string) ([]string, error) {
	var out []string
	for _, a := range strings.Split(list, ",") {
		a = strings.TrimSpace(a)
		if a == "" {
			continue
		}
		p, err := mail.ParseAddress(a)
		if err != nil {
			return nil, fmt.Errorf("%q: %w", a, err)
		}
		out = append(out, p.String())
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("%q: no address", list)
	}
	return out, nil
}

func isLoopback(host string) bool {
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}
