package accounts

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/relayguard/relayguard/internal/config"
	"github.com/relayguard/relayguard/internal/maillog"
	"github.com/relayguard/relayguard/internal/report"
)

// Alert tells the operator about a taken-over account.
type Alert struct {
	User     string    `json:"account"`
	Signal   string    `json:"signal"`
	Evidence string    `json:"evidence"`
	Action   string    `json:"action"` // "suspended", or "alert only ..."
	Held     int       `json:"held_messages"`
	Host     string    `json:"host"`
	Time     time.Time `json:"time"`
}

// Alerter sends alerts: a mail to the admin address through an SMTP server
// (internal/report.Mail, the same sender as `report --mail-to`) and a JSON
// POST to a webhook. Each is optional; a nil *Alerter sends nothing.
type Alerter struct {
	MailTo, MailFrom string
	SMTP             string // host:port
	WebhookURL       string
	Client           *http.Client // default: 10 s timeout
	Log              *maillog.Logger
}

// Send sends a, logging what was sent and what failed (an alert that cannot
// be sent must not stop the response).
func (al *Alerter) Send(ctx context.Context, a Alert) {
	al.Notify(ctx, fmt.Sprintf("relayguard: account %s %s (%s)", a.User, verb(a), a.Signal), a.text(), a.Time, a,
		"user", a.User, "signal", a.Signal)
}

// Notify sends any alert through the same channel: subject and text as a
// mail to the admin address, payload as the webhook's JSON body. attrs
// name the alert in the log lines about its sending. It is the channel
// other alerts use too (the audit's reputation monitor, which sends again
// what failed). The error joins what could not be sent.
func (al *Alerter) Notify(ctx context.Context, subject, text string, date time.Time, payload any, attrs ...any) error {
	if al == nil {
		return nil
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
	defer cancel()
	var errs []error
	if al.MailTo != "" && al.SMTP != "" {
		m := &report.Mail{Server: al.SMTP, From: al.MailFrom, To: []string{al.MailTo}, Date: date, Subject: subject, Text: text}
		if err := m.Send(ctx); err != nil {
			al.Log.Slog().Error("alert mail not sent", append(attrs, "to", al.MailTo, "server", al.SMTP, "err", err)...)
			errs = append(errs, fmt.Errorf("alert mail to %s via %s: %w", al.MailTo, al.SMTP, err))
		} else {
			al.Log.Slog().Info("alert mail sent", append(attrs, "to", al.MailTo)...)
		}
	}
	if al.WebhookURL != "" {
		if err := al.post(ctx, payload); err != nil {
			al.Log.Slog().Error("alert webhook failed", append(attrs, "err", err)...)
			errs = append(errs, err)
		} else {
			al.Log.Slog().Info("alert webhook sent", attrs...)
		}
	}
	return errors.Join(errs...)
}

func verb(a Alert) string {
	if a.Action == "suspended" {
		return "suspended"
	}
	return "looks taken over"
}

func (a Alert) text() string {
	var b strings.Builder
	fmt.Fprintf(&b, "relayguard on %s saw signs that the account %q is used by someone else.\n\n", a.Host, a.User)
	fmt.Fprintf(&b, "Account:  %s\nSignal:   %s\nEvidence: %s\nAction:   %s\n", a.User, a.Signal, a.Evidence, a.Action)
	if a.Action == "suspended" {
		fmt.Fprintf(&b, "Held:     %d queued message(s) on %s\n", a.Held, a.Host)
		fmt.Fprintf(&b, "\nThe account can no longer send mail on any server sharing relayguard's state, and its\nqueued mail is on hold. When its password has been changed, lift the suspension and\nrelease the held mail with:\n\n    relayguard user unsuspend %s\n", a.User)
	}
	fmt.Fprintf(&b, "\nTime:     %s\n", a.Time.UTC().Format(time.RFC3339))
	return b.String()
}

func (al *Alerter) post(ctx context.Context, payload any) error {
	body, err := json.Marshal(payload)
	if err != nil {
		return fmt.Errorf("webhook: %w", err)
	}
	// The webhook is named by scheme and host only (config.WebhookName):
	// its path and query are commonly its secret, and net/url's and
	// net/http's *url.Error quote the whole URL, so only the error inside
	// it is kept.
	name := config.WebhookName(al.WebhookURL)
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, al.WebhookURL, bytes.NewReader(body))
	if err != nil {
		return fmt.Errorf("webhook %s: %w", name, urlErrorCause(err))
	}
	req.Header.Set("Content-Type", "application/json")
	c := al.Client
	if c == nil {
		c = &http.Client{Timeout: 10 * time.Second}
	}
	resp, err := c.Do(req)
	if err != nil {
		return fmt.Errorf("webhook %s: %w", name, urlErrorCause(err))
	}
	resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		return fmt.Errorf("webhook %s: %s", name, resp.Status)
	}
	return nil
}

// urlErrorCause is the error inside a *url.Error, whose own message quotes
// the URL (a webhook's secret), or err itself.
func urlErrorCause(err error) error {
	var uerr *url.Error
	if errors.As(err, &uerr) {
		return uerr.Err
	}
	return err
}
