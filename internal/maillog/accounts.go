package maillog

import (
	"context"
	"log/slog"
	"net/netip"
)

// Records of issue 11: the milter's decisions (and, with the compromise
// detection, the accounts' suspensions).
const (
	KindMilter             Kind = "milter decision"
	KindAccountSignal      Kind = "account compromise signal"
	KindAccountSuspended   Kind = "account suspended"
	KindAccountUnsuspended Kind = "account unsuspended"
)

// Milter actions.
const (
	MilterAccept     = "accept"
	MilterQuarantine = "quarantine" // Postfix's hold queue
	MilterTempfail   = "tempfail"
	MilterReject     = "reject"
)

// MilterDecision is what `relayguard milter` decided about one message.
type MilterDecision struct {
	ID     string     // Postfix queue id
	User   string     // the SASL login, or the local user's name
	UID    int        // the local submitter's uid; -1 for SMTP
	Client netip.Addr // the SMTP client (invalid for sendmail)
	From   string
	Nrcpt  int
	Action string // MilterAccept, MilterQuarantine, MilterTempfail, MilterReject
	Rule   string // what decided: a limit's config key, header_from_binding, account_suspended
	Text   string // the reply or the quarantine reason
}

// Milter: the milter decided about a message. Accepted messages are logged
// at info level (they are the per-actor message counts of the report), the
// others at warning.
func (m *Logger) Milter(ctx context.Context, d MilterDecision) {
	lvl := slog.LevelWarn
	if d.Action == MilterAccept {
		lvl = slog.LevelInfo
	}
	if m == nil || m.l == nil {
		return
	}
	if ctx == nil {
		ctx = context.Background()
	}
	if !m.l.Enabled(ctx, lvl) {
		return // one per message: not even its attributes
	}
	m.log(ctx, lvl, KindMilter, slog.String("id", d.ID), slog.String("user", d.User), slog.Int("uid", d.UID),
		addr("client", d.Client), slog.String("from", d.From), slog.Int("nrcpt", d.Nrcpt),
		slog.String("action", d.Action), slog.String("rule", d.Rule), slog.String("text", d.Text))
}

// AccountSignal: a compromise signal was seen for user (rule: the signal,
// reason: the evidence).
func (m *Logger) AccountSignal(ctx context.Context, user, signal, evidence string) {
	m.log(ctx, slog.LevelWarn, KindAccountSignal, slog.String("user", user), slog.String("rule", signal), slog.String("reason", evidence))
}

// AccountSuspended: user was suspended everywhere by (host and command)
// after signal.
func (m *Logger) AccountSuspended(ctx context.Context, user, signal, evidence, by string) {
	m.log(ctx, slog.LevelWarn, KindAccountSuspended, slog.String("user", user), slog.String("rule", signal),
		slog.String("reason", evidence), slog.String("text", by))
}

// AccountUnsuspended: user's suspension was lifted by (host and command).
func (m *Logger) AccountUnsuspended(ctx context.Context, user, by string) {
	m.log(ctx, slog.LevelInfo, KindAccountUnsuspended, slog.String("user", user), slog.String("text", by))
}
