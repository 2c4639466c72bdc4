package smtpd

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
	"time"

	"github.com/relayguard/relayguard/internal/msgauth"
	"github.com/relayguard/relayguard/internal/policy"
	"github.com/relayguard/relayguard/internal/queue"
)

// bdatState is a message arriving in BDAT chunks (RFC 3030).
type bdatState struct {
	w      *queue.Writer
	ar     *msgauth.AuthResultsFilter
	chk    *chunkChecker
	failed *Reply // the refusal that ended the transaction; later chunks are read and refused the same way
	start  time.Time
}

// abortBDAT drops a message in progress (RSET, a new MAIL, the end of the
// session): nothing of it was acknowledged.
func (ss *session) abortBDAT() {
	if ss.bdat != nil && ss.bdat.w != nil {
		ss.bdat.w.Abort()
	}
	ss.bdat = nil
}

// cmdBdat handles BDAT size [LAST] (RFC 3030 §2). The chunk is read in
// full whatever the reply, so that the session stays in step with the
// client (the framing is by length, not by a terminator).
func (ss *session) cmdBdat(ctx context.Context, arg string) Reply {
	f := strings.Fields(arg)
	// chunk-size is 1*DIGIT (RFC 3030 §2): ParseInt alone also takes a
	// sign ("+5"), which a proxy or filter in front may read otherwise;
	// a framing that two parsers read differently is how SMTP smuggling
	// works.
	size, err := strconv.ParseInt(firstOr(f, ""), 10, 64)
	if len(f) == 0 || len(f) > 2 || err != nil || !allDigits(f[0]) || len(f) == 2 && !strings.EqualFold(f[1], "LAST") {
		// The size is unknown, so the chunk cannot be skipped: the
		// session cannot go on.
		return badCommand(501, "5.5.4", "Syntax: BDAT chunk-size [LAST]").closing()
	}
	last := len(f) == 2
	var refusal *Reply
	switch {
	case !ss.inTx:
		r := badCommand(503, "5.5.1", "Error: need MAIL command")
		refusal = &r
	case len(ss.rcpts) == 0:
		r := badCommand(554, "5.5.1", "Error: no valid recipients")
		refusal = &r
	case ss.bdat != nil && ss.bdat.failed != nil:
		r := *ss.bdat.failed
		refusal = &r
	case ss.bdat == nil:
		if r, refused := ss.bdatBegin(ctx); refused {
			refusal = &r
		}
	}
	if refusal != nil {
		if err := ss.discard(size); err != nil {
			ss.abortBDAT()
			return ss.lost(ctx, err)
		}
		if ss.bdat != nil && ss.bdat.failed == nil {
			ss.bdat.failed = refusal
		}
		if last {
			ss.abortBDAT()
			ss.resetTx()
		}
		return *refusal
	}
	b := ss.bdat
	began := time.Now()
	if err := ss.readChunk(b.chk, size); err != nil {
		ss.abortBDAT()
		return ss.lost(ctx, err)
	}
	if !ss.budgetEnd.IsZero() {
		ss.budgetEnd = ss.budgetEnd.Add(time.Since(began)) // message data is not command time
	}
	if !last {
		return reply(250, "2.0.0", fmt.Sprintf("Ok: %d octets received", size))
	}
	derr := b.chk.finish()
	if derr == nil {
		if err := b.ar.Close(); err != nil {
			derr = fmt.Errorf("%w: %v", errSpoolWrite, err)
		}
	}
	if b.ar.Removed > 0 {
		ss.log.Info("removed forged Authentication-Results", "authserv_id", ss.cfg.AuthservID, "fields", b.ar.Removed)
	}
	r := ss.complete(ctx, b.w, derr, true)
	if r.Code != 250 {
		b.w.Abort()
	}
	ss.bdat = nil
	if !r.Close {
		ss.resetTx()
	}
	return r
}

// bdatBegin runs the checks DATA runs before the message and opens the
// spool file, for the first chunk of a message.
func (ss *session) bdatBegin(ctx context.Context) (Reply, bool) {
	ss.bdat = &bdatState{start: time.Now()}
	if ss.s.deps.Limits != nil && (ss.authUser != "" || ss.trusted) {
		if err := ss.s.deps.Limits.Message(ctx, ss.sender(), len(ss.rcpts)); err != nil {
			return refuse(451, "4.7.1", "rate_limit", oneLine(err.Error())), true
		}
	}
	if ss.s.deps.Policy != nil {
		if r, refused := ss.policyCheck(ctx, ss.request(policy.StageData, "")); refused {
			return r, true
		}
	}
	w, err := ss.s.deps.Spool.Create("")
	if err != nil {
		return localFailure(451, "4.3.0", "spool_write", "Error: queue file write error", fmt.Errorf("spool create: %w", err)), true
	}
	ss.writeReceived(w)
	ss.bdat.w = w
	ss.bdat.ar = msgauth.NewAuthResultsFilter(w, ss.cfg.AuthservID)
	ss.bdat.chk = &chunkChecker{w: ss.bdat.ar, maxSize: ss.cfg.Limits.MaxMessageSize, maxLine: ss.cfg.Limits.MaxLineLength}
	return Reply{}, false
}

// lost is the reply when reading a chunk failed (timeout, connection gone).
func (ss *session) lost(ctx context.Context, err error) Reply {
	if errors.Is(err, errDataDeadline) {
		return ss.dataDeadlineReply()
	}
	ss.s.ml.LostConnection(ctx, ss.logConn(), "BDAT")
	if isTimeout(err) {
		return reply(421, "4.4.2", ss.cfg.Hostname+" Error: timeout exceeded").closing()
	}
	return hangUp
}

// blockReader reads a chunk from the session with a fresh read deadline
// for every block (RFC 5321 §4.5.3.2.5 applied to chunks: a large chunk on
// a slow link is not cut off, a stalled client is), but never past the
// overall deadline of message data (dataDeadline), so that a chunk
// trickled a byte at a time is cut as a trickled DATA is.
type blockReader struct {
	ss    *session
	start time.Time
	n     int64
}

func (r *blockReader) Read(p []byte) (int, error) {
	deadline := r.ss.dataDeadline(r.start, r.n)
	if block := time.Now().Add(r.ss.cfg.Limits.DataBlockTimeout.D()); block.Before(deadline) {
		r.ss.conn.SetReadDeadline(block)
	} else {
		r.ss.conn.SetReadDeadline(deadline)
	}
	n, err := r.ss.br.Read(p)
	r.n += int64(n)
	if err != nil && isTimeout(err) && !time.Now().Before(deadline) {
		err = errDataDeadline
	}
	return n, err
}

// readChunk copies size octets of chunk data into w.
func (ss *session) readChunk(w io.Writer, size int64) error {
	r := &blockReader{ss: ss, start: time.Now()}
	defer func() { ss.dataRead(r.start, r.n) }()
	n, err := io.CopyN(w, r, size)
	if err == nil && n != size {
		err = io.ErrUnexpectedEOF
	}
	if errors.Is(err, io.EOF) {
		err = io.ErrUnexpectedEOF
	}
	return err
}

// discard reads and drops size octets of chunk data.
func (ss *session) discard(size int64) error { return ss.readChunk(io.Discard, size) }

func firstOr(f []string, def string) string {
	if len(f) > 0 {
		return f[0]
	}
	return def
}

// chunkChecker applies DATA's limits to a message that arrives in chunks:
// size, line length (CRLF included), NUL, and bare CR or LF (lines must
// end in CRLF; RFC 3030 allows other content only with BINARYMIME, which
// is not offered). After the first problem it stops storing but goes on
// counting, so that the chunk is still consumed.
type chunkChecker struct {
	w       io.Writer
	maxSize int64
	maxLine int
	size    int64
	lineLen int
	prevCR  bool
	sticky  error
}

func (c *chunkChecker) Write(p []byte) (int, error) {
	if c.sticky == nil {
		for _, b := range p {
			switch {
			case c.prevCR && b != '\n', b == '\n' && !c.prevCR:
				c.sticky = errBareLF
			case b == 0:
				c.sticky = errDataNUL
			}
			c.prevCR = b == '\r'
			c.lineLen++
			if b == '\n' {
				c.lineLen = 0
			} else if c.lineLen+1 > c.maxLine && c.sticky == nil {
				c.sticky = errDataLineLong
			}
			if c.sticky != nil {
				break
			}
		}
	}
	c.size += int64(len(p))
	if c.sticky == nil && c.size > c.maxSize {
		c.sticky = errTooBig
	}
	if c.sticky == nil {
		if _, err := c.w.Write(p); err != nil {
			c.sticky = fmt.Errorf("%w: %v", errSpoolWrite, err)
		}
	}
	return len(p), nil
}

// finish ends the message: what went wrong, or nil. A message whose last
// line lacks its CRLF gets one, as Postfix does, so that it can be relayed
// with DATA.
func (c *chunkChecker) finish() error {
	if c.sticky != nil {
		return c.sticky
	}
	if c.prevCR {
		return errBareLF
	}
	if c.lineLen > 0 {
		if _, err := c.w.Write([]byte("\r\n")); err != nil {
			return fmt.Errorf("%w: %v", errSpoolWrite, err)
		}
	}
	return nil
}

// allDigits reports whether s is one or more ASCII digits.
func allDigits(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return s != ""
}
