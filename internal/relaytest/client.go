package relaytest

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net"
	"net/textproto"
	"strconv"
	"strings"
	"time"
)

// client is a deliberately small SMTP client (RFC 5321) written over
// net/textproto instead of using net/smtp: net/smtp validates and brackets
// the addresses given to Mail and Rcpt itself, folds failing replies into
// errors, and has no way to send a malformed path verbatim. A relay tester
// must send exactly the bytes of each classic relay trick (percent hack,
// source routes, bang paths, stray quotes) and read every reply, code and
// text, whatever it is. This is the part no library does for us.
type client struct {
	ctx     context.Context
	nc      net.Conn
	tp      *textproto.Conn
	timeout time.Duration
	trace   func(dir, line string)
	stop    func() bool // detaches the context watcher

	ext    map[string]string // EHLO keywords (upper case) → parameters
	tls    bool
	errors int // 4xx/5xx replies received on this connection
	closed bool
}

// Reply is one SMTP reply: the three-digit code and its text, the lines of a
// multi-line reply (RFC 5321 4.2.1) joined with "\n".
type Reply struct {
	Code int    `json:"code"`
	Text string `json:"text"`
}

func (r Reply) String() string {
	return strconv.Itoa(r.Code) + " " + strings.ReplaceAll(r.Text, "\n", " / ")
}

// Exchange is one command and the reply it got.
type Exchange struct {
	Command string `json:"command"`
	Reply   Reply  `json:"reply"`
}

// errConnLost marks I/O failures after which the connection is unusable.
var errConnLost = errors.New("connection lost")

// dial opens the TCP connection (with implicit TLS, RFC 8314, when asked).
// The banner is read by greet.
func dial(ctx context.Context, o *Options, trace func(dir, line string)) (*client, error) {
	d := net.Dialer{Timeout: o.Timeout}
	if o.Source.IsValid() {
		d.LocalAddr = &net.TCPAddr{IP: o.Source.AsSlice()}
	}
	dialCtx, cancel := context.WithTimeout(ctx, o.Timeout)
	defer cancel()
	dialFn := d.DialContext
	if o.Dial != nil {
		dialFn = o.Dial
	}
	nc, err := dialFn(dialCtx, "tcp", o.Addr)
	if err != nil {
		return nil, err
	}
	c := &client{nc: nc, timeout: o.Timeout, trace: trace}
	if o.ImplicitTLS {
		tc := tls.Client(nc, tlsConfig(o))
		nc.SetDeadline(time.Now().Add(o.Timeout))
		if err := tc.HandshakeContext(ctx); err != nil {
			nc.Close()
			return nil, fmt.Errorf("TLS handshake with %s: %w", o.Addr, err)
		}
		c.nc, c.tls = tc, true
	}
	c.tp = textproto.NewConn(c.nc)
	c.ctx = ctx
	// Cancelling ctx interrupts a blocked read or write at once (on the TCP
	// connection, which also stops a TLS connection over it); cmd checks
	// ctx before it sets a new deadline.
	c.stop = context.AfterFunc(ctx, func() { nc.SetDeadline(time.Unix(1, 0)) })
	return c, nil
}

// tlsConfig skips certificate verification on purpose: the tester must be
// able to test any server, including ones with self-signed certificates, and
// it never sends a secret over the connection unless --auth is given.
func tlsConfig(o *Options) *tls.Config {
	sni := o.Host
	if ip := net.ParseIP(sni); ip != nil {
		sni = ""
	}
	return &tls.Config{InsecureSkipVerify: true, ServerName: sni} //nolint:gosec // see comment above
}

func (c *client) close() {
	if c.closed {
		return
	}
	c.closed = true
	c.stop()
	c.nc.Close()
}

// quit sends QUIT and closes, ignoring failures: the server may already be gone.
func (c *client) quit() {
	if !c.closed && c.ctx.Err() == nil {
		c.nc.SetDeadline(time.Now().Add(c.timeout))
		if c.tp.PrintfLine("QUIT") == nil {
			c.tr(">", "QUIT")
			c.readReply()
		}
	}
	c.close()
}

func (c *client) tr(dir, line string) {
	if c.trace != nil {
		c.trace(dir, line)
	}
}

// readReply reads one reply, multi-line ones included (RFC 5321 4.2.1:
// "ddd-text" continues, "ddd text" or "ddd" ends). Each line goes to the
// transcript as it arrives.
func (c *client) readReply() (Reply, error) {
	var r Reply
	var lines []string
	for {
		line, err := c.tp.ReadLine()
		if err != nil {
			c.close()
			if len(lines) > 0 {
				return r, fmt.Errorf("%w in the middle of a reply: %v", errConnLost, err)
			}
			return r, fmt.Errorf("%w: %v", errConnLost, err)
		}
		c.tr("<", line)
		if len(line) < 3 {
			c.close()
			return r, fmt.Errorf("malformed reply line %q", line)
		}
		code, err := strconv.Atoi(line[:3])
		if err != nil || code < 100 || code > 599 {
			c.close()
			return r, fmt.Errorf("malformed reply line %q", line)
		}
		r.Code = code
		more := len(line) > 3 && line[3] == '-'
		if len(line) > 4 {
			lines = append(lines, line[4:])
		} else {
			lines = append(lines, "")
		}
		if !more {
			break
		}
	}
	r.Text = strings.Join(lines, "\n")
	if r.Code >= 400 {
		c.errors++
	}
	if r.Code == 421 {
		// RFC 5321 3.8: the server is closing the transmission channel.
		c.close()
	}
	return r, nil
}

// cmd sends one command line verbatim and reads the reply. shown replaces the
// line in the transcript when it carries a secret.
func (c *client) cmd(line, shown string) (Reply, error) {
	if c.closed {
		return Reply{}, fmt.Errorf("%w: connection already closed", errConnLost)
	}
	if err := c.ctx.Err(); err != nil {
		c.close()
		return Reply{}, err
	}
	if shown == "" {
		shown = line
	}
	c.nc.SetDeadline(time.Now().Add(c.timeout))
	c.tr(">", shown)
	if err := c.tp.PrintfLine("%s", line); err != nil {
		c.close()
		return Reply{}, fmt.Errorf("%w: sending %q: %v", errConnLost, shown, err)
	}
	return c.readReply()
}

// greet reads the banner (RFC 5321 4.3.1: 220, or 554 for "no service").
func (c *client) greet() (Reply, error) {
	c.nc.SetDeadline(time.Now().Add(c.timeout))
	r, err := c.readReply()
	if err != nil {
		return r, &UntestableError{Reason: ReasonNoBanner, Err: err}
	}
	if r.Code != 220 {
		c.quit()
		return r, &UntestableError{Reason: ReasonRefused, Err: fmt.Errorf("banner %s", r)}
	}
	return r, nil
}

// hello sends EHLO, falling back to HELO when EHLO is refused (RFC 5321
// 4.1.4), and records the extensions offered.
func (c *client) hello(name string) (Reply, error) {
	r, err := c.cmd("EHLO "+name, "")
	if err != nil {
		return r, err
	}
	c.ext = map[string]string{}
	if r.Code/100 == 2 {
		lines := strings.Split(r.Text, "\n")
		for _, l := range lines[1:] {
			k, v, _ := strings.Cut(l, " ")
			c.ext[strings.ToUpper(k)] = v
		}
		return r, nil
	}
	if r.Code == 421 {
		return r, fmt.Errorf("%w: EHLO: %s", errConnLost, r)
	}
	r, err = c.cmd("HELO "+name, "")
	if err != nil {
		return r, err
	}
	if r.Code/100 != 2 {
		return r, fmt.Errorf("EHLO and HELO %s refused: %s", name, r)
	}
	return r, nil
}

func (c *client) has(ext string) bool { _, ok := c.ext[ext]; return ok }

// startTLS upgrades the connection (RFC 3207) and says EHLO again, since
// everything learned before TLS must be forgotten (RFC 3207 4.2).
func (c *client) startTLS(ctx context.Context, o *Options) (Reply, error) {
	r, err := c.cmd("STARTTLS", "")
	if err != nil {
		return r, err
	}
	if r.Code != 220 {
		return r, fmt.Errorf("STARTTLS refused: %s", r)
	}
	tc := tls.Client(c.nc, tlsConfig(o))
	c.nc.SetDeadline(time.Now().Add(c.timeout))
	if err := tc.HandshakeContext(ctx); err != nil {
		c.close()
		return r, fmt.Errorf("TLS handshake after STARTTLS: %w", err)
	}
	c.nc, c.tls = tc, true
	c.tp = textproto.NewConn(tc)
	c.tr("=", "TLS "+tls.VersionName(tc.ConnectionState().Version)+" "+tls.CipherSuiteName(tc.ConnectionState().CipherSuite))
	return c.hello(o.Helo)
}

// authPlain runs AUTH PLAIN (RFC 4954, RFC 4616) with an initial response.
// If the server asks for it again with an empty 334, it is sent once more.
func (c *client) authPlain(user, pass string) (Reply, error) {
	resp := base64.StdEncoding.EncodeToString([]byte("\x00" + user + "\x00" + pass))
	r, err := c.cmd("AUTH PLAIN "+resp, "AUTH PLAIN <credentials of "+user+">")
	if err != nil || r.Code != 334 {
		return r, err
	}
	return c.cmd(resp, "<credentials>")
}

// authLogin runs the non-standard but common AUTH LOGIN exchange.
func (c *client) authLogin(user, pass string) (Reply, error) {
	r, err := c.cmd("AUTH LOGIN", "")
	if err != nil || r.Code != 334 {
		return r, err
	}
	r, err = c.cmd(base64.StdEncoding.EncodeToString([]byte(user)), "<user "+user+">")
	if err != nil || r.Code != 334 {
		return r, err
	}
	return c.cmd(base64.StdEncoding.EncodeToString([]byte(pass)), "<password>")
}

// authenticate logs in with PLAIN when offered, else LOGIN, else tries PLAIN.
func (c *client) authenticate(user, pass string) (Reply, error) {
	mechs := " " + strings.ToUpper(c.ext["AUTH"]) + " "
	if !strings.Contains(mechs, " PLAIN ") && strings.Contains(mechs, " LOGIN ") {
		return c.authLogin(user, pass)
	}
	return c.authPlain(user, pass)
}

// bogusAuth attempts AUTH PLAIN with a random user and password that no
// server can know, so that the battery can be run again "after a failed
// AUTH" (some servers have been seen to relax checks once AUTH was tried).
func (c *client) bogusAuth() (Reply, error) {
	return c.authPlain("relaytest-"+randomLabel(8), randomLabel(16))
}

// data sends DATA and, when the server answers 354 (RFC 5321 4.1.1.4), the
// message (dot-stuffed by textproto's DotWriter); it returns the reply to
// DATA and the reply at the end of the message. sent is false when the
// server did not answer 354, in which case no message was sent and end is
// empty.
func (c *client) data(msg string) (cmd, end Reply, sent bool, err error) {
	r, err := c.cmd("DATA", "")
	if err != nil || r.Code != 354 {
		return r, Reply{}, false, err
	}
	c.nc.SetDeadline(time.Now().Add(c.timeout))
	w := c.tp.DotWriter()
	if _, err := io.WriteString(w, msg); err != nil {
		c.close()
		return r, Reply{}, true, fmt.Errorf("%w: writing message: %v", errConnLost, err)
	}
	if err := w.Close(); err != nil {
		c.close()
		return r, Reply{}, true, fmt.Errorf("%w: ending message: %v", errConnLost, err)
	}
	c.tr(">", "<test message, "+strconv.Itoa(len(msg))+" bytes>")
	c.tr(">", ".")
	end, err = c.readReply()
	return r, end, true, err
}

const lower = "abcdefghijklmnopqrstuvwxyz0123456789"

// randomLabel returns n random lower-case letters and digits.
func randomLabel(n int) string {
	b := make([]byte, n)
	rand.Read(b)
	for i := range b {
		b[i] = lower[int(b[i])%len(lower)]
	}
	return string(b)
}
