// Package milter is relayguard's Sendmail/Postfix milter front door, on
// emersion/go-milter. Postfix asks it about each message:
//
//   - as smtpd_milters, for mail of authenticated clients (macro
//     {auth_authen}): a suspended login is deferred; the envelope sender and
//     the header From: addresses must be addresses the login owns; the send
//     limits of [delivery.rate_limits] apply (recipients at RCPT, the message
//     at end of message), the null sender included;
//   - as non_smtpd_milters, for mail submitted with sendmail: each message
//     is attributed to the local uid Postfix's pickup recorded, and the
//     per-uid limits apply; over a limit the message is quarantined (Postfix's
//     hold queue), never discarded.
//
// Unauthenticated SMTP mail is accepted at MAIL FROM at once: the policy
// service and the restriction lists are the place for it; only with
// Options.EndOfData ([policy] end_of_data_restrictions, e.g. check_dmarc)
// is it read to the end and judged there (endofdata.go).
//
// Every decision is a maillog record (user, uid, queue id, action, rule) and
// an event in the guard's stream, so that the egress report, alerts and
// `relayguard report` name the same actor whether it went through sendmail,
// submission or tried port 25 directly.
package milter

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	stdlog "log"
	"log/slog"
	"net"
	"net/mail"
	"net/netip"
	"os/user"
	"strconv"
	"strings"
	"sync"
	"time"

	gomilter "github.com/emersion/go-milter"

	"github.com/relayguard/relayguard/internal/config"
	"github.com/relayguard/relayguard/internal/event"
	"github.com/relayguard/relayguard/internal/listen"
	"github.com/relayguard/relayguard/internal/maillog"
	"github.com/relayguard/relayguard/internal/ratelimit"
)

// Limiter is the send limiter (internal/ratelimit.Limiter).
type Limiter interface {
	Rcpt(ctx context.Context, s ratelimit.Sender, rcpt string) error
	Message(ctx context.Context, s ratelimit.Sender, nrcpt int) error
	Local(ctx context.Context, s ratelimit.Sender, uid, nrcpt int) error
}

// Owners tells whether a login may use an address as sender.
type Owners interface {
	MayUse(ctx context.Context, login, addr string) (bool, error)
}

// Accounts is the compromise detection and containment
// (internal/accounts): suspended accounts, and what the milter sees of
// each login and local user (its networks, its volume, its queue ids, so
// that a suspension can hold its queued mail).
type Accounts interface {
	Suspended(ctx context.Context, name string) (bool, error)
	// Login: user sent a message from client (once per message).
	Login(ctx context.Context, user string, client netip.Addr)
	// Sent: a message of user was accepted as queue id qid.
	Sent(ctx context.Context, user, qid string)
	// Tie: queue id qid (held) is user's.
	Tie(ctx context.Context, user, qid string)
}

// Options are the milter's collaborators. Limiter is required; the others
// are optional.
type Options struct {
	Config   config.MilterConfig
	Limiter  Limiter
	Owners   Owners
	Accounts Accounts
	Events   event.Sink
	Log      *maillog.Logger
	// LookupUID returns a uid's user name; nil: the system's (os/user).
	LookupUID func(uid int) string
	// EndOfData, when set, judges unauthenticated SMTP clients' messages
	// at end of message (check_dmarc); nil: they are accepted at MAIL FROM.
	EndOfData EndOfData
	// AuthservID is our authserv-id ([policy.dmarc] authserv_id): with
	// EndOfData, the Authentication-Results fields that claim it are
	// deleted from every message judged, whatever the verdict.
	AuthservID string
}

// TimerSlack is the timer slack `relayguard milter` gives its threads
// (package timerslack): the runtime's monitor thread, which polls every
// 20 µs while any goroutine runs, then wakes up to this much less often —
// under Postfix it was a third of the milter's context switches. The
// milter's own timers (the shared write transaction's commit after
// store.CommitEvery) may fire up to this much late.
const TimerSlack = time.Millisecond

// Server answers Postfix's milter connections.
type Server struct {
	o      Options
	exempt map[int]bool
	names  sync.Map // uid -> name

	mu  sync.Mutex
	srv *gomilter.Server
}

// New checks the options and resolves the exempt users to uids. A name
// that is no user of this system is an error naming it.
func New(o Options) (*Server, error) {
	if o.Limiter == nil {
		return nil, errors.New("milter: no send limiter")
	}
	if o.Events == nil {
		o.Events = event.Discard{}
	}
	if o.LookupUID == nil {
		o.LookupUID = func(uid int) string {
			if u, err := user.LookupId(strconv.Itoa(uid)); err == nil {
				return u.Username
			}
			return ""
		}
	}
	if o.Owners != nil {
		o.Owners = newCachedOwners(o.Owners)
	}
	s := &Server{o: o, exempt: map[int]bool{}}
	for _, name := range o.Config.ExemptUsers {
		if uid, err := strconv.Atoi(name); err == nil {
			s.exempt[uid] = true
			continue
		}
		u, err := user.Lookup(name)
		if err != nil {
			return nil, fmt.Errorf("config: milter.exempt_users: %q: %w", name, err)
		}
		uid, _ := strconv.Atoi(u.Uid)
		s.exempt[uid] = true
	}
	return s, nil
}

// Listen opens addr: "unix:/path" for a unix socket (a stale socket file is
// replaced, one with a live server behind it is not) or host:port for TCP.
func Listen(addr string) (net.Listener, error) { return listen.Listen("milter listener", addr) }

// Serve answers milter connections on ln until ctx ends.
func (s *Server) Serve(ctx context.Context, ln net.Listener) error {
	bridgeStdLog(s.o.Log.Slog())
	srv := Negotiation(s.o.Config, s.o.EndOfData != nil)
	srv.NewMilter = func() gomilter.Milter { return &message{s: s, ctx: ctx, uid: -1} }
	s.mu.Lock()
	s.srv = srv
	s.mu.Unlock()
	stop := context.AfterFunc(ctx, func() { srv.Close() })
	defer stop()
	err := srv.Serve(Buffered(ln))
	if ctx.Err() != nil || errors.Is(err, gomilter.ErrServerClosed) {
		return nil
	}
	return fmt.Errorf("milter listener %s: %w", ln.Addr(), err)
}

// bridgeStdLog sends the standard logger's lines into l. go-milter reports
// a connection's errors with it ("Error reading milter command: unexpected
// EOF", a packet longer than 1 MiB, an unknown command, a malformed
// connect): they were stderr lines of their own format, with their own
// timestamp, among the log's, and broke [log] format = "json". Now each is
// a WARN record of the log (go-milter does not say which connection). One
// milter serves per process; the standard logger is the process's.
func bridgeStdLog(l *slog.Logger) {
	stdlog.SetFlags(0)
	stdlog.SetOutput(stdLogWriter{l})
}

type stdLogWriter struct{ l *slog.Logger }

func (w stdLogWriter) Write(p []byte) (int, error) {
	w.l.Warn("milter: go-milter", "err", strings.TrimSpace(string(p)))
	return len(p), nil
}

// protocol is what Postfix is asked to send and to wait for (RFC-less:
// the Sendmail milter protocol, SMFIP_* of libmilter's mfdef.h). Every
// event Postfix need not send, and every reply it need not wait for, is a
// round trip saved per message, on both sides (docs/benchmarks/
// containment.md, round 3):
//   - never needed: HELO (but for check_dmarc's SPF of the null sender),
//     DATA, unknown commands, the end of the header (the From: check and
//     the message's count are made at end of message) and the body (but
//     for check_dmarc);
//   - no reply: the connection (never refused here), each header field,
//     each body chunk, and each recipient when no send limit is counted
//     here (smtp_send_limits = false);
//   - no header fields at all when neither the From: binding nor
//     check_dmarc reads them.
func protocol(c config.MilterConfig, endOfData bool) gomilter.OptProtocol {
	p := gomilter.OptNoData | gomilter.OptNoUnknown | gomilter.OptNoEOH |
		gomilter.OptNoConnReply | gomilter.OptNoHeaderReply
	if endOfData {
		p |= gomilter.OptNoBodyReply
	} else {
		p |= gomilter.OptNoBody | gomilter.OptNoHelo
		if !c.HeaderFromBinding {
			p |= gomilter.OptNoHeaders
		}
	}
	if !c.SMTPSendLimits {
		p |= gomilter.OptNoRcptReply
	}
	return p
}

// Negotiation is what the milter negotiates with Postfix for c (with
// check_dmarc when endOfData): actions, protocol options and macros, in a
// go-milter server without a Milter. bench/milter's no-op milter
// negotiates the same, to measure what any milter costs Postfix.
func Negotiation(c config.MilterConfig, endOfData bool) *gomilter.Server {
	srv := &gomilter.Server{
		Actions:  gomilter.OptQuarantine | gomilter.OptSetSymList,
		Protocol: protocol(c, endOfData),
		SymList:  macros(),
	}
	if endOfData {
		// check_dmarc adds and deletes header fields.
		srv.Actions |= gomilter.OptAddHeader | gomilter.OptChangeHeader
	}
	return srv
}

// macros are the only macros Postfix is asked to send (SMFIF_SETSYMLIST):
// the queue id, the login and the client address at MAIL FROM, the queue
// id at end of message, and none with the other events.
//
// "None" cannot be an empty list: Postfix takes a milter's empty list for
// a stage as "not overridden" and sends that stage's milter_*_macros of
// main.cf instead (milter.c, MILTER_MACRO_EVAL tests the list's first
// character). With the defaults that is five macros per SMTP session
// (milter_connect_macros, "_" formatted for it), {rcpt_addr} {rcpt_host}
// {rcpt_mailer} per recipient (each through smtpd's address resolver) and
// "i" before every header field, each decoded into a new map by
// go-milter. So the stages without macros name one that no MTA defines:
// Postfix looks it up, finds nothing, and sends the stage's macro packet
// empty (it sends one per event whatever the list, even for events the
// milter does not take).
func macros() map[gomilter.Stage][]string {
	none := []string{noMacro}
	return map[gomilter.Stage][]string{
		gomilter.StageConnect:  none,
		gomilter.StageHelo:     none,
		gomilter.StageMailFrom: {"i", "{auth_authen}", "{client_addr}"},
		gomilter.StageRcptTo:   none,
		gomilter.StageData:     none,
		gomilter.StageEOH:      none,
		gomilter.StageEOM:      {"i"},
	}
}

// noMacro is a macro name that neither Postfix nor Sendmail defines (a
// stage's list naming only it asks for no macro; see macros).
const noMacro = "{relayguard_none}"

// Buffered returns ln with each accepted connection read through a
// buffer (bufferedListener).
func Buffered(ln net.Listener) net.Listener { return bufferedListener{ln} }

// bufferedListener reads each milter connection through a buffer:
// go-milter reads a packet's length and then its data, two system calls
// per packet, and Postfix writes a macro packet and its event together
// (and header fields back to back): one read takes them all.
type bufferedListener struct{ net.Listener }

func (l bufferedListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return &bufferedConn{Conn: c, r: bufio.NewReaderSize(c, 8192)}, nil
}

type bufferedConn struct {
	net.Conn
	r *bufio.Reader
}

func (c *bufferedConn) Read(p []byte) (int, error) { return c.r.Read(p) }

func (s *Server) userName(uid int) string {
	if v, ok := s.names.Load(uid); ok {
		return v.(string)
	}
	n := s.o.LookupUID(uid)
	s.names.Store(uid, n)
	return n
}

// message is the state of one message (go-milter makes a new one after
// each message of a connection).
type message struct {
	gomilter.NoOpMilter
	s      *Server
	ctx    context.Context
	client netip.Addr
	login  string
	from   string
	qid    string
	nrcpt  int
	uid    int
	// fromFields are this message's From: fields. (go-milter hands Headers
	// every field of the connection so far, earlier messages' included, and
	// keeps this struct after a reply code: everything per message is
	// reset at MAIL FROM.)
	fromFields []string
	owned      map[string]bool // addresses already checked for this message
	eod        eodState        // an unauthenticated client's message, for EndOfData
}

func reply(code int, enhanced, text string) gomilter.Response {
	return gomilter.NewResponseStr('y', fmt.Sprintf("%d %s %s", code, enhanced, oneLine(text)))
}

func oneLine(s string) string {
	return strings.Map(func(r rune) rune {
		if r == '\r' || r == '\n' {
			return ' '
		}
		return r
	}, s)
}

// Connect remembers the client address of the first message of a
// connection; later ones learn it from the {client_addr} macro.
func (m *message) Connect(_ string, _ string, _ uint16, addr net.IP, _ *gomilter.Modifier) (gomilter.Response, error) {
	if a, ok := netip.AddrFromSlice(addr); ok {
		m.client = a.Unmap()
	}
	return nil, nil // SMFIP_NR_CONN: no reply
}

// MailFrom decides who sends: an authenticated login, a local program
// (queue id already known: Postfix's pickup), or an unauthenticated SMTP
// client (accepted at once).
func (m *message) MailFrom(from string, mod *gomilter.Modifier) (gomilter.Response, error) {
	m.from, m.nrcpt, m.uid, m.fromFields, m.owned = strings.TrimSpace(from), 0, -1, nil, nil
	m.qid = mod.Macros["i"]
	if a, err := netip.ParseAddr(strings.Trim(mod.Macros["{client_addr}"], "[]")); err == nil {
		m.client = a.Unmap()
	}
	m.login = mod.Macros["{auth_authen}"]
	m.eod.reset()
	if m.login == "" {
		if mod.Macros["i"] == "" {
			if m.s.o.EndOfData != nil {
				m.startEOD()
				return gomilter.RespContinue, nil
			}
			return gomilter.RespAccept, nil
		}
		return gomilter.RespContinue, nil
	}
	ctx := m.ctx
	if m.s.o.Accounts != nil {
		m.s.o.Accounts.Login(ctx, m.login, m.client)
	}
	if r := m.suspendedLogin(); r != nil {
		return r, nil
	}
	if m.s.o.Config.HeaderFromBinding && m.from != "" {
		if ok, err := m.owns(ctx, m.from); err != nil {
			return m.storeError("owners", err), nil
		} else if !ok {
			return m.refuse(maillog.MilterReject, "header_from_binding", 553, "5.7.1",
				fmt.Sprintf("Sender address rejected: <%s> not owned by user %s", m.from, m.login)), nil
		}
	}
	return gomilter.RespContinue, nil
}

// RcptTo counts the recipients, and an authenticated client's against
// the send limits.
func (m *message) RcptTo(rcpt string, _ *gomilter.Modifier) (gomilter.Response, error) {
	m.nrcpt++
	if !m.s.o.Config.SMTPSendLimits {
		return nil, nil // SMFIP_NR_RCPT: no reply
	}
	if m.login == "" {
		return gomilter.RespContinue, nil
	}
	if err := m.s.o.Limiter.Rcpt(m.ctx, m.sender(), strings.TrimSpace(rcpt)); err != nil {
		m.nrcpt--
		return m.limitReply(err), nil
	}
	return gomilter.RespContinue, nil
}

// Header collects the message's From: fields. No reply is sent
// (SMFIP_NOHREPL).
func (m *message) Header(name, value string, _ *gomilter.Modifier) (gomilter.Response, error) {
	if strings.EqualFold(name, "From") && m.login != "" {
		m.fromFields = append(m.fromFields, value)
	}
	if m.eod.on {
		m.eodHeader(name, value)
	}
	return nil, nil
}

// checkMessage checks an authenticated client's header From: and counts
// its message (at end of message: a refusal there refuses the message as
// one at end of headers would).
func (m *message) checkMessage() gomilter.Response {
	if m.s.o.Config.HeaderFromBinding {
		if r := m.checkFrom(m.fromFields); r != nil {
			return r
		}
	}
	if m.s.o.Config.SMTPSendLimits {
		if err := m.s.o.Limiter.Message(m.ctx, m.sender(), m.nrcpt); err != nil {
			return m.limitReply(err)
		}
	}
	return nil
}

// checkFrom refuses header From: addresses the login does not own (RFC
// 5322 §3.6.2: every author in From:), and a message without one.
func (m *message) checkFrom(values []string) gomilter.Response {
	if len(values) == 0 {
		return m.refuse(maillog.MilterReject, "header_from_binding", 550, "5.7.1", "Message has no From: header")
	}
	for _, v := range values {
		list, err := mail.ParseAddressList(v)
		if err != nil {
			return m.refuse(maillog.MilterReject, "header_from_binding", 550, "5.7.1",
				fmt.Sprintf("From: header %q is not an address list", clip(v)))
		}
		for _, a := range list {
			ok, err := m.owns(m.ctx, a.Address)
			if err != nil {
				return m.storeError("owners", err)
			}
			if !ok {
				return m.refuse(maillog.MilterReject, "header_from_binding", 550, "5.7.1",
					fmt.Sprintf("From: <%s> is not an address of user %s", a.Address, m.login))
			}
		}
	}
	return nil
}

func clip(s string) string {
	if len(s) > 100 {
		return s[:100] + "..."
	}
	return s
}

func (m *message) owns(ctx context.Context, addr string) (bool, error) {
	if m.s.o.Owners == nil {
		return strings.EqualFold(m.login, addr), nil
	}
	k := strings.ToLower(addr)
	if ok, seen := m.owned[k]; seen {
		return ok, nil // the envelope sender is usually the From: address
	}
	ok, err := m.s.o.Owners.MayUse(ctx, m.login, addr)
	if err == nil {
		if m.owned == nil {
			m.owned = map[string]bool{}
		}
		m.owned[k] = ok
	}
	return ok, err
}

// Body is the end of the message: an authenticated message is accepted and
// tied to its login; a local submission is attributed to its uid and
// counted, and quarantined over a limit.
func (m *message) Body(mod *gomilter.Modifier) (gomilter.Response, error) {
	qid := mod.Macros["i"]
	if m.eod.on {
		if r := m.endOfData(mod); r != nil {
			return r, nil
		}
		return gomilter.RespAccept, nil
	}
	if m.login != "" {
		m.qid = qid
		if r := m.checkMessage(); r != nil {
			return r, nil
		}
		// Suspended while this message was on its way (by this very
		// message's login, or elsewhere): hold it with the rest.
		if susp, err := m.isSuspended(m.login); err == nil && susp {
			m.quarantine(mod, qid, "account_suspended", "account "+m.login+" is suspended")
			return gomilter.RespAccept, nil
		}
		m.accepted(qid)
		return gomilter.RespAccept, nil
	}
	uid, err := m.localUID(qid)
	if errors.Is(err, ErrNotLocal) {
		return gomilter.RespAccept, nil
	}
	if err != nil {
		// The submitter is unknown: keep the message in Postfix's hands
		// (pickup retries it) rather than let it pass uncounted.
		m.s.o.Log.Slog().Error("milter: cannot attribute a local submission; temporary failure", "id", qid, "err", err)
		return reply(451, "4.3.0", "relayguard cannot attribute this message to a local user; try again later"), nil
	}
	m.uid = uid
	name := m.s.userName(uid)
	m.login = name
	if m.s.exempt[uid] {
		m.accepted(qid)
		return gomilter.RespAccept, nil
	}
	if susp, err := m.isSuspended(name); err == nil && susp {
		m.quarantine(mod, qid, "account_suspended", "local user "+m.who()+" is suspended")
		return gomilter.RespAccept, nil
	}
	if err := m.s.o.Limiter.Local(m.ctx, m.sender(), uid, m.nrcpt); err != nil {
		var le *ratelimit.LimitError
		if !errors.As(err, &le) {
			return m.storeError("limits", err), nil
		}
		m.quarantine(mod, qid, "delivery.rate_limits."+le.Limit, err.Error())
		return gomilter.RespAccept, nil
	}
	m.accepted(qid)
	return gomilter.RespAccept, nil
}

// localUID finds the submitter's uid in the first configured queue
// directory that has the queue file.
func (m *message) localUID(qid string) (int, error) {
	var first error
	for _, dir := range m.s.o.Config.QueueDirectories {
		uid, err := LocalUID(dir, qid)
		if err == nil || errors.Is(err, ErrNotLocal) {
			return uid, err
		}
		if first == nil {
			first = err
		}
	}
	if first == nil {
		first = errors.New("milter.queue_directories is empty")
	}
	return 0, first
}

func (m *message) who() string {
	if m.uid >= 0 {
		return fmt.Sprintf("%s (uid %d)", m.login, m.uid)
	}
	return m.login
}

func (m *message) sender() ratelimit.Sender {
	listener := "smtpd"
	if m.uid >= 0 {
		listener = "sendmail"
	}
	return ratelimit.Sender{User: m.login, IP: m.client, From: m.from, Listener: listener}
}

func (m *message) decision(action, qid, rule, text string) maillog.MilterDecision {
	return maillog.MilterDecision{ID: qid, User: m.login, UID: m.uid, Client: m.client, From: m.from, Nrcpt: m.nrcpt,
		Action: action, Rule: rule, Text: text}
}

// accepted logs and publishes an accepted message and ties it to its
// sender.
func (m *message) accepted(qid string) {
	m.s.o.Log.Milter(m.ctx, m.decision(maillog.MilterAccept, qid, "", ""))
	detail := ""
	if m.uid >= 0 {
		detail = "uid=" + strconv.Itoa(m.uid)
	}
	m.s.o.Events.Publish(m.ctx, event.Event{Kind: event.MessageSubmitted, Source: "milter", IP: m.client, User: m.login, Detail: detail, Service: m.sender().Listener})
	if m.s.o.Accounts != nil {
		m.s.o.Accounts.Sent(m.ctx, m.login, qid)
	}
}

// quarantine puts the message on Postfix's hold queue, with the reason.
func (m *message) quarantine(mod *gomilter.Modifier, qid, rule, reason string) {
	text := "relayguard: " + oneLine(reason)
	if err := mod.Quarantine(text); err != nil {
		m.s.o.Log.Slog().Error("milter: quarantine", "id", qid, "err", err)
	}
	m.s.o.Log.Milter(m.ctx, m.decision(maillog.MilterQuarantine, qid, rule, text))
	if m.s.o.Accounts != nil {
		// Held mail is tied to its sender too: releasing the account
		// releases it.
		m.s.o.Accounts.Tie(m.ctx, m.login, qid)
	}
}

// refuse answers with an SMTP reply and logs the decision.
func (m *message) refuse(action, rule string, code int, enhanced, text string) gomilter.Response {
	m.s.o.Log.Milter(m.ctx, m.decision(action, m.qid, rule, fmt.Sprintf("%d %s %s", code, enhanced, text)))
	if action == maillog.MilterReject {
		m.s.o.Events.Publish(m.ctx, event.Event{Kind: event.Reject, Source: "milter", IP: m.client, User: m.login, Rule: rule, Detail: text, Service: m.sender().Listener})
	}
	return reply(code, enhanced, text)
}

// limitReply is the answer to a send limit that bit (451 4.7.1 with the
// limit's name) or to the state store failing (451 4.3.0).
func (m *message) limitReply(err error) gomilter.Response {
	var le *ratelimit.LimitError
	if !errors.As(err, &le) {
		return m.storeError("limits", err)
	}
	return m.refuse(maillog.MilterTempfail, "delivery.rate_limits."+le.Limit, 451, "4.7.1", err.Error())
}

func (m *message) storeError(what string, err error) gomilter.Response {
	m.s.o.Log.Slog().Error("milter: state unavailable; temporary failure", "what", what, "user", m.login, "err", err)
	return reply(451, "4.3.0", "relayguard state unavailable, try again later")
}

func (m *message) isSuspended(name string) (bool, error) {
	if m.s.o.Accounts == nil || name == "" {
		return false, nil
	}
	return m.s.o.Accounts.Suspended(m.ctx, name)
}

// suspendedLogin defers a suspended login's mail.
func (m *message) suspendedLogin() gomilter.Response {
	login := m.login
	susp, err := m.isSuspended(login)
	if err != nil {
		return m.storeError("accounts", err)
	}
	if !susp {
		return nil
	}
	return m.refuse(maillog.MilterTempfail, "account_suspended", 451, "4.7.1",
		fmt.Sprintf("Error: account %s is suspended; ask the postmaster", login))
}

// Abort forgets the message.
func (m *message) Abort(*gomilter.Modifier) error {
	m.login, m.from, m.qid, m.nrcpt, m.uid, m.fromFields = "", "", "", 0, -1, nil
	m.eod.reset()
	return nil
}
