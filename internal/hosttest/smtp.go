package hosttest

import (
	"context"
	"fmt"
	"net/netip"
	"strings"
	"time"

	"github.com/emersion/go-sasl"
	gosmtp "github.com/emersion/go-smtp"
)

// Message is one SMTP submission.
type Message struct {
	User, Password string // AUTH PLAIN when User is not empty
	From           string // envelope sender ("" for the null sender)
	To             []string
	Header         string // header lines (CRLF-terminated); default From/To/Subject
	Body           string
	// Timeout bounds each command (default a minute): a client whose
	// network gets banned mid-session hears nothing more.
	Timeout time.Duration
}

// Submit sends m to addr from source address src of the client
// namespace, with a real SMTP client library. It returns the error of the
// first command that failed (an *gosmtp.SMTPError for an SMTP reply).
func (n *Net) Submit(ctx context.Context, src netip.Addr, addr string, m Message) error {
	conn, err := n.Dial(ctx, src, addr)
	if err != nil {
		return err
	}
	c := gosmtp.NewClient(conn)
	c.CommandTimeout, c.SubmissionTimeout = time.Minute, time.Minute
	if m.Timeout > 0 {
		c.CommandTimeout, c.SubmissionTimeout = m.Timeout, m.Timeout
	}
	defer c.Close()
	if err := c.Hello("client.example.net"); err != nil {
		return fmt.Errorf("EHLO: %w", err)
	}
	if m.User != "" {
		if err := c.Auth(sasl.NewPlainClient("", m.User, m.Password)); err != nil {
			return fmt.Errorf("AUTH: %w", err)
		}
	}
	if err := c.Mail(m.From, nil); err != nil {
		return fmt.Errorf("MAIL: %w", err)
	}
	for _, r := range m.To {
		if err := c.Rcpt(r, nil); err != nil {
			return fmt.Errorf("RCPT %s: %w", r, err)
		}
	}
	w, err := c.Data()
	if err != nil {
		return fmt.Errorf("DATA: %w", err)
	}
	h := m.Header
	if h == "" {
		h = fmt.Sprintf("From: <%s>\r\nTo: %s\r\nSubject: test\r\n", m.From, strings.Join(m.To, ", "))
	}
	body := m.Body
	if body == "" {
		body = "hello\r\n"
	}
	if _, err := fmt.Fprintf(w, "%s\r\n%s", h, body); err != nil {
		return fmt.Errorf("DATA: %w", err)
	}
	if err := w.Close(); err != nil {
		return fmt.Errorf("end of DATA: %w", err)
	}
	return c.Quit()
}
