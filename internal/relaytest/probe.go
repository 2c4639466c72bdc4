package relaytest

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"
)

// ProbeResult is what one session tells about a server besides relaying:
// what it offers before and after TLS, its certificate, whether VRFY and
// EXPN answer, and whether it takes mail without AUTH.
type ProbeResult struct {
	Addr       string   `json:"addr"`
	Banner     Reply    `json:"banner"`
	Extensions []string `json:"extensions"` // EHLO keywords before TLS (under TLS with ImplicitTLS)
	// AuthPlain lists the AUTH mechanisms offered without TLS (empty with
	// ImplicitTLS or when AUTH waits for TLS, RFC 4954 4 / RFC 3207 5).
	AuthPlain []string `json:"auth_before_tls,omitempty"`
	STARTTLS  bool     `json:"starttls"`
	// TLS is the session's TLS state after STARTTLS or with ImplicitTLS;
	// nil when there was none (not offered, or the handshake failed:
	// TLSError says why).
	TLS           *TLSInfo `json:"tls,omitempty"`
	TLSError      string   `json:"tls_error,omitempty"`
	ExtensionsTLS []string `json:"extensions_tls,omitempty"` // EHLO keywords after STARTTLS
	AuthTLS       []string `json:"auth_tls,omitempty"`
	VRFY          Reply    `json:"vrfy"` // VRFY of ProbeOptions.Verify, before TLS
	// VRFYUnknown is the reply to VRFY of a local part nobody has: a
	// server that answers 252 to both confirms nothing; one that answers
	// 252 for postmaster and 550 here tells real addresses from others.
	VRFYUnknown Reply `json:"vrfy_unknown"`
	EXPN        Reply `json:"expn"`
	// NoAuthRcpt is the reply to RCPT TO:<ProbeOptions.LocalRcpt> from an
	// outside sender without AUTH (over TLS when offered); zero when not
	// asked.
	NoAuthRcpt Reply `json:"no_auth_rcpt"`
	// LocalRcpt is the recipient NoAuthRcpt asked for.
	LocalRcpt string `json:"local_rcpt,omitempty"`
}

// TLSInfo is a TLS session's version and the server's certificate chain.
type TLSInfo struct {
	Version string              `json:"version"`
	Cipher  string              `json:"cipher"`
	Chain   []*x509.Certificate `json:"-"`
	// Leaf describes Chain[0].
	Subject  string    `json:"subject"`
	Issuer   string    `json:"issuer"`
	DNSNames []string  `json:"dns_names,omitempty"`
	NotAfter time.Time `json:"not_after"`
}

// ProbeOptions say what else to ask in the probe session.
type ProbeOptions struct {
	// Verify is the address VRFY and EXPN ask about (default postmaster).
	Verify string
	// LocalRcpt, when set, is a local recipient tried without AUTH from an
	// outside sender (Options.From): a submission port must refuse it.
	LocalRcpt string
}

// Probe opens one session to o.Addr and records what the server offers:
// banner, EHLO keywords and AUTH mechanisms before TLS, then (after
// STARTTLS, or from the start with o.ImplicitTLS) the TLS version, the
// certificate and the keywords under TLS; VRFY and EXPN before TLS; and,
// with p.LocalRcpt, whether a local recipient is taken without AUTH. The
// error is an *UntestableError when the peer does not speak SMTP.
func Probe(ctx context.Context, o Options, p ProbeOptions) (*ProbeResult, error) {
	if o.Helo == "" {
		o.Helo = DefaultHelo
	}
	if o.From == "" {
		o.From = DefaultFrom
	}
	if o.Timeout <= 0 {
		o.Timeout = 10 * time.Second
	}
	if p.Verify == "" {
		p.Verify = "postmaster"
	}
	if err := verbatim(map[string]string{"helo": o.Helo, "from": o.From, "verify": p.Verify, "local rcpt": p.LocalRcpt}); err != nil {
		return nil, err
	}
	r := &runner{o: &o, rep: &Report{}, phInfo: map[string]PhaseInfo{}}
	c, banner, err := r.connect(ctx, r.tracer(o.Transcript))
	if err != nil {
		return nil, err
	}
	defer c.quit()
	res := &ProbeResult{Addr: o.Addr, Banner: banner, Extensions: keywords(c.ext), STARTTLS: c.has("STARTTLS"), LocalRcpt: p.LocalRcpt}
	if o.ImplicitTLS {
		res.TLS = tlsInfo(c)
		res.ExtensionsTLS, res.AuthTLS = res.Extensions, mechanisms(c.ext)
	} else {
		res.AuthPlain = mechanisms(c.ext)
	}
	// VRFY and EXPN before TLS: what an address harvester sees
	// (RFC 5321 3.5.3: 252 means "cannot verify, will try").
	if res.VRFY, err = c.cmd("VRFY "+p.Verify, ""); err != nil {
		return res, untestable(ReasonProtocol, fmt.Errorf("VRFY: %w", err))
	}
	if res.VRFYUnknown, err = c.cmd("VRFY rg-no-such-user-"+randomLabel(8), ""); err != nil {
		return res, untestable(ReasonProtocol, fmt.Errorf("VRFY: %w", err))
	}
	if res.EXPN, err = c.cmd("EXPN "+p.Verify, ""); err != nil {
		return res, untestable(ReasonProtocol, fmt.Errorf("EXPN: %w", err))
	}
	if res.STARTTLS && !o.ImplicitTLS {
		if _, err := c.startTLS(ctx, &o); err != nil {
			res.TLSError = err.Error()
			if c.closed {
				if p.LocalRcpt != "" {
					// Reconnect for the submission test without TLS.
					return res, probeRcpt(ctx, r, res, o, p)
				}
				return res, nil
			}
		} else {
			res.TLS = tlsInfo(c)
			res.ExtensionsTLS, res.AuthTLS = keywords(c.ext), mechanisms(c.ext)
		}
	}
	if p.LocalRcpt != "" {
		res.NoAuthRcpt, err = rcptWithoutAuth(c, o.From, p.LocalRcpt)
		if err != nil && !errors.Is(err, errConnLost) {
			return res, untestable(ReasonProtocol, err)
		}
	}
	return res, nil
}

// probeRcpt runs the no-AUTH recipient test on a new plain session.
func probeRcpt(ctx context.Context, r *runner, res *ProbeResult, o Options, p ProbeOptions) error {
	c, _, err := r.connect(ctx, r.tracer(o.Transcript))
	if err != nil {
		return err
	}
	defer c.quit()
	res.NoAuthRcpt, err = rcptWithoutAuth(c, o.From, p.LocalRcpt)
	if err != nil && !errors.Is(err, errConnLost) {
		return untestable(ReasonProtocol, err)
	}
	return nil
}

// rcptWithoutAuth sends MAIL FROM and RCPT TO and ends the transaction
// with RSET; nothing is ever sent past RCPT.
func rcptWithoutAuth(c *client, from, rcpt string) (Reply, error) {
	mr, err := c.cmd("MAIL FROM:<"+from+">", "")
	if err != nil {
		return mr, err
	}
	if mr.Code/100 != 2 {
		return mr, nil
	}
	rr, err := c.cmd("RCPT TO:<"+rcpt+">", "")
	if err != nil {
		return rr, err
	}
	c.cmd("RSET", "")
	return rr, nil
}

func keywords(ext map[string]string) []string {
	var out []string
	for k, v := range ext {
		if k != "_GREETING" {
			out = append(out, strings.TrimSpace(k+" "+v))
		}
	}
	slices.Sort(out)
	return out
}

// mechanisms lists the SASL mechanisms of the AUTH keyword (RFC 4954 3),
// upper case; nil when AUTH is not offered.
func mechanisms(ext map[string]string) []string {
	v, ok := ext["AUTH"]
	if !ok {
		return nil
	}
	out := []string{}
	for _, m := range strings.Fields(v) {
		out = append(out, strings.ToUpper(m))
	}
	return out
}

func tlsInfo(c *client) *TLSInfo {
	tc, ok := c.nc.(*tls.Conn)
	if !ok {
		return nil
	}
	st := tc.ConnectionState()
	ti := &TLSInfo{Version: tls.VersionName(st.Version), Cipher: tls.CipherSuiteName(st.CipherSuite), Chain: st.PeerCertificates}
	if len(st.PeerCertificates) > 0 {
		leaf := st.PeerCertificates[0]
		ti.Subject, ti.Issuer, ti.DNSNames, ti.NotAfter = leaf.Subject.String(), leaf.Issuer.String(), leaf.DNSNames, leaf.NotAfter
	}
	return ti
}
