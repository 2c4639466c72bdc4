package policy

import (
	"context"
	"fmt"
	"strings"

	"github.com/relayguard/relayguard/internal/config"
	"github.com/relayguard/relayguard/internal/msgauth"
)

// dmarc is check_dmarc: at END-OF-MESSAGE, SPF (RFC 7208) for the
// session, every DKIM signature (RFC 6376) and DMARC (RFC 7489) for the
// From: domain, recorded in one Authentication-Results field (RFC 8601);
// then what [policy.dmarc] says for a failing message of a domain that
// publishes p=reject or p=quarantine. Verification is internal/msgauth's
// (on go-msgauth) with the engine's resolver.
func (e *Engine) dmarc(ctx context.Context, req *Request) Verdict {
	if stageOf(req.Stage) != StageEndOfData || req.Message == nil {
		return dunno // no message to look at (the Postfix policy service never has one)
	}
	c := e.pol.DMARC
	id := c.ID(e.site.Hostname)
	sr, serr := e.spfResult(ctx, req)
	spf := msgauth.SPF{Result: string(sr), MailFrom: req.Sender, Helo: strings.TrimSuffix(req.Helo, ".")}
	if serr != nil && (sr == "temperror" || sr == "permerror") {
		spf.Reason = printable(serr.Error())
	}
	rc, err := req.Message()
	if err != nil {
		e.log.Error("check_dmarc: cannot read the message", "queue_id", req.QueueID, "err", err)
		return Verdict{Action: Defer, Code: 451, Enhanced: "4.3.0", Text: "Temporary failure reading the message"}
	}
	defer rc.Close()
	res, err := msgauth.Verify(ctx, e.res.LookupTXT, rc, spf)
	if err != nil {
		e.log.Error("check_dmarc: cannot read the message", "queue_id", req.QueueID, "err", err)
		return Verdict{Action: Defer, Code: 451, Enhanced: "4.3.0", Text: "Temporary failure reading the message"}
	}
	e.m.dmarc.WithLabelValues(res.DMARC.Result, dispositionLabel(res.DMARC)).Inc()
	d := res.DMARC
	accept := Verdict{Action: Dunno, AuthResults: res.Header(id), AuthservID: id}
	switch d.Result {
	case msgauth.TempError:
		if c.TempError == "defer" {
			v := deferIfPermit(451, "4.7.1", "DMARC temporary error for %s: %s", printable(d.Domain), printable(d.Reason))
			return v
		}
		return accept
	case msgauth.Fail:
	default:
		return accept
	}
	action := config.DMARCNone
	switch d.Disposition {
	case config.DMARCReject:
		action = c.Reject
	case config.DMARCQuarantine:
		action = c.Quarantine
	}
	switch action {
	case config.DMARCReject:
		return reject(550, "5.7.1", "Message rejected by the DMARC policy of %s (p=%s): neither SPF nor DKIM authenticate the From: domain", printable(d.Domain), d.Policy)
	case config.DMARCQuarantine:
		accept.Prepend = fmt.Sprintf("X-Relayguard-Quarantine: dmarc=fail header.from=%s policy.dmarc=%s", printable(d.Domain), d.Policy)
	}
	return accept
}

func dispositionLabel(d msgauth.DMARC) string {
	if d.Disposition == "" {
		return "none"
	}
	return d.Disposition
}
