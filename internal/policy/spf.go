package policy

import (
	"context"
	"fmt"
	"net"
	"strings"

	"blitiri.com.ar/go/spf"
)

// spf is check_spf: RFC 7208 through blitiri.com.ar/go/spf with the
// engine's resolver. Replies use the RFC 7372 §3.2 enhanced codes; a
// temperror is a 451, never a pass.
func (e *Engine) spf(ctx context.Context, req *Request) Verdict {
	ip := req.ClientAddress.Unmap()
	if !ip.IsValid() || (req.Sender == "" && req.Helo == "") {
		return dunno
	}
	if st := stageOf(req.Stage); st == StageConnect || st == StageHelo {
		return dunno // no MAIL FROM yet
	}
	helo := strings.TrimSuffix(req.Helo, ".")
	res, err := e.spfResult(ctx, req)
	identity := req.Sender
	if identity == "" {
		identity = "postmaster@" + helo
	}
	c := e.pol.SPF
	header := func() Verdict {
		if !c.Header {
			return dunno
		}
		// RFC 7208 §9.1 Received-SPF.
		comment := ""
		if err != nil {
			comment = " (" + commentText(printable(err.Error())) + ")"
		}
		return Verdict{Action: Dunno, Prepend: fmt.Sprintf("Received-SPF: %s%s client-ip=%s; envelope-from=%s; helo=%s;",
			res, comment, ip, kvValue(printable(req.Sender)), kvValue(printable(helo)))}
	}
	switch res {
	case spf.Fail:
		if c.RejectFail {
			return reject(550, "5.7.23", "SPF fail: %s is not allowed to send mail from [%s]", printable(identity), ip)
		}
	case spf.SoftFail:
		if c.RejectSoftfail {
			return reject(550, "5.7.23", "SPF softfail: %s is not allowed to send mail from [%s]", printable(identity), ip)
		}
	case spf.TempError:
		if c.TempError == "defer" {
			return deferIfPermit(451, "4.7.24", "SPF temporary error for %s: %s", printable(identity), errText(err))
		}
	case spf.PermError:
		if c.PermError == "reject" {
			return reject(550, "5.7.24", "SPF permanent error for %s: %s", printable(identity), errText(err))
		}
	}
	return header()
}

// spfResult evaluates SPF for the session of req (RFC 7208 §2.3: MAIL
// FROM, or the HELO identity for the null sender).
func (e *Engine) spfResult(ctx context.Context, req *Request) (spf.Result, error) {
	ip := req.ClientAddress.Unmap()
	if !ip.IsValid() || (req.Sender == "" && req.Helo == "") {
		return spf.None, nil
	}
	return spf.CheckHostWithSender(net.IP(ip.AsSlice()), strings.TrimSuffix(req.Helo, "."), req.Sender,
		spf.WithContext(ctx), spf.WithResolver(e.res))
}

func errText(err error) string {
	if err == nil {
		return "unknown"
	}
	return printable(err.Error())
}

// kvValue renders a Received-SPF key-value value (RFC 7208 §9.1:
// dot-atom / quoted-string, RFC 5322 §3.2.3, §3.2.4): an address such as
// a@example.com has an "@" and must be quoted.
func kvValue(v string) string {
	dotAtom := v != "" && !strings.HasPrefix(v, ".") && !strings.HasSuffix(v, ".") && !strings.Contains(v, "..")
	for _, c := range v {
		if !dotAtom {
			break
		}
		dotAtom = c == '.' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || strings.ContainsRune("!#$%&'*+-/=?^_`{|}~", c)
	}
	if dotAtom {
		return v
	}
	return `"` + strings.NewReplacer(`\`, `\\`, `"`, `\"`).Replace(v) + `"`
}

// commentText escapes what would end or nest an RFC 5322 comment.
func commentText(s string) string {
	return strings.NewReplacer(`\`, `\\`, "(", `\(`, ")", `\)`).Replace(s)
}
