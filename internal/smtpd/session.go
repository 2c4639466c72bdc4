package smtpd

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"time"

	"github.com/relayguard/relayguard/internal/address"
	"github.com/relayguard/relayguard/internal/config"
	"github.com/relayguard/relayguard/internal/event"
	"github.com/relayguard/relayguard/internal/maillog"
	"github.com/relayguard/relayguard/internal/policy"
)

// session is one SMTP connection's state (RFC 5321 §4.1.4 ordering).
type session struct {
	s    *Server
	l    *listener
	conn net.Conn
	br   *bufio.Reader
	bw   *bufio.Writer
	ip   netip.Addr
	cfg  *config.SMTP
	// mechs are the AUTH mechanisms in force when the session started
	// (Server.Reload replaces them for later sessions).
	mechs []string
	// cid is the connection id on every log line of the session (mox's cid).
	cid string
	// log is the server's logger with the session's cid, client and
	// listener, for records outside maillog's vocabulary.
	log *slog.Logger
	// line is the command being handled.
	line string

	start time.Time
	helo  string
	esmtp bool
	tls   *tls.ConnectionState
	// leaf is the certificate this session's TLS handshake presented
	// (for SCRAM-SHA-256-PLUS channel binding)
	leaf     *x509.Certificate
	authUser string
	authMech string
	// advertised is the AUTH list of the last EHLO (RFC 5802 §6 downgrade check)
	advertised []string
	trusted    bool
	badCmds    int
	// headers asked for by policy verdicts, for the session and for the
	// current transaction
	sessPrepend, txPrepend []string
	// bdat is the message arriving in BDAT chunks, nil otherwise
	bdat *bdatState
	// eodHeaders are the fields the end-of-data verdict added
	// (Authentication-Results, a quarantine tag), stored with the envelope
	eodHeaders string
	junk       int
	authFails  int
	// budgetEnd is when the command budget runs out (zero: no budget).
	budgetEnd time.Time
	// dataSpent and dataBytes are the time spent reading message data
	// (DATA, BDAT chunks, refused chunks read to be skipped) and its size
	// since the session's last accepted message: one overall deadline
	// holds them all (dataDeadline).
	dataSpent time.Duration
	dataBytes int64
	messages  int
	closing   bool

	// transaction (reset by RSET, EHLO, end of DATA)
	inTx     bool
	from     address.Path
	fromRaw  string
	smtputf8 bool
	body8bit bool
	declSize int64
	rcpts    []string
	// DSN parameters (RFC 3461): RET and ENVID of MAIL, and per recipient
	// (rcptDSN[i] belongs to rcpts[i])
	dsnRet, dsnEnvID string
	rcptDSN          []rcptDSN
}

func newSession(s *Server, c net.Conn, l *listener, ip netip.Addr, cid string) *session {
	st := s.settings()
	return &session{
		s: s, l: l, conn: c, ip: ip, cfg: st.cfg, mechs: st.mechs, start: time.Now(), cid: cid, leaf: s.leaf,
		log:     s.log.With("cid", cid, "client", ip.String(), "listener", l.cfg.Name),
		br:      bufio.NewReaderSize(c, 4096),
		bw:      bufio.NewWriterSize(c, 2048),
		trusted: st.cfg.Trusted(ip),
	}
}

// run serves the session after the connection was admitted.
func (ss *session) run(ctx context.Context) {
	defer func() {
		ss.abortBDAT() // a message the client never finished
		ss.s.ml.Disconnected(ctx, ss.logConn(), maillog.Session{Helo: ss.helo, TLS: ss.tls != nil, User: ss.authUser,
			Messages: ss.messages, BadCmds: ss.badCmds, AuthFails: ss.authFails, Duration: time.Since(ss.start)})
	}()
	if ss.l.cfg.Mode == config.ModeSubmissions {
		if err := ss.startTLS(); err != nil {
			ss.s.ml.TLSFailed(ctx, ss.logConn(), err)
			return
		}
	}
	ss.send(ctx, ss.greet(ctx))
	if ss.closing {
		ss.flush()
		return
	}
	ss.s.ml.Connected(ctx, ss.logConn(), ss.trusted)
	ss.startBudget()
	for !ss.closing {
		if ss.br.Buffered() == 0 {
			if err := ss.flush(); err != nil {
				return
			}
		}
		// One deadline for both directions: replies that the bufio.Writer
		// flushes by itself while pipelined input is processed are covered
		// too.
		ss.conn.SetDeadline(ss.commandDeadline())
		// AUTH may carry an initial response up to the SASL line limit
		// (RFC 4954 §4); every other command is held to 512 octets.
		line, err := ss.readLine(max(ss.cfg.Limits.MaxCommandLength, ss.cfg.Limits.AuthResponseLength))
		ss.line = line
		switch {
		case err == nil && len(line)+2 > ss.cfg.Limits.MaxCommandLength && !isAuthLine(line),
			errors.Is(err, errLineTooLong) && !isAuthLine(line):
			ss.send(ctx, badCommand(500, "5.5.2", "Error: line too long"))
		case errors.Is(err, errLineTooLong):
			ss.send(ctx, badCommand(500, "5.5.6", "Authentication Exchange line is too long"))
		case errors.Is(err, errNUL):
			ss.send(ctx, badCommand(500, "5.5.2", "Error: NUL character in command"))
		case err != nil:
			if isTimeout(err) {
				// RFC 5321 §4.5.3.2.7: close after the timeout with 421.
				ss.send(ctx, ss.timeoutReply())
				ss.flush()
			}
			if ss.inTx || ss.authMech != "" && ss.authUser == "" {
				ss.s.ml.LostConnection(ctx, ss.logConn(), ss.lastStage())
			}
			return
		default:
			ss.send(ctx, ss.command(ctx, line))
		}
	}
	ss.flush()
}

// greet is the banner, or the refusal of a client that talked first or
// that the policy engine refuses at connect.
func (ss *session) greet(ctx context.Context) Reply {
	// Pregreet: a client that talks before the banner is a bot (postscreen's
	// PREGREET test, RFC 5321 §4.3.1 says the client waits for 220).
	if d := ss.cfg.Limits.GreetingDelay.D(); d > 0 {
		ss.conn.SetReadDeadline(time.Now().Add(d))
		if _, err := ss.br.Peek(1); err == nil {
			return Reply{Code: 554, Enhanced: "5.5.1", Text: ss.cfg.Hostname + " Error: talked before the greeting",
				Rule: "pregreet", Event: event.ProtocolAbuse, Detail: "pregreet", Close: true}
		}
	}
	if ss.s.deps.Policy != nil {
		if r, refused := ss.policyCheck(ctx, ss.request(policy.StageConnect, "")); refused {
			return r.closing()
		}
	}
	return reply(220, "", ss.cfg.Hostname+" ESMTP relayguard")
}

func isTimeout(err error) bool {
	var ne interface{ Timeout() bool }
	return errors.As(err, &ne) && ne.Timeout()
}

func (ss *session) lastStage() string {
	switch {
	case len(ss.rcpts) > 0:
		return "RCPT"
	case ss.inTx:
		return "MAIL"
	}
	return "command"
}

var errLineTooLong = errors.New("line too long")

func isAuthLine(l string) bool { return len(l) >= 5 && strings.EqualFold(l[:5], "AUTH ") }

var errNUL = errors.New("NUL character")

// readLine reads one line ending in LF (CRLF preferred; a bare LF is
// tolerated in commands), without the line ending. Lines longer than max
// octets (ending included) are consumed and reported as errLineTooLong,
// with the line's first octets (enough to see the command verb).
func (ss *session) readLine(max int) (string, error) {
	var buf []byte
	tooLong := false
	for {
		frag, err := ss.br.ReadSlice('\n')
		if !tooLong {
			buf = append(buf, frag...)
			if len(buf) > max {
				tooLong, buf = true, buf[:8]
			}
		}
		if err == bufio.ErrBufferFull {
			continue
		}
		if err != nil {
			return "", err
		}
		break
	}
	if tooLong {
		return string(buf), errLineTooLong
	}
	buf = buf[:len(buf)-1]
	if n := len(buf); n > 0 && buf[n-1] == '\r' {
		buf = buf[:n-1]
	}
	for _, c := range buf {
		if c == 0 {
			return string(buf), errNUL
		}
	}
	return string(buf), nil
}

// flush sends buffered replies. A client that stops reading cannot hold
// the session: every write has a deadline.
func (ss *session) flush() error {
	ss.conn.SetWriteDeadline(time.Now().Add(ss.cfg.Limits.CommandTimeout.D()))
	return ss.bw.Flush()
}

// nonSMTP reports lines that show the peer is not an SMTP client (an HTTP
// proxy probe, a browser): Postfix's smtpd_forbidden_commands.
func nonSMTP(verb, line string) bool {
	switch verb {
	case "GET", "POST", "HEAD", "PUT", "CONNECT", "OPTIONS":
		return true
	}
	return strings.HasSuffix(verb, ":") && (strings.EqualFold(verb, "Host:") || strings.EqualFold(verb, "User-Agent:"))
}

// command handles one command line and returns its reply.
func (ss *session) command(ctx context.Context, line string) Reply {
	verb, arg := line, ""
	if i := strings.IndexByte(line, ' '); i >= 0 {
		verb, arg = line[:i], line[i+1:]
	}
	verb = strings.ToUpper(verb)
	switch verb {
	case "RSET", "NOOP", "VRFY", "HELP", "EXPN":
		// Postfix's smtpd_junk_command_limit: commands that move no mail
		// cannot keep a session open forever.
		if ss.junk++; ss.junk > ss.cfg.Limits.MaxJunkCommands {
			return limitReached(421, "4.7.0", "limits.max_junk_commands", ss.cfg.Limits.MaxJunkCommands,
				ss.cfg.Hostname+" Error: too many commands without mail").closing()
		}
	}
	switch verb {
	case "EHLO", "HELO":
		return ss.cmdHelo(ctx, verb, strings.TrimSpace(arg))
	case "STARTTLS":
		return ss.cmdStartTLS(ctx, arg)
	case "AUTH":
		return ss.cmdAuth(ctx, arg)
	case "MAIL":
		return ss.cmdMail(ctx, arg)
	case "RCPT":
		return ss.cmdRcpt(ctx, arg)
	case "DATA":
		return ss.cmdData(ctx, arg)
	case "RSET":
		if arg != "" {
			return badCommand(501, "5.5.4", "Syntax: RSET")
		}
		ss.resetTx()
		return reply(250, "2.0.0", "Ok")
	case "NOOP":
		return reply(250, "2.0.0", "Ok")
	case "QUIT":
		return reply(221, "2.0.0", "Bye").closing()
	case "VRFY":
		// RFC 5321 §3.5.3: 252 when we will not verify (no address harvesting).
		return reply(252, "2.0.0", "Send some mail, I'll try my best")
	case "EXPN":
		return reply(502, "5.5.1", "Error: EXPN not implemented")
	case "HELP":
		return reply(214, "2.0.0", "https://www.rfc-editor.org/rfc/rfc5321")
	case "BDAT":
		return ss.cmdBdat(ctx, arg)
	}
	if nonSMTP(verb, line) {
		return Reply{Code: 502, Enhanced: "5.5.1", Text: "Error: non-SMTP command", Rule: ruleNonSMTP,
			Event: event.ProtocolAbuse, Detail: "non-SMTP command", Close: true}
	}
	return badCommand(500, "5.5.2", "Error: command not recognized")
}

func truncate(s string, n int) string {
	if len(s) > n {
		return s[:n] + "..."
	}
	return s
}

func (ss *session) resetTx() {
	ss.inTx = false
	ss.from = address.Path{}
	ss.fromRaw = ""
	ss.smtputf8, ss.body8bit = false, false
	ss.declSize = 0
	ss.rcpts = ss.rcpts[:0]
	ss.rcptDSN = ss.rcptDSN[:0]
	ss.dsnRet, ss.dsnEnvID = "", ""
	ss.txPrepend = nil
	ss.eodHeaders = ""
	ss.abortBDAT()
}

func (ss *session) cmdHelo(ctx context.Context, verb, arg string) Reply {
	if arg == "" || strings.ContainsAny(arg, " \t") {
		return badCommand(501, "5.5.4", "Syntax: "+verb+" hostname")
	}
	ss.resetTx()
	ss.helo = arg
	ss.esmtp = verb == "EHLO"
	if ss.s.deps.Policy != nil {
		if r, refused := ss.policyCheck(ctx, ss.request(policy.StageHelo, "")); refused {
			ss.helo = ""
			return r
		}
	}
	if !ss.esmtp {
		return reply(250, "", ss.cfg.Hostname)
	}
	lines := []string{ss.cfg.Hostname, "PIPELINING", "SIZE " + strconv.FormatInt(ss.cfg.Limits.MaxMessageSize, 10)}
	if ss.tls == nil && ss.s.deps.TLS != nil {
		lines = append(lines, "STARTTLS")
	}
	ss.advertised = ss.offeredMechs()
	if mechs := ss.advertised; len(mechs) > 0 {
		lines = append(lines, "AUTH "+strings.Join(mechs, " "))
		if ss.cfg.Auth.BrokenAuthClients {
			lines = append(lines, "AUTH="+strings.Join(mechs, " "))
		}
	}
	lines = append(lines, "ENHANCEDSTATUSCODES", "8BITMIME", "SMTPUTF8", "CHUNKING", "DSN")
	return reply(250, "", strings.Join(lines, "\n"))
}

// request builds a policy request for the current state.
func (ss *session) request(stage policy.Stage, rcpt string) *policy.Request {
	r := &policy.Request{
		Stage: stage, ClientAddress: ss.ip, ClientName: "unknown", ReverseName: "unknown",
		Helo: ss.helo, Sender: ss.from.String(), Recipient: rcpt, RecipientCount: len(ss.rcpts),
		SASLMethod: ss.authMech, SASLUsername: ss.authUser, TLS: ss.tls != nil, Size: ss.declSize,
		Listener: ss.l.cfg.Name,
	}
	if ss.authUser == "" {
		r.SASLMethod = ""
	}
	if ap, err := netip.ParseAddrPort(ss.conn.LocalAddr().String()); err == nil {
		r.ServerAddress, r.ServerPort = ap.Addr().Unmap(), int(ap.Port())
	}
	return r
}

// policyCheck asks the policy engine and keeps the header a verdict asks
// to prepend (scores, Received-SPF, warn-only rules) for the message. It
// returns the reply for a Reject or Defer verdict, and whether there is one.
func (ss *session) policyCheck(ctx context.Context, r *policy.Request) (Reply, bool) {
	v := ss.s.deps.Policy.Check(ctx, r)
	if v.Action == policy.Reject || v.Action == policy.Defer {
		return verdictReply(v, r.Recipient), true
	}
	if r.Stage == policy.StageEndOfData {
		// The message is written already: these fields go with the
		// envelope and are read in front of it (queue.Envelope.Headers).
		ss.eodHeaders = v.AuthResults
		if strings.Contains(v.Prepend, ":") {
			ss.eodHeaders += oneLine(v.Prepend) + "\r\n"
		}
		return Reply{}, false
	}
	if v.Prepend != "" {
		h := oneLine(v.Prepend)
		if r.Stage == policy.StageConnect || r.Stage == policy.StageHelo {
			ss.sessPrepend = append(ss.sessPrepend, h)
		} else {
			ss.txPrepend = append(ss.txPrepend, h)
		}
	}
	return Reply{}, false
}

// verdictReply is the reply for a policy engine verdict, with its rule.
func verdictReply(v policy.Verdict, rcpt string) Reply {
	code, enh := v.Code, v.Enhanced
	if code == 0 {
		if v.Action == policy.Defer {
			code, enh = 450, "4.7.1"
		} else {
			code, enh = 554, "5.7.1"
		}
	}
	if enh == "" {
		enh = fmt.Sprintf("%d.7.1", code/100)
	}
	text := v.Text
	if text == "" {
		text = "Access denied"
	}
	return Reply{Code: code, Enhanced: enh, Text: oneLine(text), Rule: v.Rule, Rcpt: rcpt}
}
