// Package maillog owns relayguard's log vocabulary: every record that a
// relayguard component writes about mail, clients, bans and egress goes
// through one typed method of Logger here, and Parse is the one reader of
// those records (used by `watch`, `report` and `egress report`). The writer
// and the reader of a record live together and are tested by a round trip
// (maillog_test.go), as chasquid's maillog does.
//
// # Format
//
// relayguard writes its own format, not Postfix's wording: log/slog records
// in the text (logfmt) or JSON handler, with a fixed message per Kind and
// fixed keys, e.g.
//
//	time=2026-03-01T10:00:00.000+01:00 level=WARN msg="auth failed" cid=3f2a client=192.0.2.7 listener=submission mechanism=PLAIN user=bob reason="invalid credentials"
//
// The repository ships a fail2ban filter (dist/fail2ban/filter.d/relayguard.conf)
// and a CrowdSec parser (dist/crowdsec/) for this format, tested against the
// real fail2ban-regex. A record may reach a file directly (stderr
// redirected), through syslog ("Mar  1 10:00:00 host relayguard[42]: time=…")
// or through the journal (MESSAGE field); Parse reads all three.
//
// # Which writer for which record
//
// SMTP sessions (internal/smtpd): Connected, Disconnected, AuthOK,
// AuthFailed, Accepted, Rejected (a policy or protocol rule refused the
// command), RelayDenied (the relay decision refused a recipient),
// LimitReached (any configured limit bit; the key names the config key),
// NonSMTP, LostConnection, TLSFailed. Pass the connection id as CID.
//
// Send limits (internal/ratelimit, for every front door): SendLimitReached.
//
// Queue and delivery (internal/queue): Delivered, Deferred, Bounced
// (permanent failure or queue lifetime expired: Reason says which), Held,
// DSNQueued.
//
// Guard (internal/guard, `relayguard ban`): Banned, Unbanned.
//
// Policy service (internal/policy): PolicyVerdict.
//
// Egress (internal/egress): EgressBlocked, EgressAlert.
//
// Accounts (internal/accounts, the milter): Milter, AccountSignal,
// AccountSuspended, AccountUnsuspended.
//
// Console (internal/console): logins are AuthOK/AuthFailed with listener
// "console"; ConsoleAction records what an operator did, and who.
package maillog

import (
	"context"
	"log/slog"
	"net/netip"
	"strconv"
	"strings"
	"time"
)

// Kind is the message of a record: the fixed text after msg=.
type Kind string

// The vocabulary. The strings are the log format: changing one is a
// format change (the fail2ban filter and CrowdSec parser read them).
const (
	KindConnected      Kind = "connection"
	KindDisconnected   Kind = "connection closed"
	KindAuthOK         Kind = "auth ok"
	KindAuthFailed     Kind = "auth failed"
	KindAccepted       Kind = "message accepted"
	KindRejected       Kind = "rejected"
	KindRelayDenied    Kind = "relay access denied"
	KindLimitReached   Kind = "limit reached"
	KindNonSMTP        Kind = "non-SMTP command"
	KindLostConnection Kind = "lost connection"
	KindTLSFailed      Kind = "TLS handshake failed"
	KindDelivered      Kind = "delivered"
	KindDeferred       Kind = "deferred"
	KindBounced        Kind = "bounced"
	KindHeld           Kind = "held"
	KindDSNQueued      Kind = "delivery status notification queued"
	KindBanned         Kind = "banned"
	KindUnbanned       Kind = "unbanned"
	KindPolicyVerdict  Kind = "policy verdict"
	KindPolicyWarn     Kind = "policy warn"
	KindEgressBlocked  Kind = "egress blocked"
	KindEgressAlert    Kind = "egress ALERT: a local user keeps trying to send mail directly"
)

// Kinds lists every Kind (the round-trip test checks each has a case).
var Kinds = []Kind{
	KindConnected, KindDisconnected, KindAuthOK, KindAuthFailed, KindAccepted,
	KindRejected, KindRelayDenied, KindLimitReached, KindNonSMTP, KindLostConnection,
	KindTLSFailed, KindDelivered, KindDeferred, KindBounced, KindHeld, KindDSNQueued,
	KindBanned, KindUnbanned, KindPolicyVerdict, KindPolicyWarn, KindEgressBlocked, KindEgressAlert,
	KindMilter, KindAccountSignal, KindAccountSuspended, KindAccountUnsuspended,
	KindConsoleAction,
}

var kindByMsg = func() map[string]Kind {
	m := make(map[string]Kind, len(Kinds))
	for _, k := range Kinds {
		m[string(k)] = k
	}
	return m
}()

// Record is one parsed record. Only the fields its Kind writes are set.
// The comment after each field is its key in the log.
type Record struct {
	Time  time.Time  // time
	Level slog.Level // level
	Kind  Kind       // msg

	CID      string     // cid: connection id
	Client   netip.Addr // client
	Listener string     // listener (serve) or service
	Helo     string     // helo
	User     string     // user: SASL login, account, or local user name
	Mech     string     // mechanism
	Reason   string     // reason
	Rule     string     // rule: what decided a rejection
	Code     string     // code: "554 5.7.1"
	Rcpt     string     // rcpt
	Text     string     // text: the reply text or command
	After    string     // after: the stage a connection was lost in
	Err      string     // err

	ID      string        // id: queue id
	From    string        // from
	Nrcpt   int           // nrcpt
	Size    int64         // size
	Relay   string        // relay: host that took a delivery
	Attempt int           // attempt
	Reply   string        // reply: the remote reply or local error
	RetryIn time.Duration // retry_in
	DSNID   string        // dsn_id

	Limit string // limit: the config key of the limit
	Value string // value: its configured value

	Prefix netip.Prefix // prefix: a banned address or network
	Until  time.Time    // until
	Count  int          // count: nth ban of the prefix; attempts (egress alert)

	TLS       bool          // tls
	Messages  int           // messages
	BadCmds   int           // bad_commands
	AuthFails int           // auth_failures
	Duration  time.Duration // duration

	Stage  string // stage (policy)
	Action string // action (policy)

	UID     int            // uid; -1 when unknown
	Dst     netip.AddrPort // dst
	SrcPort int            // src_port
	PID     int            // pid
	Exe     string         // exe
	Cmdline string         // cmdline
	Cwd     string         // cwd
	PPID    int            // ppid
	Parent  string         // parent_cmdline
}

// Logger writes records. The zero value and a nil *Logger discard.
type Logger struct {
	l *slog.Logger
}

// New returns a Logger writing through l (nil: discard).
func New(l *slog.Logger) *Logger { return &Logger{l: l} }

// Slog returns the underlying logger (for records outside the vocabulary:
// operational errors, start-up notices).
func (m *Logger) Slog() *slog.Logger {
	if m == nil || m.l == nil {
		return slog.New(slog.DiscardHandler)
	}
	return m.l
}

func (m *Logger) log(ctx context.Context, lvl slog.Level, k Kind, attrs ...slog.Attr) {
	if m == nil || m.l == nil {
		return
	}
	if ctx == nil {
		ctx = context.Background()
	}
	m.l.LogAttrs(ctx, lvl, string(k), attrs...)
}

func addr(key string, a netip.Addr) slog.Attr { return slog.String(key, a.String()) }

// cidAttrs starts a session record: cid (when set), client, listener.
func cidAttrs(cid string, client netip.Addr, listener string, more int) []slog.Attr {
	a := make([]slog.Attr, 0, 3+more)
	if cid != "" {
		a = append(a, slog.String("cid", cid))
	}
	return append(a, addr("client", client), slog.String("listener", listener))
}

// Conn identifies the SMTP session a record belongs to.
type Conn struct {
	CID      string
	Client   netip.Addr
	Listener string
}

func (c Conn) attrs(more int) []slog.Attr { return cidAttrs(c.CID, c.Client, c.Listener, more) }

// Connected: a client connected. trusted says it is in mynetworks.
func (m *Logger) Connected(ctx context.Context, c Conn, trusted bool) {
	m.log(ctx, slog.LevelInfo, KindConnected, append(c.attrs(1), slog.Bool("trusted", trusted))...)
}

// Session is the summary written when a session ends.
type Session struct {
	Helo      string
	TLS       bool
	User      string
	Messages  int
	BadCmds   int
	AuthFails int
	Duration  time.Duration
}

// Disconnected: the session ended.
func (m *Logger) Disconnected(ctx context.Context, c Conn, s Session) {
	m.log(ctx, slog.LevelInfo, KindDisconnected, append(c.attrs(7),
		slog.String("helo", s.Helo), slog.Bool("tls", s.TLS), slog.String("user", s.User),
		slog.Int("messages", s.Messages), slog.Int("bad_commands", s.BadCmds),
		slog.Int("auth_failures", s.AuthFails), slog.String("duration", s.Duration.Round(time.Millisecond).String()))...)
}

// AuthOK: SASL authentication succeeded.
func (m *Logger) AuthOK(ctx context.Context, c Conn, mechanism, user string) {
	m.log(ctx, slog.LevelInfo, KindAuthOK, append(c.attrs(2),
		slog.String("mechanism", mechanism), slog.String("user", user))...)
}

// AuthFailed: SASL authentication failed; user is the name tried (may be
// empty), reason why (never the password).
func (m *Logger) AuthFailed(ctx context.Context, c Conn, mechanism, user, reason string) {
	m.log(ctx, slog.LevelWarn, KindAuthFailed, append(c.attrs(3),
		slog.String("mechanism", mechanism), slog.String("user", user), slog.String("reason", reason))...)
}

// Message describes a message accepted into the queue.
type Message struct {
	ID    string
	User  string // SASL login, "" if none
	From  string
	Nrcpt int
	Size  int64
}

// Accepted: a message was spooled durably and acknowledged (250 after DATA).
func (m *Logger) Accepted(ctx context.Context, c Conn, msg Message) {
	m.log(ctx, slog.LevelInfo, KindAccepted, append(c.attrs(5),
		slog.String("id", msg.ID), slog.String("user", msg.User), slog.String("from", msg.From),
		slog.Int("nrcpt", msg.Nrcpt), slog.Int64("size", msg.Size))...)
}

// Refusal is one refused command.
type Refusal struct {
	Rule string // what decided: a policy rule, "reject_unauth_destination", "bare_newline"…
	Code string // reply code and enhanced code: "554 5.7.1"
	Rcpt string // the recipient, when refused at RCPT
	Text string // the reply text
}

func (r Refusal) attrs(c Conn) []slog.Attr {
	return append(c.attrs(4), slog.String("rule", r.Rule), slog.String("code", r.Code),
		slog.String("rcpt", r.Rcpt), slog.String("text", r.Text))
}

// Rejected: a rule refused a command.
func (m *Logger) Rejected(ctx context.Context, c Conn, r Refusal) {
	m.log(ctx, slog.LevelInfo, KindRejected, r.attrs(c)...)
}

// RelayDenied: the relay decision refused a recipient (Postfix's
// reject_unauth_destination).
func (m *Logger) RelayDenied(ctx context.Context, c Conn, r Refusal) {
	m.log(ctx, slog.LevelInfo, KindRelayDenied, r.attrs(c)...)
}

// LimitReached: a limit bit. key is the config key ("limits.max_recipients"),
// value its setting; c.Client may be the zero address for global limits.
func (m *Logger) LimitReached(ctx context.Context, c Conn, key string, value any) {
	m.log(ctx, slog.LevelWarn, KindLimitReached, append(c.attrs(2),
		slog.String("limit", key), slog.String("value", toString(value)))...)
}

// SendLimitReached: a send limit (delivery.rate_limits.*) bit for a
// sender, whichever front door asked (serve, the policy service, the
// milter): key is the config key, value its setting, user and from who
// sent. c.Client is the zero address for a local program (milter), and is
// then not written.
func (m *Logger) SendLimitReached(ctx context.Context, c Conn, key string, value any, user, from string) {
	a := make([]slog.Attr, 0, 6)
	if c.Client.IsValid() {
		a = append(a, addr("client", c.Client))
	}
	if c.Listener != "" {
		a = append(a, slog.String("listener", c.Listener))
	}
	m.log(ctx, slog.LevelWarn, KindLimitReached, append(a, slog.String("limit", key), slog.String("value", toString(value)),
		slog.String("user", user), slog.String("from", from))...)
}

// NonSMTP: the client sent something that is not SMTP (e.g. HTTP).
func (m *Logger) NonSMTP(ctx context.Context, c Conn, command string) {
	m.log(ctx, slog.LevelWarn, KindNonSMTP, append(c.attrs(1), slog.String("text", command))...)
}

// LostConnection: the client went away during stage after ("AUTH", "DATA"…).
func (m *Logger) LostConnection(ctx context.Context, c Conn, after string) {
	m.log(ctx, slog.LevelInfo, KindLostConnection, append(c.attrs(1), slog.String("after", after))...)
}

// TLSFailed: a TLS handshake failed.
func (m *Logger) TLSFailed(ctx context.Context, c Conn, err error) {
	m.log(ctx, slog.LevelInfo, KindTLSFailed, append(c.attrs(1), slog.String("err", errString(err)))...)
}

// Delivery is one recipient's delivery attempt.
type Delivery struct {
	ID      string
	Rcpt    string
	Attempt int
	Reply   string // the remote reply or the local error
	Relay   string // Delivered: the host that took it
	RetryIn time.Duration
	Reason  string // Bounced: "failed permanently" or "expired"
}

func (d Delivery) attrs(more int) []slog.Attr {
	a := make([]slog.Attr, 0, 4+more)
	return append(a, slog.String("id", d.ID), slog.String("rcpt", d.Rcpt),
		slog.Int("attempt", d.Attempt), slog.String("reply", d.Reply))
}

// Delivered: a recipient's delivery succeeded.
func (m *Logger) Delivered(ctx context.Context, d Delivery) {
	m.log(ctx, slog.LevelInfo, KindDelivered, append(d.attrs(1), slog.String("relay", d.Relay))...)
}

// Deferred: a recipient's delivery failed temporarily; it is retried.
func (m *Logger) Deferred(ctx context.Context, d Delivery) {
	m.log(ctx, slog.LevelInfo, KindDeferred, append(d.attrs(1), slog.String("retry_in", d.RetryIn.String()))...)
}

// Bounced: a recipient failed for good (permanent error, or expired).
func (m *Logger) Bounced(ctx context.Context, d Delivery) {
	m.log(ctx, slog.LevelWarn, KindBounced, append(d.attrs(1), slog.String("reason", d.Reason))...)
}

// Held: a message was put on hold (user, reason: why).
func (m *Logger) Held(ctx context.Context, id, user, reason string) {
	m.log(ctx, slog.LevelWarn, KindHeld, slog.String("id", id), slog.String("user", user), slog.String("reason", reason))
}

// DSNQueued: a delivery status notification for message id was queued as
// dsnID to to, about nrcpt recipients; size is the notice's bytes.
func (m *Logger) DSNQueued(ctx context.Context, id, dsnID, to string, nrcpt int, size int64) {
	m.log(ctx, slog.LevelInfo, KindDSNQueued, slog.String("id", id), slog.String("dsn_id", dsnID),
		slog.String("rcpt", to), slog.Int("nrcpt", nrcpt), slog.Int64("size", size))
}

// Banned: prefix is banned until until (zero: permanent, written
// until=permanent, not the zero time's 0001-01-01T00:00:00Z, which reads as
// long past; the reader takes both as no end), its count-th ban, for reason.
func (m *Logger) Banned(ctx context.Context, prefix netip.Prefix, until time.Time, count int, reason string) {
	end := "permanent"
	if !until.IsZero() {
		end = until.Format(time.RFC3339)
	}
	m.log(ctx, slog.LevelWarn, KindBanned, slog.String("prefix", prefix.String()),
		slog.String("until", end), slog.Int("count", count), slog.String("reason", reason))
}

// Unbanned: a ban was lifted; reason is "expired" or who lifted it.
func (m *Logger) Unbanned(ctx context.Context, prefix netip.Prefix, reason string) {
	m.log(ctx, slog.LevelInfo, KindUnbanned, slog.String("prefix", prefix.String()), slog.String("reason", reason))
}

// Verdict is a policy decision as logged.
type Verdict struct {
	Rule, Action, Code, Text, Stage string
	Client                          netip.Addr
	Helo, From, Rcpt, User, QueueID string
}

// PolicyVerdict: the policy engine decided (warn: a warn_if_reject rule
// would have refused). Permits are logged at debug level.
func (m *Logger) PolicyVerdict(ctx context.Context, v Verdict, warn bool) {
	lvl, k := VerdictLevel(v.Action, warn), KindPolicyVerdict
	if warn {
		k = KindPolicyWarn
	}
	if m == nil || m.l == nil || !m.l.Enabled(ctx, lvl) {
		return // before the attributes are made: the policy service calls this per decision
	}
	m.log(ctx, lvl, k, slog.String("rule", v.Rule), slog.String("action", v.Action),
		slog.String("code", v.Code), slog.String("text", v.Text), slog.String("stage", v.Stage),
		addr("client", v.Client), slog.String("helo", v.Helo), slog.String("from", v.From),
		slog.String("rcpt", v.Rcpt), slog.String("user", v.User), slog.String("id", v.QueueID))
}

// VerdictLevel is the level PolicyVerdict logs a verdict of action at:
// warn for a warn_if_reject rule, debug for a permit or a DUNNO, info
// for the others. A caller asks its logger whether that level is on
// before it gathers a Verdict.
func VerdictLevel(action string, warn bool) slog.Level {
	switch {
	case warn:
		return slog.LevelWarn
	case strings.EqualFold(action, "permit") || strings.EqualFold(action, "dunno"):
		return slog.LevelDebug
	}
	return slog.LevelInfo
}

// Egress is a blocked outbound connection attempt.
type Egress struct {
	UID     int // -1: unknown
	User    string
	Dst     netip.AddrPort
	SrcPort int
	PID     int // 0: process unknown
	Exe     string
	Cmdline string
	Cwd     string
	PPID    int
	Parent  string // the parent's command line
	Reason  string // why the process is unknown
}

func (e Egress) attrs(more int) []slog.Attr {
	a := make([]slog.Attr, 0, 10+more)
	a = append(a, slog.Int("uid", e.UID), slog.String("user", e.User), slog.String("dst", e.Dst.String()),
		slog.Int("src_port", e.SrcPort))
	if e.PID != 0 {
		a = append(a, slog.Int("pid", e.PID), slog.String("exe", e.Exe), slog.String("cmdline", e.Cmdline),
			slog.String("cwd", e.Cwd), slog.Int("ppid", e.PPID), slog.String("parent_cmdline", e.Parent))
	} else if e.Reason != "" {
		a = append(a, slog.String("reason", e.Reason))
	}
	return a
}

// EgressBlocked: a local program's connection to a remote mail port was dropped.
func (m *Logger) EgressBlocked(ctx context.Context, e Egress) {
	m.log(ctx, slog.LevelWarn, KindEgressBlocked, e.attrs(0)...)
}

// EgressAlert: uid made count attempts within window (the last one is e).
func (m *Logger) EgressAlert(ctx context.Context, e Egress, count int, window time.Duration) {
	m.log(ctx, slog.LevelWarn, KindEgressAlert, append(e.attrs(2), slog.Int("count", count),
		slog.String("duration", window.String()))...)
}

func errString(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}

func toString(v any) string {
	switch v := v.(type) {
	case string:
		return v
	case int:
		return strconv.Itoa(v)
	case int64:
		return strconv.FormatInt(v, 10)
	case interface{ String() string }:
		return v.String()
	default:
		return slog.AnyValue(v).String()
	}
}
