package queue

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io"
	"regexp"
	"strings"
	"sync"
	"time"

	"github.com/relayguard/relayguard/internal/dsn"
)

type dsnKind int

const (
	dsnFailed dsnKind = iota
	dsnDelayed
	dsnSuccess // RFC 3461 NOTIFY=SUCCESS: delivered, or relayed to a peer without DSN
)

// notifyKeyword is the NOTIFY keyword that asks for a notice of kind.
func (k dsnKind) notifyKeyword() string {
	switch k {
	case dsnDelayed:
		return dsn.Delay
	case dsnSuccess:
		return dsn.Success
	}
	return dsn.Failure
}

// BounceAllowed says whether a delivery status notification may go to the
// sender of env, and why not. Notifications go only to senders we know are
// real: authenticated users and local submissions (and, when configured,
// trusted-network hosts). Never to the null sender (RFC 5321 §4.5.5), and
// never for mail that came in over the MX listener: its recipients were
// checked at RCPT time, so a later failure would be backscatter to a
// possibly forged sender; it is logged and dropped.
func BounceAllowed(env *Envelope, bounceTrusted bool) (bool, string) {
	switch {
	case env.From == "":
		return false, "null sender"
	case env.AuthUser != "":
		return true, ""
	case env.Mode == "local":
		return true, ""
	case env.Trusted && bounceTrusted:
		return true, ""
	case env.Mode == "mx":
		return false, "accepted on the MX listener from an unauthenticated sender (no backscatter)"
	}
	return false, "sender is neither authenticated nor local"
}

// notify queues a DSN (RFC 3464) about rcpts to env's sender, when allowed.
// It fails only when an allowed notice could not be spooled.
func (s *Scheduler) notify(env *Envelope, rcpts []Recipient, kind dsnKind) error {
	// RFC 3461 §4.1: only the recipients whose NOTIFY asks for this kind
	// (FAILURE and DELAY when NOTIFY was not given; none for NEVER).
	var want []Recipient
	for _, r := range rcpts {
		if dsn.Wants(r.Notify, kind.notifyKeyword()) {
			want = append(want, r)
		}
	}
	if len(want) < len(rcpts) {
		s.log.Info("queue: notice not asked for (NOTIFY)", "id", env.ID, "kind", kind.notifyKeyword(), "recipients", len(rcpts)-len(want))
	}
	if rcpts = want; len(rcpts) == 0 {
		return nil
	}
	ok, why := BounceAllowed(env, s.c().cfg.BounceTrusted)
	addrs := make([]string, len(rcpts))
	for i, r := range rcpts {
		addrs[i] = r.Addr
	}
	if !ok {
		s.log.Warn("queue: no delivery status notification", "id", env.ID, "from", env.From, "rcpts", addrs, "reason", why)
		s.metrics.dsn.WithLabelValues("suppressed").Inc()
		return nil
	}
	msg, err := s.buildDSN(env, rcpts, kind)
	if err != nil {
		s.log.Error("queue: building DSN", "id", env.ID, "err", err)
		return err
	}
	notice := &Envelope{
		From:       "",
		Recipients: []Recipient{{Addr: env.From}},
		Mode:       "local",
		Listener:   "dsn",
		Trusted:    true,
		SMTPUTF8:   !isASCII(env.From),
		// The notice quotes the original header (or message), which may be
		// 8-bit though its sender never said BODY=8BITMIME: declare what
		// is really there (RFC 6152).
		Body8Bit: !isASCII(string(msg)),
	}
	id, err := s.spool.Put(context.Background(), notice, bytes.NewReader(msg))
	if err != nil {
		s.log.Error("queue: spooling DSN", "id", env.ID, "err", err)
		return err
	}
	s.ml.DSNQueued(context.Background(), env.ID, id, env.From, len(addrs), int64(len(msg)))
	s.metrics.dsn.WithLabelValues("sent").Inc()
	return nil
}

// (Compiled on first use, as every package-level expression of a package
// `relayguard report` does not use: their compiling was part of every
// command's start.)
var enhancedInError = sync.OnceValue(func() *regexp.Regexp { return regexp.MustCompile(`\b([245]\.\d{1,3}\.\d{1,3})\b`) })

func isASCII(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] >= 0x80 {
			return false
		}
	}
	return true
}

// buildDSN renders a multipart/report (RFC 6522) with a human part, a
// message/delivery-status part (RFC 3464 §2) and the original header (or
// the whole message when bounce_include_body is set).
func (s *Scheduler) buildDSN(env *Envelope, rcpts []Recipient, kind dsnKind) ([]byte, error) {
	var rb [12]byte
	rand.Read(rb[:])
	boundary := "=_rg_" + hex.EncodeToString(rb[:])
	from := s.c().cfg.BounceFrom
	if from == "" {
		from = "MAILER-DAEMON@" + s.c().hostname
	}
	now := s.now()
	var b bytes.Buffer
	w := func(format string, a ...any) { fmt.Fprintf(&b, format+"\r\n", a...) }
	subject, action := "Undelivered Mail Returned to Sender", "failed"
	switch kind {
	case dsnDelayed:
		subject, action = "Delayed Mail (still being retried)", "delayed"
	case dsnSuccess:
		subject = "Successful Mail Delivery Report"
	}
	w("From: Mail Delivery System <%s>", from)
	w("To: <%s>", env.From)
	w("Subject: %s", subject)
	w("Date: %s", now.Format(time.RFC1123Z))
	w("Message-ID: <%s.%s@%s>", env.ID, hex.EncodeToString(rb[:4]), s.c().hostname)
	w("Auto-Submitted: auto-replied") // RFC 3834 §5
	w("MIME-Version: 1.0")
	w("Content-Type: multipart/report; report-type=delivery-status;")
	w("\tboundary=\"%s\"", boundary)
	w("")
	w("This is a MIME-encapsulated message.")
	w("")
	w("--%s", boundary)
	w("Content-Type: text/plain; charset=utf-8")
	w("Content-Transfer-Encoding: 8bit")
	w("")
	w("This is the mail system at host %s.", s.c().hostname)
	w("")
	switch kind {
	case dsnFailed:
		w("Your message could not be delivered to one or more recipients.")
		w("It is attached below. The errors were:")
	case dsnDelayed:
		w("Your message has not yet been delivered to the recipients below.")
		w("The mail system will keep trying until %s; no action is needed.",
			env.Received.Add(s.c().cfg.MaxQueueLifetime.D()).Format(time.RFC1123Z))
	case dsnSuccess:
		w("Your message was delivered to the recipients below, as you asked")
		w("(\"relayed\": passed to a server that sends no further notices).")
	}
	w("")
	for _, r := range rcpts {
		if kind == dsnSuccess {
			w("<%s>: %s", r.Addr, r.success)
			continue
		}
		w("<%s>: %s", r.Addr, oneLine(r.LastError))
	}
	w("")
	w("--%s", boundary)
	w("Content-Type: message/delivery-status")
	w("")
	// Per-message fields (RFC 3464 §2.2).
	if env.DSNEnvID != "" {
		// RFC 3464 §2.2.1: the ENVID, decoded from xtext (as Postfix writes it).
		w("Original-Envelope-Id: %s", oneLine(env.DSNEnvID))
	}
	w("Reporting-MTA: dns; %s", s.c().hostname)
	w("X-Relayguard-Queue-ID: %s", env.ID)
	w("Arrival-Date: %s", env.Received.Format(time.RFC1123Z))
	for _, r := range rcpts {
		// Per-recipient fields (RFC 3464 §2.3).
		w("")
		if r.ORcpt != "" {
			typ, addr, _ := strings.Cut(r.ORcpt, ";")
			w("Original-Recipient: %s; %s", typ, addr) // RFC 3464 §2.3.1, from ORCPT
		}
		if isASCII(r.Addr) {
			w("Final-Recipient: rfc822; %s", r.Addr)
		} else {
			w("Final-Recipient: utf-8; %s", r.Addr) // RFC 6533 §3
		}
		if kind == dsnSuccess {
			w("Action: %s", r.success)
			w("Status: 2.0.0")
			if host, _, ok := strings.Cut(r.LastError, ": "); ok && host != "" && !strings.ContainsAny(host, " ") {
				w("Remote-MTA: dns; %s", host)
			}
			continue
		}
		w("Action: %s", action)
		w("Status: %s", statusOf(r, kind))
		if host, _, ok := strings.Cut(r.LastError, ": "); ok && r.LastCode != 0 && !strings.ContainsAny(host, " ") {
			w("Remote-MTA: dns; %s", host)
		}
		if r.LastCode != 0 {
			w("Diagnostic-Code: smtp; %s", oneLine(diagnostic(r.LastError)))
		} else if r.LastError != "" {
			w("Diagnostic-Code: X-Relayguard; %s", oneLine(r.LastError))
		}
		if !r.Updated.IsZero() {
			w("Last-Attempt-Date: %s", r.Updated.Format(time.RFC1123Z))
		}
		if kind == dsnDelayed {
			w("Will-Retry-Until: %s", env.Received.Add(s.c().cfg.MaxQueueLifetime.D()).Format(time.RFC1123Z))
		}
	}
	w("")
	w("--%s", boundary)
	if err := s.appendOriginal(&b, env, boundary, w); err != nil {
		return nil, err
	}
	w("")
	w("--%s--", boundary)
	return b.Bytes(), nil
}

// appendOriginal quotes the message: whole with RET=FULL, its header with
// RET=HDRS (RFC 3461 §4.3), as bounce_include_body says without RET.
func (s *Scheduler) appendOriginal(b *bytes.Buffer, env *Envelope, boundary string, w func(string, ...any)) error {
	rc, err := s.spool.Open(env.ID)
	if err != nil {
		return err
	}
	defer rc.Close()
	full := s.c().cfg.BounceIncludeBody
	switch env.DSNRet {
	case dsn.Full:
		full = true
	case dsn.Hdrs:
		full = false
	}
	if full {
		w("Content-Type: message/rfc822")
		w("")
		_, err := io.Copy(b, rc)
		return err
	}
	w("Content-Type: text/rfc822-headers")
	w("")
	br := bufio.NewReader(rc)
	for n := 0; n < 1<<20; {
		line, err := br.ReadString('\n')
		if strings.TrimRight(line, "\r\n") == "" {
			break
		}
		n += len(line)
		b.WriteString(line)
		if err != nil {
			b.WriteString("\r\n")
			break
		}
	}
	return nil
}

// statusOf is the RFC 3463 status of a recipient: the enhanced code of its
// last reply when there is one, else a generic one for the reply class.
func statusOf(r Recipient, kind dsnKind) string {
	if kind == dsnFailed && strings.HasPrefix(r.LastError, expiredPrefix) {
		return "4.4.7" // RFC 3463: delivery time expired
	}
	if m := enhancedInError().FindStringSubmatch(r.LastError); m != nil {
		if kind == dsnFailed && m[1][0] == '5' || kind == dsnDelayed && m[1][0] == '4' {
			return m[1]
		}
		if kind == dsnFailed && m[1][0] == '4' {
			// A temporary error that outlived the queue lifetime.
			return "4.4.7"
		}
	}
	if kind == dsnDelayed {
		return "4.0.0"
	}
	return "5.0.0"
}

// diagnostic strips the "host: " prefix from a stored error.
func diagnostic(e string) string {
	if _, rest, ok := strings.Cut(e, ": "); ok && len(rest) > 3 && rest[0] >= '2' && rest[0] <= '5' {
		return rest
	}
	return e
}

func oneLine(s string) string {
	return strings.NewReplacer("\r", " ", "\n", " ").Replace(s)
}
