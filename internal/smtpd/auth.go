package smtpd

import (
	"context"
	"crypto/tls"
	"encoding/base64"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/relayguard/relayguard/internal/event"
	"github.com/relayguard/relayguard/internal/limits"
	"github.com/relayguard/relayguard/internal/sasl"
)

// plaintext mechanisms reveal the password to anyone who can read the
// connection; they are offered only under TLS or on a trusted-local
// listener. The other mechanisms are also held back until TLS: relayguard
// offers no AUTH at all on a plaintext connection (design rule "strong
// mechanisms only over TLS").
func (ss *session) authAvailable() bool {
	return ss.tls != nil || ss.l.cfg.TrustedLocal
}

// offeredMechs lists the mechanisms to advertise now. -PLUS needs a TLS
// channel to bind to.
func (ss *session) offeredMechs() []string {
	if !ss.authAvailable() || ss.authUser != "" {
		return nil
	}
	return sasl.Mechanisms(ss.mechs, sasl.Options{TLS: ss.tls, Certificate: ss.leaf}, ss.l.cfg.TrustedLocal)
}

// cmdAuth runs an RFC 4954 AUTH exchange and returns its final reply.
func (ss *session) cmdAuth(ctx context.Context, arg string) Reply {
	switch {
	case !ss.esmtp:
		return badCommand(503, "5.5.1", "Error: send EHLO first")
	case ss.authUser != "":
		return badCommand(503, "5.5.1", "Error: already authenticated")
	case ss.inTx:
		return badCommand(503, "5.5.1", "Error: MAIL transaction in progress")
	}
	fields := strings.Fields(arg)
	if len(fields) == 0 || len(fields) > 2 {
		return badCommand(501, "5.5.4", "Syntax: AUTH mechanism [initial-response]")
	}
	mech := strings.ToUpper(fields[0])
	if !slices.Contains(ss.mechs, mech) || (ss.authAvailable() && !slices.Contains(ss.offeredMechs(), mech)) {
		return badCommand(504, "5.5.4", "Unrecognized authentication type")
	}
	if !ss.authAvailable() || strings.HasSuffix(mech, "-PLUS") && ss.tls == nil {
		// RFC 4954 §6: 538 5.7.11 Encryption required for requested
		// authentication mechanism.
		return badCommand(538, "5.7.11", "Encryption required for requested authentication mechanism")
	}
	// The attempt is counted before any credential is checked; every way
	// out of the exchange ends it: a failure keeps it counted, anything
	// else (success, a store failure, the client gone) takes it back.
	var attempt *limits.Reservation
	if ss.s.deps.Guard != nil {
		a, err := ss.s.deps.Guard.AuthAttempt(ctx, ss.ip)
		if err != nil {
			return authRefused(err)
		}
		attempt = a
	}
	failed := false
	defer func() { attempt.End(ctx, failed) }()
	// fail is the reply to a failed attempt by user (possibly "").
	fail := func(code int, enh, text, user, why string) Reply {
		failed = true
		return Reply{Code: code, Enhanced: enh, Text: text, auth: &authOutcome{mech: mech, user: user, reason: why}}
	}
	srv, err := sasl.New(mech, ss.s.deps.Creds, sasl.Options{
		TLS: ss.tls, Certificate: ss.leaf, Hostname: ss.cfg.Hostname, Advertised: ss.advertised})
	if err != nil {
		return badCommand(504, "5.5.4", "Unrecognized authentication type")
	}
	ss.authMech = mech
	defer func() {
		if ss.authUser == "" {
			ss.authMech = ""
		}
	}()
	var resp []byte
	if len(fields) == 2 {
		if fields[1] == "=" { // RFC 4954 §4: "=" is an empty initial response
			resp = []byte{}
		} else if resp, err = base64.StdEncoding.DecodeString(fields[1]); err != nil {
			return fail(501, "5.5.2", "Invalid base64 data", "", "invalid base64")
		}
	}
	for {
		challenge, done, err := srv.Next(ctx, resp)
		switch {
		case errors.Is(err, sasl.ErrTemporary):
			// RFC 4954 §6: 454 4.7.0 temporary authentication failure;
			// the store failed, not the client.
			return localFailure(454, "4.7.0", "auth_store", "Temporary authentication failure",
				fmt.Errorf("%s: %w", mech, err))
		case errors.Is(err, sasl.ErrMalformed):
			return fail(501, "5.5.2", "Malformed authentication response", srv.Attempted(), "malformed response")
		case err != nil:
			return fail(535, "5.7.8", "Authentication credentials invalid", srv.Attempted(), "bad credentials")
		case done:
			// A suspended account, or a guessed name from a network its
			// owner never used: refused like a wrong password, so that a
			// guesser learns nothing (internal/accounts).
			if ss.s.deps.Accounts != nil {
				if ok, why := ss.s.deps.Accounts.AuthAllowed(ctx, srv.Identity(), ss.ip); !ok {
					return fail(535, "5.7.8", "Authentication credentials invalid", srv.Identity(), why)
				}
			}
			ss.authUser = srv.Identity()
			return Reply{Code: 235, Enhanced: "2.7.0", Text: "Authentication successful",
				auth: &authOutcome{ok: true, mech: mech, user: ss.authUser}}
		}
		ss.send(ctx, reply(334, "", base64.StdEncoding.EncodeToString(challenge)))
		if err := ss.flush(); err != nil {
			return hangUp
		}
		ss.conn.SetReadDeadline(ss.commandDeadline())
		line, err := ss.readLine(ss.cfg.Limits.AuthResponseLength)
		switch {
		case errors.Is(err, errLineTooLong):
			return fail(500, "5.5.6", "Authentication Exchange line is too long", srv.Attempted(), "line too long")
		case errors.Is(err, errNUL):
			return fail(501, "5.5.2", "Invalid base64 data", srv.Attempted(), "NUL in response")
		case err != nil:
			ss.s.ml.LostConnection(ctx, ss.logConn(), "AUTH")
			ss.s.deps.Events.Publish(ctx, event.Event{Kind: event.LostAfterAuth, Source: "smtpd", IP: ss.ip, Mechanism: mech, User: srv.Attempted(), Service: ss.l.cfg.Name})
			return hangUp
		case line == "*":
			// RFC 4954 §4: the client cancelled; the server MUST reply 501.
			return fail(501, "5.5.2", "AUTH aborted", srv.Attempted(), "cancelled by client")
		}
		if resp, err = base64.StdEncoding.DecodeString(line); err != nil {
			return fail(501, "5.5.2", "Invalid base64 data", srv.Attempted(), "invalid base64")
		}
	}
}

// authRefused is the reply to an AUTH command refused before any credential
// was checked (a ban, or an AUTH failure limit): 454 4.7.0 (RFC 4954 §6),
// counted as a bad command, not as an AUTH failure — nothing was guessed.
func authRefused(err error) Reply {
	r := Reply{Code: 454, Enhanced: "4.7.0", Text: oneLine(err.Error()), Rule: "banned", Bad: true}
	var ex *limits.Exceeded
	if errors.As(err, &ex) {
		r.Rule, r.Limit = "guard.auth_limit", ex.Value()
	}
	return r
}

// cmdStartTLS implements RFC 3207.
func (ss *session) cmdStartTLS(ctx context.Context, arg string) Reply {
	switch {
	case arg != "":
		return badCommand(501, "5.5.4", "Syntax: STARTTLS")
	case ss.tls != nil:
		return badCommand(503, "5.5.1", "Error: TLS already active")
	case ss.s.deps.TLS == nil:
		return reply(454, "4.7.0", "TLS not available")
	}
	ss.send(ctx, reply(220, "2.0.0", "Ready to start TLS"))
	if err := ss.flush(); err != nil {
		return hangUp
	}
	// RFC 3207 §4.2 / CVE-2011-0411: anything the client pipelined after
	// STARTTLS was sent in clear text and must not be executed.
	if n := ss.br.Buffered(); n > 0 {
		return Reply{Rule: "starttls_injection", Detail: "STARTTLS command injection", Event: event.ProtocolAbuse, Close: true}
	}
	if err := ss.startTLS(); err != nil {
		ss.s.ml.TLSFailed(ctx, ss.logConn(), err)
		return hangUp
	}
	// RFC 3207 §4.2: discard all knowledge obtained from the client,
	// including an authentication made in clear on a trusted-local listener.
	ss.helo, ss.esmtp = "", false
	ss.authUser, ss.authMech, ss.advertised = "", "", nil
	ss.resetTx()
	return Reply{}
}

func (ss *session) startTLS() error {
	conf := ss.s.deps.TLS
	var presented *tls.Certificate
	if conf.GetCertificate != nil {
		// The certificate can change while the server runs (a renewal,
		// certs.Provider): SCRAM-SHA-256-PLUS binds to the one this
		// handshake presented (RFC 5929 tls-server-end-point), so keep it.
		conf = conf.Clone()
		get := ss.s.deps.TLS.GetCertificate
		conf.GetCertificate = func(h *tls.ClientHelloInfo) (*tls.Certificate, error) {
			c, err := get(h)
			presented = c
			return c, err
		}
	}
	tc := tls.Server(ss.conn, conf)
	tc.SetDeadline(time.Now().Add(ss.cfg.Limits.CommandTimeout.D()))
	if err := tc.Handshake(); err != nil {
		return err
	}
	tc.SetDeadline(time.Time{})
	st := tc.ConnectionState()
	ss.tls = &st
	if presented != nil && presented.Leaf != nil {
		ss.leaf = presented.Leaf
	}
	ss.conn = tc
	ss.br.Reset(tc)
	ss.bw.Reset(tc)
	return nil
}
