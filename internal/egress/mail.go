package egress

import (
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"net/smtp"
	"strings"
	"time"
)

// Mailer sends alert mail to the administrator through an SMTP server
// (normally the local MTA, which the lockdown lets through on loopback).
type Mailer struct {
	Addr     string // host:port
	From, To string
	Hostname string // for EHLO and the default sender
}

// Send mails one alert. STARTTLS is used when offered, except on loopback
// where the local MTA's certificate usually does not match any name.
func (m Mailer) Send(ctx context.Context, al Alert) error {
	from := m.From
	if from == "" {
		from = "relayguard@" + m.Hostname
	}
	d := net.Dialer{Timeout: 30 * time.Second}
	conn, err := d.DialContext(ctx, "tcp", m.Addr)
	if err != nil {
		return fmt.Errorf("egress: alert mail to %s via %s: %w", m.To, m.Addr, err)
	}
	_ = conn.SetDeadline(time.Now().Add(2 * time.Minute))
	host, _, _ := net.SplitHostPort(m.Addr)
	c, err := smtp.NewClient(conn, host)
	if err != nil {
		conn.Close()
		return fmt.Errorf("egress: alert mail via %s: %w", m.Addr, err)
	}
	defer c.Close()
	if err := c.Hello(m.Hostname); err != nil {
		return fmt.Errorf("egress: alert mail via %s: EHLO: %w", m.Addr, err)
	}
	if ip := net.ParseIP(host); (ip == nil || !ip.IsLoopback()) && host != "localhost" {
		if ok, _ := c.Extension("STARTTLS"); ok {
			if err := c.StartTLS(&tls.Config{ServerName: host}); err != nil {
				return fmt.Errorf("egress: alert mail via %s: STARTTLS: %w", m.Addr, err)
			}
		}
	}
	if err := c.Mail(from); err != nil {
		return fmt.Errorf("egress: alert mail via %s: MAIL FROM:<%s>: %w", m.Addr, from, err)
	}
	if err := c.Rcpt(m.To); err != nil {
		return fmt.Errorf("egress: alert mail via %s: RCPT TO:<%s>: %w", m.Addr, m.To, err)
	}
	w, err := c.Data()
	if err != nil {
		return fmt.Errorf("egress: alert mail via %s: DATA: %w", m.Addr, err)
	}
	if _, err := w.Write([]byte(alertMessage(from, m.To, m.Hostname, al))); err != nil {
		return fmt.Errorf("egress: alert mail via %s: %w", m.Addr, err)
	}
	if err := w.Close(); err != nil {
		return fmt.Errorf("egress: alert mail via %s: end of DATA: %w", m.Addr, err)
	}
	return c.Quit()
}

func alertMessage(from, to, host string, al Alert) string {
	var b strings.Builder
	fmt.Fprintf(&b, "From: %s\r\nTo: %s\r\n", from, to)
	fmt.Fprintf(&b, "Subject: [relayguard] %s: user %s (uid %d) tried to send mail directly %d times\r\n",
		host, al.User, al.UID, al.Count)
	fmt.Fprintf(&b, "Date: %s\r\nMIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n",
		time.Now().Format(time.RFC1123Z))
	fmt.Fprintf(&b, "relayguard egress on %s blocked %d connection attempts to remote SMTP ports\r\n", host, al.Count)
	fmt.Fprintf(&b, "by uid %d (%s) within %s. This is how a compromised script sends spam.\r\n\r\n", al.UID, al.User, al.Window)
	fmt.Fprintf(&b, "Last attempt:\r\n  %s\r\n", al.Last.String())
	return b.String()
}
