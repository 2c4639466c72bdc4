package deliver

import (
	"bufio"
	"context"
	"crypto/tls"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net"
	"net/textproto"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/emersion/go-sasl"
	"github.com/relayguard/relayguard/internal/dsn"
	"github.com/relayguard/relayguard/internal/queue"
)

// client is a small SMTP (RFC 5321) and LMTP (RFC 2033) client.
//
// It is written by hand on net/textproto because emersion/go-smtp's client
// neither pipelines commands (RFC 2920) nor lets the EHLO name be chosen
// before STARTTLS, and an MX that sees "EHLO localhost" may reject us. It
// still uses emersion/go-sasl for the AUTH exchange.
type client struct {
	conn    net.Conn
	text    *textproto.Conn
	ext     map[string]string
	lmtp    bool
	tls     bool
	timeout time.Duration
	peer    string // the name the server gave in its EHLO reply
	banner  string // the name the server gave in its greeting
	used    int    // transactions completed on this connection
	clean   bool   // the last transaction ended with its final reply
	// verifyErr is what authenticating the peer found when the policy
	// only reports it (MTA-STS testing)
	verifyErr error
}

// Reply is one SMTP reply.
type Reply struct {
	Code     int
	Enhanced string // RFC 3463 enhanced status code, "" if none
	Text     string
	lines    []string // raw text lines (EHLO keywords)
}

func (r Reply) String() string {
	return Result{Code: r.Code, Enhanced: r.Enhanced, Text: r.Text}.Error()
}

// (Compiled on first use, as every package-level expression of a package
// `relayguard report` does not use: their compiling was part of every
// command's start.)
var enhancedRE = sync.OnceValue(func() *regexp.Regexp { return regexp.MustCompile(`^([245]\.\d{1,3}\.\d{1,3})\s*`) })

// errProto is a broken conversation (I/O error, garbled reply).
type errProto struct{ err error }

func (e errProto) Error() string { return e.err.Error() }
func (e errProto) Unwrap() error { return e.err }

func newClient(conn net.Conn, lmtp bool, timeout time.Duration) *client {
	return &client{conn: conn, text: textproto.NewConn(conn), lmtp: lmtp, timeout: timeout}
}

func (c *client) deadline() { c.conn.SetDeadline(time.Now().Add(c.timeout)) }

// Reply size limits. RFC 5321 §4.5.3.1.5 allows 512 octets per reply line;
// peers exceed it, so a line may be several times longer, but a peer that
// never ends its line or its reply cannot make us buffer without bound.
const (
	maxReplyLine  = 4096
	maxReplyLines = 1000
)

// readReply reads one reply by the grammar of RFC 5321 §4.2:
//
//	Reply-line = *( Reply-code "-" [ textstring ] CRLF )
//	             Reply-code [ SP textstring ] CRLF
//
// It is written by hand because net/textproto's ReadResponse refuses a
// bare "250" (text is optional in RFC 5321), has no length limit, and
// fails on a multi-line reply whose lines disagree on the code (taken here,
// as by Postfix, from the last line). It returns the code and the text of
// the lines joined by "\n".
func readReply(br *bufio.Reader) (int, string, error) {
	var lines []string
	code := 0
	for n := 0; ; n++ {
		if n >= maxReplyLines {
			return 0, "", fmt.Errorf("reply longer than %d lines", maxReplyLines)
		}
		line, err := br.ReadSlice('\n')
		if errors.Is(err, bufio.ErrBufferFull) || len(line) > maxReplyLine {
			return 0, "", fmt.Errorf("reply line longer than %d octets", maxReplyLine)
		}
		if err != nil {
			if err == io.EOF && len(line) > 0 {
				err = io.ErrUnexpectedEOF
			}
			return 0, "", err
		}
		l := strings.TrimRight(string(line), "\r\n")
		if len(l) < 3 || l[0] < '2' || l[0] > '5' || l[1] < '0' || l[1] > '9' || l[2] < '0' || l[2] > '9' {
			return 0, "", fmt.Errorf("malformed reply line %q", truncateReply(l))
		}
		code, _ = strconv.Atoi(l[:3])
		more := len(l) > 3 && l[3] == '-'
		text := ""
		if len(l) > 3 {
			text = l[4:]
		}
		lines = append(lines, text)
		if !more {
			return code, strings.Join(lines, "\n"), nil
		}
	}
}

func truncateReply(s string) string {
	if len(s) > 80 {
		return s[:80] + "..."
	}
	return s
}

// dataEndTimeout is the least time allowed for the reply to the end of the
// message: RFC 5321 §4.5.3.2.6 asks for 10 minutes, since the server may
// be scanning the message; giving up sooner makes us send it again.
const dataEndTimeout = 10 * time.Minute

// reply reads one (possibly multi-line) reply.
func (c *client) reply() (Reply, error) {
	c.deadline()
	return c.readReply()
}

// dataEndReply reads a reply to the end of the message.
func (c *client) dataEndReply() (Reply, error) {
	c.conn.SetDeadline(time.Now().Add(max(c.timeout, dataEndTimeout)))
	return c.readReply()
}

func (c *client) readReply() (Reply, error) {
	code, msg, err := readReply(c.text.R)
	if err != nil {
		return Reply{}, errProto{fmt.Errorf("reading reply: %w", err)}
	}
	r := Reply{Code: code, lines: strings.Split(msg, "\n")}
	first, _, _ := strings.Cut(msg, "\n")
	if m := enhancedRE().FindStringSubmatch(first); m != nil {
		r.Enhanced = m[1]
		// Strip the enhanced code from every line.
		lines := strings.Split(msg, "\n")
		for i, l := range lines {
			lines[i] = enhancedRE().ReplaceAllString(l, "")
		}
		msg = strings.Join(lines, " / ")
	} else {
		msg = strings.ReplaceAll(msg, "\n", " / ")
	}
	r.Text = msg
	return r, nil
}

// cmd sends one command and reads its reply.
func (c *client) cmd(format string, args ...any) (Reply, error) {
	c.deadline()
	if err := c.text.PrintfLine(format, args...); err != nil {
		return Reply{}, errProto{fmt.Errorf("sending %s: %w", strings.Fields(format)[0], err)}
	}
	return c.reply()
}

// greet reads the banner.
func (c *client) greet() error {
	r, err := c.reply()
	if err != nil {
		return err
	}
	if r.Code != 220 {
		return &ReplyError{Stage: "greeting", Reply: r}
	}
	c.banner, _, _ = strings.Cut(strings.TrimSpace(r.lines[0]), " ")
	return nil
}

// ReplyError is a reply that ended a conversation step.
type ReplyError struct {
	Stage string
	Reply Reply
}

func (e *ReplyError) Error() string { return fmt.Sprintf("%s: %s", e.Stage, e.Reply) }

// hello sends EHLO (LHLO for LMTP) and, for SMTP, falls back to HELO when
// the server does not know EHLO (RFC 5321 §3.2).
func (c *client) hello(name string) error {
	verb := "EHLO"
	if c.lmtp {
		verb = "LHLO"
	}
	r, err := c.cmd("%s %s", verb, name)
	if err != nil {
		return err
	}
	if r.Code == 250 {
		c.peer, _, _ = strings.Cut(strings.TrimSpace(r.lines[0]), " ")
		c.ext = map[string]string{}
		// The first line is the greeting, the others are keywords (RFC 5321 §4.1.1.1).
		for _, l := range r.lines[1:] {
			k, v, _ := strings.Cut(l, " ")
			c.ext[strings.ToUpper(k)] = v
		}
		return nil
	}
	if c.lmtp || r.Code/100 != 5 {
		return &ReplyError{Stage: verb, Reply: r}
	}
	r, err = c.cmd("HELO %s", name)
	if err != nil {
		return err
	}
	if r.Code != 250 {
		return &ReplyError{Stage: "HELO", Reply: r}
	}
	c.ext = map[string]string{}
	return nil
}

func (c *client) has(ext string) bool { _, ok := c.ext[ext]; return ok }

// startTLS upgrades the connection (RFC 3207) and says EHLO again.
func (c *client) startTLS(cfg *tls.Config, name string) error {
	r, err := c.cmd("STARTTLS")
	if err != nil {
		return err
	}
	if r.Code != 220 {
		return &ReplyError{Stage: "STARTTLS", Reply: r}
	}
	tc := tls.Client(c.conn, cfg)
	c.deadline()
	if err := tc.Handshake(); err != nil {
		return &TLSError{Err: err}
	}
	c.conn = tc
	c.text = textproto.NewConn(tc)
	c.tls = true
	return c.hello(name)
}

// TLSError is a failed TLS handshake.
type TLSError struct{ Err error }

func (e *TLSError) Error() string { return "TLS handshake: " + e.Err.Error() }
func (e *TLSError) Unwrap() error { return e.Err }

// auth authenticates with PLAIN (RFC 4954, RFC 4616). Only called over TLS.
func (c *client) auth(user, pass string) error {
	if !c.tls {
		return errors.New("refusing to send AUTH credentials without TLS")
	}
	mechs := strings.Fields(strings.ToUpper(c.ext["AUTH"]))
	ok := false
	for _, m := range mechs {
		ok = ok || m == "PLAIN"
	}
	if !ok {
		return fmt.Errorf("server offers no AUTH PLAIN (offers %q)", c.ext["AUTH"])
	}
	_, ir, err := sasl.NewPlainClient("", user, pass).Start()
	if err != nil {
		return err
	}
	r, err := c.cmd("AUTH PLAIN %s", encodeBase64(ir))
	if err != nil {
		return err
	}
	if r.Code != 235 {
		return &ReplyError{Stage: "AUTH", Reply: r}
	}
	return nil
}

// txOptions are the MAIL parameters of one transaction.
type txOptions struct {
	Size     int64
	Body8Bit bool
	SMTPUTF8 bool
	// Chunking sends the message with BDAT (RFC 3030) when the peer
	// offers CHUNKING.
	Chunking bool
	// DSN parameters (RFC 3461), sent when the peer offers DSN.
	Ret, EnvID string
	DSN        []queue.RcptDSN
}

// txOptionsOf are the transaction options of a delivery request.
func txOptionsOf(req *Request, chunking bool) txOptions {
	return txOptions{Size: req.Size, Body8Bit: req.Body8Bit, SMTPUTF8: req.SMTPUTF8, Chunking: chunking,
		Ret: req.Ret, EnvID: req.EnvID, DSN: req.DSN}
}

// rcptParams are the RCPT parameters of recipient i: NOTIFY and ORCPT to a
// peer that offers DSN (RFC 3461 §4.1, §4.2; xtext-encoded).
func (c *client) rcptParams(o txOptions, i int) string {
	if !c.has("DSN") || i >= len(o.DSN) {
		return ""
	}
	var p string
	if n := o.DSN[i].Notify; n != "" {
		p += " NOTIFY=" + n
	}
	if oc := o.DSN[i].ORcpt; oc != "" {
		p += " ORCPT=" + dsn.EncodeORCPT(oc)
	}
	return p
}

// send runs one mail transaction: MAIL, RCPT for each recipient, DATA and
// the message. With PIPELINING (RFC 2920) MAIL, the RCPTs and DATA go out in
// one write. It returns one reply per recipient (for SMTP, the final reply
// to the message applies to every accepted recipient; for LMTP each accepted
// recipient gets its own, RFC 2033 §4.2). A non-nil error means the
// conversation broke; replies already received are returned with it and
// the remaining recipients have Code 0.
func (c *client) send(ctx context.Context, from string, rcpts []string, o txOptions, body io.Reader) ([]Reply, error) {
	c.clean = false
	// Reads do not watch ctx: on shutdown, end the connection instead of
	// waiting up to the command timeout for a stalled peer.
	defer context.AfterFunc(ctx, c.close)()
	mail := "MAIL FROM:<" + from + ">"
	if o.Size > 0 && c.has("SIZE") {
		mail += " SIZE=" + strconv.FormatInt(o.Size, 10)
	}
	if o.Body8Bit && c.has("8BITMIME") {
		mail += " BODY=8BITMIME" // RFC 6152
	}
	if o.SMTPUTF8 && c.has("SMTPUTF8") {
		mail += " SMTPUTF8" // RFC 6531 §3.4
	}
	if c.has("DSN") {
		// RFC 3461 §4.3, §4.4: passed on to a peer that offers DSN.
		if o.Ret != "" {
			mail += " RET=" + o.Ret
		}
		if o.EnvID != "" {
			mail += " ENVID=" + dsn.EncodeXtext(o.EnvID)
		}
	}
	chunking := o.Chunking && c.has("CHUNKING") && !c.lmtp
	out := make([]Reply, len(rcpts))
	pipe := c.has("PIPELINING")
	w := c.text.W

	var mailR Reply
	var err error
	rcptR := make([]Reply, len(rcpts))
	var dataR Reply
	if pipe {
		c.deadline()
		fmt.Fprintf(w, "%s\r\n", mail)
		for i, r := range rcpts {
			fmt.Fprintf(w, "RCPT TO:<%s>%s\r\n", r, c.rcptParams(o, i))
		}
		if !chunking {
			w.WriteString("DATA\r\n")
		}
		if err := w.Flush(); err != nil {
			return out, errProto{fmt.Errorf("sending MAIL: %w", err)}
		}
		if mailR, err = c.reply(); err != nil {
			return out, err
		}
		for i := range rcpts {
			if rcptR[i], err = c.reply(); err != nil {
				return notSent(fill(out, mailR, rcptR[:i])), err
			}
		}
		if chunking {
			dataR = Reply{Code: 354} // BDAT needs no go-ahead
		} else if dataR, err = c.reply(); err != nil {
			return notSent(fill(out, mailR, rcptR)), err
		}
	} else {
		if mailR, err = c.cmd("%s", mail); err != nil {
			return out, err
		}
		if mailR.Code != 250 {
			return fill(out, mailR, nil), nil
		}
		accepted := 0
		for i, r := range rcpts {
			if rcptR[i], err = c.cmd("RCPT TO:<%s>%s", r, c.rcptParams(o, i)); err != nil {
				return notSent(fill(out, mailR, rcptR[:i])), err
			}
			if rcptR[i].Code/100 == 2 {
				accepted++
			}
		}
		if accepted == 0 {
			c.reset()
			return fill(out, mailR, rcptR), nil
		}
		if chunking {
			dataR = Reply{Code: 354}
		} else if dataR, err = c.cmd("DATA"); err != nil {
			return notSent(fill(out, mailR, rcptR)), err
		}
	}
	if mailR.Code != 250 {
		if dataR.Code == 354 {
			// A pipelining peer that refused MAIL yet started DATA
			// (RFC 2920 §3.1): end the empty message so the session
			// is back at a command (RSET, QUIT) rather than in data.
			c.deadline()
			c.text.PrintfLine(".")
			c.reply()
		}
		return fill(out, mailR, nil), nil
	}
	fill(out, mailR, rcptR)
	var accepted []int
	for i, r := range rcptR {
		if r.Code/100 == 2 {
			accepted = append(accepted, i)
		}
	}
	if dataR.Code != 354 {
		for _, i := range accepted {
			out[i] = dataR
		}
		return out, nil
	}
	if len(accepted) == 0 && chunking {
		c.reset()
		return out, nil
	}
	if len(accepted) == 0 {
		// RFC 2920 §3.1: DATA was accepted though no RCPT was; send an
		// empty message body terminator and ignore the outcome.
		c.deadline()
		c.text.PrintfLine(".")
		c.reply()
		return out, nil
	}
	lost := func(err error) ([]Reply, error) {
		for _, i := range accepted {
			out[i] = Reply{}
		}
		return out, err
	}
	if chunking {
		// BDAT (RFC 3030): the reply to the last chunk is the final one.
		fin, err := c.sendChunks(ctx, body)
		if err != nil {
			return lost(err)
		}
		for _, i := range accepted {
			out[i] = fin
		}
		c.used++
		c.clean = true // a refused chunk was followed by RSET
		return out, nil
	}
	// The message: dot-stuffed (RFC 5321 §4.5.2) by textproto's DotWriter.
	dw := c.text.DotWriter()
	cw := &ctxWriter{ctx: ctx, c: c, w: dw}
	if _, err := io.Copy(cw, bufio.NewReaderSize(body, 64<<10)); err != nil {
		return lost(errProto{fmt.Errorf("sending message: %w", err)})
	}
	if err := dw.Close(); err != nil {
		return lost(errProto{fmt.Errorf("sending message end: %w", err)})
	}
	if !c.lmtp {
		fin, err := c.dataEndReply()
		if err != nil {
			return lost(err)
		}
		for _, i := range accepted {
			out[i] = fin
		}
		c.used++
		c.clean = true
		return out, nil
	}
	for n, i := range accepted {
		fin, err := c.dataEndReply()
		if err != nil {
			for _, j := range accepted[n:] {
				out[j] = Reply{}
			}
			return out, err
		}
		out[i] = fin
	}
	c.used++
	c.clean = true
	return out, nil
}

// fill sets out from the MAIL reply (when it failed) or the RCPT replies.
// notSent clears the accepting replies of a transaction whose connection
// was lost before the message was sent: a 250 to RCPT says nothing about
// the message, which must be tried again (only refusals stay).
func notSent(out []Reply) []Reply {
	for i := range out {
		if out[i].Code/100 == 2 {
			out[i] = Reply{}
		}
	}
	return out
}

func fill(out []Reply, mail Reply, rcpt []Reply) []Reply {
	for i := range out {
		switch {
		case mail.Code != 0 && mail.Code != 250:
			out[i] = mail
		case i < len(rcpt):
			out[i] = rcpt[i]
		}
	}
	return out
}

// ctxWriter stops a long message transfer when ctx is cancelled and keeps
// extending the write deadline while data flows.
type ctxWriter struct {
	ctx context.Context
	c   *client
	w   io.Writer
}

func (w *ctxWriter) Write(p []byte) (int, error) {
	if err := w.ctx.Err(); err != nil {
		return 0, err
	}
	w.c.deadline()
	return w.w.Write(p)
}

// reset sends RSET so the connection can carry another transaction.
func (c *client) reset() error {
	r, err := c.cmd("RSET")
	if err != nil {
		return err
	}
	if r.Code != 250 {
		return &ReplyError{Stage: "RSET", Reply: r}
	}
	return nil
}

// quit ends the session politely and closes the connection.
func (c *client) quit() {
	c.conn.SetDeadline(time.Now().Add(5 * time.Second))
	c.text.PrintfLine("QUIT")
	readReply(c.text.R)
	c.conn.Close()
}

func (c *client) close() { c.conn.Close() }

func encodeBase64(b []byte) string {
	if len(b) == 0 {
		return "="
	}
	return base64.StdEncoding.EncodeToString(b)
}

// chunkSize is the largest BDAT chunk sent.
const chunkSize = 1 << 20

// sendChunks sends the message with BDAT (RFC 3030 §2): chunks of up to
// chunkSize octets as they are (no dot-stuffing), the last one marked
// LAST, each answered before the next is sent. It returns the reply to
// the last chunk, or the first refusal (the peer drops the message then,
// and RSET ends the transaction).
func (c *client) sendChunks(ctx context.Context, body io.Reader) (Reply, error) {
	buf := make([]byte, chunkSize)
	br := bufio.NewReaderSize(body, 64<<10)
	for {
		n, rerr := io.ReadFull(br, buf)
		last := rerr == io.EOF || rerr == io.ErrUnexpectedEOF
		if rerr != nil && !last {
			return Reply{}, errProto{fmt.Errorf("reading message: %w", rerr)}
		}
		if !last {
			// A full buffer may be followed by nothing: look ahead, so
			// that the last chunk carries LAST rather than an empty
			// "BDAT 0 LAST" after it.
			if _, err := br.Peek(1); err == io.EOF {
				last = true
			}
		}
		if err := ctx.Err(); err != nil {
			return Reply{}, err
		}
		cmd := "BDAT " + strconv.Itoa(n)
		if last {
			cmd += " LAST"
		}
		c.deadline()
		w := c.text.W
		w.WriteString(cmd + "\r\n")
		w.Write(buf[:n])
		if err := w.Flush(); err != nil {
			return Reply{}, errProto{fmt.Errorf("sending BDAT: %w", err)}
		}
		var r Reply
		var err error
		if last {
			r, err = c.dataEndReply()
		} else {
			r, err = c.reply()
		}
		if err != nil {
			return Reply{}, err
		}
		if r.Code != 250 || last {
			if r.Code != 250 {
				c.reset()
			}
			return r, nil
		}
	}
}
