package smtpd

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/relayguard/relayguard/internal/event"
	"github.com/relayguard/relayguard/internal/maillog"
	"github.com/relayguard/relayguard/internal/msgauth"
	"github.com/relayguard/relayguard/internal/policy"
	"github.com/relayguard/relayguard/internal/queue"
)

// Errors found while reading message data. The first three let the
// session resynchronise at the final dot; bare CR/LF cannot be resynced
// safely (SMTP smuggling) and end the session.
var (
	errTooBig       = errors.New("message too big")
	errDataLineLong = errors.New("message line too long")
	errDataNUL      = errors.New("NUL character in message")
	errBareLF       = errors.New("bare <LF> or <CR> received")
	errSpoolWrite   = errors.New("queue file write error")
	errDataDeadline = errors.New("message data deadline passed")
)

func (ss *session) cmdData(ctx context.Context, arg string) Reply {
	switch {
	case arg != "":
		return badCommand(501, "5.5.4", "Syntax: DATA")
	case !ss.inTx:
		return badCommand(503, "5.5.1", "Error: need MAIL command")
	case len(ss.rcpts) == 0:
		return badCommand(554, "5.5.1", "Error: no valid recipients")
	case ss.bdat != nil:
		// RFC 3030 §2: DATA may not follow BDAT in a transaction.
		return badCommand(503, "5.5.1", "Error: BDAT in progress, send RSET")
	}
	if ss.s.deps.Limits != nil && (ss.authUser != "" || ss.trusted) {
		if err := ss.s.deps.Limits.Message(ctx, ss.sender(), len(ss.rcpts)); err != nil {
			return refuse(451, "4.7.1", "rate_limit", oneLine(err.Error()))
		}
	}
	if ss.s.deps.Policy != nil {
		if r, refused := ss.policyCheck(ctx, ss.request(policy.StageData, "")); refused {
			return r
		}
	}
	w, err := ss.s.deps.Spool.Create("")
	if err != nil {
		return localFailure(451, "4.3.0", "spool_write", "Error: queue file write error", fmt.Errorf("spool create: %w", err))
	}
	ss.send(ctx, reply(354, "", "End data with <CR><LF>.<CR><LF>"))
	if err := ss.flush(); err != nil {
		w.Abort()
		return hangUp
	}
	ss.writeReceived(w)
	start := time.Now()
	r := ss.receive(ctx, w, start)
	if !ss.budgetEnd.IsZero() && r.Code != 250 {
		ss.budgetEnd = ss.budgetEnd.Add(time.Since(start)) // message data is not command time
	}
	if r.Code != 250 {
		w.Abort()
	}
	if !r.Close {
		ss.resetTx()
	}
	return r
}

// receive reads the message into w and commits it to the spool. It returns
// the reply to the final dot.
func (ss *session) receive(ctx context.Context, w *queue.Writer, start time.Time) Reply {
	// Authentication-Results fields claiming our authserv-id are dropped
	// as the message arrives (RFC 8601 §5): only ours may carry it.
	ar := msgauth.NewAuthResultsFilter(w, ss.cfg.AuthservID)
	derr := ss.readData(ar, start)
	if derr == nil {
		if err := ar.Close(); err != nil {
			derr = fmt.Errorf("%w: %v", errSpoolWrite, err)
		}
	}
	if ar.Removed > 0 {
		ss.log.Info("removed forged Authentication-Results", "authserv_id", ss.cfg.AuthservID, "fields", ar.Removed)
	}
	return ss.complete(ctx, w, derr, false)
}

// complete answers the end of a message read into w with error derr (from
// DATA, or from the BDAT chunks when bdat): a refusal for what reading
// found, else the end-of-data policy check and the commit to the spool.
func (ss *session) complete(ctx context.Context, w *queue.Writer, derr error, bdat bool) Reply {
	lim := ss.cfg.Limits
	switch {
	case errors.Is(derr, errBareLF) && bdat:
		// BDAT's framing is by length: the session can go on.
		return refuse(554, "5.6.0", "bare_newline", "Error: bare <CR> or <LF> in message")
	case errors.Is(derr, errBareLF):
		return Reply{Code: 521, Enhanced: "5.5.2", Text: ss.cfg.Hostname + " Error: bare <CR> or <LF> received",
			Rule: "bare_newline", Event: event.ProtocolAbuse, Detail: "bare newline in DATA", Close: true}
	case errors.Is(derr, errTooBig):
		return limitReached(552, "5.3.4", "limits.max_message_size", lim.MaxMessageSize, "Error: message size exceeds fixed limit")
	case errors.Is(derr, errDataLineLong):
		return limitReached(500, "5.5.2", "limits.max_line_length", lim.MaxLineLength,
			fmt.Sprintf("Error: message line longer than %d octets", lim.MaxLineLength))
	case errors.Is(derr, errDataNUL):
		return refuse(554, "5.6.0", "nul_in_message", "Error: message contains NUL characters")
	case errors.Is(derr, errSpoolWrite):
		return localFailure(451, "4.3.0", "spool_write", "Error: queue file write error", fmt.Errorf("spool %s: %w", w.ID(), derr))
	case errors.Is(derr, errDataDeadline):
		return ss.dataDeadlineReply()
	case derr != nil:
		// Connection lost or timed out mid-DATA: nothing was acknowledged.
		ss.s.ml.LostConnection(ctx, ss.logConn(), "DATA")
		if isTimeout(derr) {
			return reply(421, "4.4.2", ss.cfg.Hostname+" Error: timeout exceeded").closing()
		}
		return hangUp
	}
	if ss.s.deps.Policy != nil {
		req := ss.request(policy.StageEndOfData, "")
		req.Size = w.Size()
		req.Message = w.Open
		if r, refused := ss.policyCheck(ctx, req); refused {
			return r
		}
	}
	env := &queue.Envelope{
		From: ss.from.String(), AuthUser: ss.authUser, ClientIP: ss.ip.String(), Helo: ss.helo,
		Listener: ss.l.cfg.Name, Mode: ss.l.cfg.Mode, SMTPUTF8: ss.smtputf8, Body8Bit: ss.body8bit, Trusted: ss.trusted,
		Headers: ss.eodHeaders, DSNRet: ss.dsnRet, DSNEnvID: ss.dsnEnvID,
	}
	for i, r := range ss.rcpts {
		env.Recipients = append(env.Recipients, queue.Recipient{Addr: r, Notify: ss.rcptDSN[i].notify, ORcpt: ss.rcptDSN[i].orcpt})
	}
	// The reply waits for stable storage: RFC 5321 §4.1.1.4, and the rule
	// that nothing acknowledged is ever lost.
	if err := w.Commit(ctx, env); err != nil {
		return localFailure(451, "4.3.0", "spool_write", "Error: queue file write error", fmt.Errorf("spool commit %s: %w", w.ID(), err))
	}
	ss.messages++
	ss.junk = 0 // a session that moves mail is not idling
	ss.startBudget()
	ss.dataSpent, ss.dataBytes = 0, 0
	ss.s.deps.Metrics.Spooled.Inc()
	ss.s.ml.Accepted(ctx, ss.logConn(), maillog.Message{ID: env.ID, User: ss.authUser, From: env.From, Nrcpt: len(env.Recipients), Size: env.Size})
	if ss.authUser != "" {
		ss.s.deps.Events.Publish(ctx, event.Event{Kind: event.MessageSubmitted, Source: "smtpd", IP: ss.ip, User: ss.authUser,
			Service: ss.l.cfg.Name, QueueID: env.ID})
	}
	return reply(250, "2.0.0", "Ok: queued as "+env.ID)
}

// writeReceived prepends the trace header of RFC 5321 §4.4, with the
// protocol keyword of RFC 3848 / RFC 6531 §3.7.3.
func (ss *session) writeReceived(w io.Writer) {
	proto := "SMTP"
	if ss.esmtp {
		proto = "ESMTP"
		if ss.smtputf8 {
			proto = "UTF8SMTP"
		}
		if ss.tls != nil {
			proto += "S"
		}
		if ss.authUser != "" {
			proto += "A"
		}
	}
	var forClause string
	if len(ss.rcpts) == 1 {
		forClause = "\r\n\tfor <" + ss.rcpts[0] + ">"
	}
	fmt.Fprintf(w, "Received: from %s ([%s])\r\n\tby %s (relayguard) with %s%s;\r\n\t%s\r\n",
		sanitizeHelo(ss.helo), ss.ip, ss.cfg.Hostname, proto, forClause, time.Now().Format(time.RFC1123Z))
	for _, h := range append(append([]string(nil), ss.sessPrepend...), ss.txPrepend...) {
		if strings.Contains(h, ":") {
			fmt.Fprintf(w, "%s\r\n", h)
		}
	}
}

func sanitizeHelo(h string) string {
	b := []byte(h)
	for i, c := range b {
		if c < 0x21 || c > 0x7e || c == '(' || c == ')' {
			b[i] = '_'
		}
	}
	if len(b) > 100 {
		b = b[:100]
	}
	return string(b)
}

// readData copies message data to w, removing dot-stuffing (RFC 5321
// §4.5.2), until the terminating <CRLF>.<CRLF>. Limits are enforced as it
// goes; after a size, line-length or NUL error it keeps reading (without
// storing) up to the final dot so that the session can go on. Data that
// began at start must be complete by its overall deadline (dataDeadline).
func (ss *session) readData(w io.Writer, start time.Time) error {
	var (
		maxSize = ss.cfg.Limits.MaxMessageSize
		maxLine = ss.cfg.Limits.MaxLineLength
		blockTO = ss.cfg.Limits.DataBlockTimeout.D()
		size    int64
		lineLen int
		atStart = true // at the start of a line
		prevCR  = false
		sticky  error
	)
	defer func() { ss.dataRead(start, size) }()
	for {
		// RFC 5321 §4.5.3.2.5: a timeout per data block, not per message,
		// so a large message on a slow link is not cut off.
		deadline, block := ss.dataDeadline(start, size), time.Now().Add(blockTO)
		if block.Before(deadline) {
			ss.conn.SetReadDeadline(block)
		} else {
			ss.conn.SetReadDeadline(deadline)
		}
		frag, err := ss.br.ReadSlice('\n')
		if err != nil && err != bufio.ErrBufferFull {
			if isTimeout(err) && !time.Now().Before(deadline) {
				return errDataDeadline
			}
			return err
		}
		if prevCR && len(frag) > 0 && frag[0] != '\n' {
			return errBareLF // CR at the end of the last fragment, not followed by LF
		}
		complete := err == nil // frag ends with '\n'
		if atStart && complete && len(frag) >= 2 && frag[0] == '.' {
			if len(frag) == 3 && frag[1] == '\r' {
				return sticky // end of data
			}
			if len(frag) == 2 {
				return errBareLF // ".\n"
			}
		}
		body := frag
		if atStart && len(body) > 0 && body[0] == '.' {
			body = body[1:] // dot-stuffing
		}
		// Bare LF: a line that ends in LF without CR. Bare CR: a CR not
		// followed by LF. Either would let a message smuggle a second one
		// past a downstream MTA that reads line ends differently.
		if complete {
			n := len(frag)
			if n < 2 || frag[n-2] != '\r' {
				if !(n == 1 && prevCR) {
					return errBareLF
				}
			}
		}
		if i := bytes.IndexByte(frag, '\r'); i >= 0 {
			for j := i; j < len(frag); j++ {
				if frag[j] == '\r' && j+1 < len(frag) && frag[j+1] != '\n' {
					return errBareLF
				}
			}
		}
		prevCR = !complete && len(frag) > 0 && frag[len(frag)-1] == '\r'
		if sticky == nil && bytes.IndexByte(frag, 0) >= 0 {
			sticky = errDataNUL
		}
		lineLen += len(body)
		if sticky == nil && lineLen > maxLine {
			sticky = errDataLineLong
		}
		size += int64(len(body))
		if sticky == nil && size > maxSize {
			sticky = errTooBig
		}
		if sticky == nil {
			if _, werr := w.Write(body); werr != nil {
				sticky = fmt.Errorf("%w: %v", errSpoolWrite, werr)
			}
		}
		atStart = complete
		if complete {
			lineLen = 0
		}
	}
}
