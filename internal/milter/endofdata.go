package milter

import (
	"bytes"
	"context"
	"io"
	"os"
	"strings"

	gomilter "github.com/emersion/go-milter"

	"github.com/relayguard/relayguard/internal/maillog"
	"github.com/relayguard/relayguard/internal/msgauth"
	"github.com/relayguard/relayguard/internal/policy"
)

// EndOfData is the policy engine's end-of-message stage
// (internal/policy.Engine with [policy] end_of_data_restrictions): with
// check_dmarc in that list, the milter gives Postfix's inbound mail the
// same SPF/DKIM/DMARC verdict, Authentication-Results field and DMARC
// enforcement as relayguard serve (docs/msgauth.md).
type EndOfData interface {
	Check(ctx context.Context, req *policy.Request) policy.Verdict
}

// memLimit is how much of a message is held in memory; the rest goes to
// an unlinked temporary file (the whole message is needed: the DKIM body
// hash covers all of it, and a forger must not pad a message past what we
// read).
const memLimit = 1 << 20

// eodState is what the end-of-message check needs of a message of an
// unauthenticated SMTP client.
type eodState struct {
	on   bool   // this message is checked
	helo string // of the connection
	mem  bytes.Buffer
	file *os.File // the message past memLimit
	size int64
	err  error // the content could not be kept
	body bool  // the empty line after the header was written
}

// Helo keeps the HELO name for SPF of the null sender (RFC 7208 §2.3).
func (m *message) Helo(name string, _ *gomilter.Modifier) (gomilter.Response, error) {
	m.eod.helo = name
	return gomilter.RespContinue, nil
}

// startEOD begins collecting a message for the end-of-message check.
func (m *message) startEOD() {
	m.eod.reset()
	m.eod.on = true
}

func (e *eodState) reset() {
	if e.file != nil {
		e.file.Close()
	}
	e.on, e.file, e.size, e.err, e.body = false, nil, 0, nil, false
	e.mem.Reset()
}

func (e *eodState) write(p []byte) {
	if e.err != nil {
		return
	}
	if e.file == nil && e.mem.Len()+len(p) > memLimit {
		f, err := os.CreateTemp("", "relayguard-milter-*")
		if err != nil {
			e.err = err
			return
		}
		os.Remove(f.Name()) // unlinked: gone with the descriptor
		e.file = f
		if _, e.err = f.Write(e.mem.Bytes()); e.err != nil {
			return
		}
		e.mem.Reset()
	}
	if e.file != nil {
		_, e.err = e.file.Write(p)
	} else {
		e.mem.Write(p)
	}
	e.size += int64(len(p))
}

func (e *eodState) open() (io.ReadCloser, error) {
	if e.err != nil {
		return nil, e.err
	}
	if e.file != nil {
		return io.NopCloser(io.NewSectionReader(e.file, 0, e.size)), nil
	}
	return io.NopCloser(bytes.NewReader(e.mem.Bytes())), nil
}

// eodHeader keeps a header field as it arrived (Postfix sends folded
// values with LF line ends and without the space after the colon; DKIM's
// relaxed header canonicalization does not see the difference, its simple
// one may).
func (m *message) eodHeader(name, value string) {
	v := strings.ReplaceAll(strings.ReplaceAll(value, "\r\n", "\n"), "\n", "\r\n")
	m.eod.write([]byte(name + ": " + v + "\r\n"))
}

// endHeader writes the empty line between header and body, once.
func (e *eodState) endHeader() {
	if !e.body {
		e.body = true
		e.write([]byte("\r\n"))
	}
}

// BodyChunk collects the body of a checked message (CRLF line ends, as
// the milter protocol carries it). No reply is sent (SMFIP_NR_BODY): a
// round trip saved per chunk.
func (m *message) BodyChunk(chunk []byte, _ *gomilter.Modifier) (gomilter.Response, error) {
	if m.eod.on {
		m.eod.endHeader()
		m.eod.write(chunk)
	}
	return nil, nil
}

// endOfData runs the end-of-message stage for an unauthenticated SMTP
// client's message and applies its verdict: a refusal is the SMTP reply;
// an accepted message loses the fields that arrived claiming our
// authserv-id (RFC 8601 §5) and gets the Authentication-Results field at
// the top and the quarantine tag when there is one.
func (m *message) endOfData(mod *gomilter.Modifier) gomilter.Response {
	defer m.eod.reset()
	m.eod.endHeader()
	req := &policy.Request{Stage: policy.StageEndOfData, ClientAddress: m.client, Helo: m.eod.helo,
		Sender: strings.Trim(m.from, "<>"), RecipientCount: m.nrcpt, QueueID: mod.Macros["i"], Listener: "milter",
		Message: m.eod.open}
	v := m.s.o.EndOfData.Check(m.ctx, req)
	switch v.Action {
	case policy.Reject:
		return m.refuse(maillog.MilterReject, v.Rule, v.Code, v.Enhanced, v.Text)
	case policy.Defer:
		return m.refuse(maillog.MilterTempfail, v.Rule, v.Code, v.Enhanced, v.Text)
	}
	// The quarantine tag first, so that our Authentication-Results field
	// ends on top of it, as relayguard serve writes them.
	if v.Prepend != "" {
		name, value, _ := strings.Cut(v.Prepend, ":")
		if err := mod.InsertHeader(0, name, milterValue(value)); err != nil {
			m.s.o.Log.Slog().Error("milter: adding "+name, "err", err)
		}
	}
	// The fields that arrived claiming our authserv-id are deleted by
	// their index among the Authentication-Results fields, from the last,
	// so that the indices hold (RFC 8601 §5), also from a message the list
	// let through before check_dmarc.
	id := v.AuthservID
	if id == "" {
		id = m.s.o.AuthservID
	}
	if rc, err := m.eod.open(); err == nil && id != "" {
		ours := msgauth.ClaimedAuthResults(rc, id)
		rc.Close()
		for i := len(ours) - 1; i >= 0; i-- {
			if err := mod.ChangeHeader(ours[i], "Authentication-Results", ""); err != nil {
				m.s.o.Log.Slog().Error("milter: deleting a forged Authentication-Results field", "err", err)
			}
		}
	}
	if v.AuthResults != "" {
		name, value, _ := strings.Cut(strings.TrimRight(v.AuthResults, "\r\n"), ":")
		if err := mod.InsertHeader(0, name, milterValue(value)); err != nil {
			m.s.o.Log.Slog().Error("milter: adding Authentication-Results", "err", err)
		}
	}
	return nil
}

// milterValue is a header value as the milter protocol carries it: LF
// line ends, no leading space (Postfix adds the one after the colon).
func milterValue(v string) string {
	return strings.ReplaceAll(strings.TrimLeft(v, " "), "\r\n", "\n")
}
