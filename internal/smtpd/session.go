package smtpd

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"time"

	"github.com/relayguard/relayguard/internal/address"
	"github.com/relayguard/relayguard/internal/config"
	"github.com/relayguard/relayguard/internal/event"
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
	cfg  *config.Config

	start    time.Time
	helo     string
	esmtp    bool
	tls      *tls.ConnectionState
	authUser string
	authMech string
	// advertised is the AUTH list of the last EHLO (RFC 5802 §6 downgrade check)
	advertised []string
	trusted    bool
	badCmds    int
	// headers asked for by policy verdicts, for the session and for the
	// current transaction
	sessPrepend, txPrepend []string
	junk                   int
	authFails              int
	messages               int
	closing                bool

	// transaction (reset by RSET, EHLO, end of DATA)
	inTx     bool
	from     address.Path
	fromRaw  string
	smtputf8 bool
	body8bit bool
	declSize int64
	rcpts    []string
}

func newSession(s *Server, c net.Conn, l *listener, ip netip.Addr) *session {
	return &session{
		s: s, l: l, conn: c, ip: ip, cfg: s.cfg, start: time.Now(),
		br:      bufio.NewReaderSize(c, 4096),
		bw:      bufio.NewWriterSize(c, 2048),
		trusted: containsAddr(s.myNetworks, ip),
	}
}

// errClose ends the session after the reply was written.
var errClose = errors.New("close session")

func (ss *session) run(ctx context.Context) {
	log := ss.s.log
	defer func() {
		log.Info("connection closed", "client", ss.ip, "listener", ss.l.cfg.Name, "helo", ss.helo,
			"tls", ss.tls != nil, "user", ss.authUser, "messages", ss.messages,
			"bad_commands", ss.badCmds, "auth_failures", ss.authFails, "duration", time.Since(ss.start).Round(time.Millisecond))
	}()
	if ss.l.cfg.Mode == config.ModeSubmissions {
		if err := ss.startTLS(); err != nil {
			log.Info("TLS handshake failed", "client", ss.ip, "listener", ss.l.cfg.Name, "err", err)
			return
		}
	}
	// Pregreet: a client that talks before the banner is a bot (postscreen's
	// PREGREET test, RFC 5321 §4.3.1 says the client waits for 220).
	if d := ss.cfg.Limits.GreetingDelay.D(); d > 0 {
		ss.conn.SetReadDeadline(time.Now().Add(d))
		if _, err := ss.br.Peek(1); err == nil {
			ss.s.reject(ctx, ss.ip, ss.l.cfg.Name, "pregreet", "554 5.5.1", "", "client talked before the greeting")
			ss.s.deps.Events.Publish(ctx, event.Event{Kind: event.ProtocolAbuse, Source: "smtpd", IP: ss.ip, Detail: "pregreet", Service: ss.l.cfg.Name})
			ss.reply("554 5.5.1 %s Error: talked before the greeting", ss.cfg.Hostname)
			ss.flush()
			return
		}
	}
	if ss.s.deps.Policy != nil {
		v := ss.policyCheck(ctx, ss.request(policy.StageConnect, ""))
		if v.Action == policy.Reject || v.Action == policy.Defer {
			ss.verdictReply(ctx, v, "")
			ss.flush()
			return
		}
	}
	ss.reply("220 %s ESMTP relayguard", ss.cfg.Hostname)
	log.Info("connection", "client", ss.ip, "listener", ss.l.cfg.Name, "trusted", ss.trusted)
	for !ss.closing {
		if ss.br.Buffered() == 0 {
			if err := ss.flush(); err != nil {
				return
			}
		}
		// One deadline for both directions: replies that the bufio.Writer
		// flushes by itself while pipelined input is processed are covered
		// too.
		ss.conn.SetDeadline(time.Now().Add(ss.cfg.Limits.CommandTimeout.D()))
		// AUTH may carry an initial response up to the SASL line limit
		// (RFC 4954 §4); every other command is held to 512 octets.
		line, err := ss.readLine(max(ss.cfg.Limits.MaxCommandLength, ss.cfg.Limits.AuthResponseLength))
		if err == nil && len(line)+2 > ss.cfg.Limits.MaxCommandLength && !isAuthLine(line) {
			ss.badCommand(ctx, "500 5.5.2 Error: line too long")
			continue
		}
		if err != nil {
			if errors.Is(err, errLineTooLong) {
				if isAuthLine(line) {
					ss.badCommand(ctx, "500 5.5.6 Authentication Exchange line is too long")
				} else {
					ss.badCommand(ctx, "500 5.5.2 Error: line too long")
				}
				continue
			}
			if errors.Is(err, errNUL) {
				ss.badCommand(ctx, "500 5.5.2 Error: NUL character in command")
				continue
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				// RFC 5321 §4.5.3.2.7: close after the timeout with 421.
				ss.reply("421 4.4.2 %s Error: timeout exceeded", ss.cfg.Hostname)
				ss.flush()
			}
			if ss.inTx || ss.authMech != "" && ss.authUser == "" {
				log.Info("lost connection", "client", ss.ip, "after", ss.lastStage())
			}
			return
		}
		if err := ss.command(ctx, line); err != nil {
			ss.flush()
			return
		}
	}
	ss.flush()
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

// reply writes one reply line; multi-line replies use replyLines.
func (ss *session) reply(format string, a ...any) {
	fmt.Fprintf(ss.bw, format, a...)
	ss.bw.WriteString("\r\n")
}

func (ss *session) replyLines(code string, lines []string) {
	for i, l := range lines {
		sep := "-"
		if i == len(lines)-1 {
			sep = " "
		}
		ss.bw.WriteString(code + sep + l + "\r\n")
	}
}

// badCommand replies and counts toward the bad-command limit; past it the
// session ends with 421 (Postfix's smtpd_hard_error_limit).
func (ss *session) badCommand(ctx context.Context, reply string) {
	ss.badCmds++
	ss.bw.WriteString(reply + "\r\n")
	if ss.badCmds >= ss.cfg.Limits.MaxBadCommands {
		ss.s.log.Warn("limit reached", "limit", "limits.max_bad_commands", "value", ss.cfg.Limits.MaxBadCommands, "client", ss.ip)
		ss.s.deps.Events.Publish(ctx, event.Event{Kind: event.ProtocolAbuse, Source: "smtpd", IP: ss.ip, Detail: "too many errors", Service: ss.l.cfg.Name})
		ss.s.deps.Metrics.Rejections.WithLabelValues("max_bad_commands").Inc()
		ss.reply("421 4.7.0 %s Error: too many errors", ss.cfg.Hostname)
		ss.closing = true
	}
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

func (ss *session) command(ctx context.Context, line string) error {
	verb, arg := line, ""
	if i := strings.IndexByte(line, ' '); i >= 0 {
		verb, arg = line[:i], line[i+1:]
	}
	verb = strings.ToUpper(verb)
	if strings.IndexByte(line, 0) >= 0 {
		ss.badCommand(ctx, "500 5.5.2 Error: NUL character in command")
		return nil
	}
	switch verb {
	case "RSET", "NOOP", "VRFY", "HELP", "EXPN":
		// Postfix's smtpd_junk_command_limit: commands that move no mail
		// cannot keep a session open forever.
		if ss.junk++; ss.junk > ss.cfg.Limits.MaxJunkCommands {
			ss.s.log.Warn("limit reached", "limit", "limits.max_junk_commands", "value", ss.cfg.Limits.MaxJunkCommands, "client", ss.ip)
			ss.s.deps.Metrics.Rejections.WithLabelValues("max_junk_commands").Inc()
			ss.reply("421 4.7.0 %s Error: too many commands without mail", ss.cfg.Hostname)
			return errClose
		}
	}
	switch verb {
	case "EHLO", "HELO":
		ss.cmdHelo(ctx, verb, strings.TrimSpace(arg))
	case "STARTTLS":
		return ss.cmdStartTLS(ctx, arg)
	case "AUTH":
		return ss.cmdAuth(ctx, arg)
	case "MAIL":
		ss.cmdMail(ctx, arg)
	case "RCPT":
		ss.cmdRcpt(ctx, arg)
	case "DATA":
		return ss.cmdData(ctx, arg)
	case "RSET":
		if arg != "" {
			ss.badCommand(ctx, "501 5.5.4 Syntax: RSET")
			return nil
		}
		ss.resetTx()
		ss.reply("250 2.0.0 Ok")
	case "NOOP":
		ss.reply("250 2.0.0 Ok")
	case "QUIT":
		ss.reply("221 2.0.0 Bye")
		ss.closing = true
	case "VRFY":
		// RFC 5321 §3.5.3: 252 when we will not verify (no address harvesting).
		ss.reply("252 2.0.0 Send some mail, I'll try my best")
	case "EXPN":
		ss.reply("502 5.5.1 Error: EXPN not implemented")
	case "HELP":
		ss.reply("214 2.0.0 https://www.rfc-editor.org/rfc/rfc5321")
	case "BDAT":
		ss.badCommand(ctx, "502 5.5.1 Error: CHUNKING not offered")
	default:
		if nonSMTP(verb, line) {
			ss.s.log.Warn("non-SMTP command", "client", ss.ip, "listener", ss.l.cfg.Name, "command", truncate(line, 80))
			ss.s.deps.Events.Publish(ctx, event.Event{Kind: event.ProtocolAbuse, Source: "smtpd", IP: ss.ip, Detail: "non-SMTP command", Service: ss.l.cfg.Name})
			ss.s.deps.Metrics.Rejections.WithLabelValues("non_smtp_command").Inc()
			ss.reply("502 5.5.1 Error: non-SMTP command")
			return errClose
		}
		ss.badCommand(ctx, "500 5.5.2 Error: command not recognized")
	}
	return nil
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
	ss.txPrepend = nil
}

func (ss *session) cmdHelo(ctx context.Context, verb, arg string) {
	if arg == "" || strings.ContainsAny(arg, " \t") {
		ss.badCommand(ctx, "501 5.5.4 Syntax: "+verb+" hostname")
		return
	}
	ss.resetTx()
	ss.helo = arg
	ss.esmtp = verb == "EHLO"
	if ss.s.deps.Policy != nil {
		v := ss.policyCheck(ctx, ss.request(policy.StageHelo, ""))
		if v.Action == policy.Reject || v.Action == policy.Defer {
			ss.helo = ""
			ss.verdictReply(ctx, v, "")
			return
		}
	}
	if !ss.esmtp {
		ss.reply("250 %s", ss.cfg.Hostname)
		return
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
	lines = append(lines, "ENHANCEDSTATUSCODES", "8BITMIME", "SMTPUTF8")
	ss.replyLines("250", lines)
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
// to prepend (scores, Received-SPF, warn-only rules) for the message.
func (ss *session) policyCheck(ctx context.Context, r *policy.Request) policy.Verdict {
	v := ss.s.deps.Policy.Check(ctx, r)
	if v.Prepend != "" && v.Action != policy.Reject && v.Action != policy.Defer {
		h := oneLine(v.Prepend)
		if r.Stage == policy.StageConnect || r.Stage == policy.StageHelo {
			ss.sessPrepend = append(ss.sessPrepend, h)
		} else if r.Stage != policy.StageEndOfData {
			ss.txPrepend = append(ss.txPrepend, h)
		}
	}
	return v
}

// verdictReply sends a policy engine verdict and logs it with its rule.
func (ss *session) verdictReply(ctx context.Context, v policy.Verdict, rcpt string) {
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
	ss.s.reject(ctx, ss.ip, ss.l.cfg.Name, v.Rule, fmt.Sprintf("%d %s", code, enh), rcpt, text)
	ss.reply("%d %s %s", code, enh, oneLine(text))
}
