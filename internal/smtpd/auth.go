package smtpd

import (
	"context"
	"crypto/tls"
	"encoding/base64"
	"errors"
	"slices"
	"strings"
	"time"

	"github.com/relayguard/relayguard/internal/event"
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
	return sasl.Mechanisms(ss.s.mechs, sasl.Options{TLS: ss.tls, Certificate: ss.s.leaf}, ss.l.cfg.TrustedLocal)
}

// cmdAuth runs an RFC 4954 AUTH exchange.
func (ss *session) cmdAuth(ctx context.Context, arg string) error {
	switch {
	case !ss.esmtp:
		ss.badCommand(ctx, "503 5.5.1 Error: send EHLO first")
		return nil
	case ss.authUser != "":
		ss.badCommand(ctx, "503 5.5.1 Error: already authenticated")
		return nil
	case ss.inTx:
		ss.badCommand(ctx, "503 5.5.1 Error: MAIL transaction in progress")
		return nil
	}
	fields := strings.Fields(arg)
	if len(fields) == 0 || len(fields) > 2 {
		ss.badCommand(ctx, "501 5.5.4 Syntax: AUTH mechanism [initial-response]")
		return nil
	}
	mech := strings.ToUpper(fields[0])
	if !slices.Contains(ss.s.mechs, mech) || (ss.authAvailable() && !slices.Contains(ss.offeredMechs(), mech)) {
		ss.badCommand(ctx, "504 5.5.4 Unrecognized authentication type")
		return nil
	}
	if !ss.authAvailable() {
		// RFC 4954 §6: 538 5.7.11 Encryption required for requested
		// authentication mechanism.
		ss.badCommand(ctx, "538 5.7.11 Encryption required for requested authentication mechanism")
		return nil
	}
	if strings.HasSuffix(mech, "-PLUS") && ss.tls == nil {
		ss.badCommand(ctx, "538 5.7.11 Encryption required for requested authentication mechanism")
		return nil
	}
	if ss.s.deps.Guard != nil {
		if ok, reason := ss.s.deps.Guard.AuthAllowed(ss.ip); !ok {
			ss.authFailure(ctx, mech, "", "limit: "+reason)
			ss.reply("454 4.7.0 %s", oneLine(reason))
			return ss.afterFailure()
		}
	}
	srv, err := sasl.New(mech, ss.s.deps.Creds, sasl.Options{
		TLS: ss.tls, Certificate: ss.s.leaf, Hostname: ss.cfg.Hostname, Advertised: ss.advertised})
	if err != nil {
		ss.badCommand(ctx, "504 5.5.4 Unrecognized authentication type")
		return nil
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
			ss.authFailure(ctx, mech, "", "invalid base64")
			ss.reply("501 5.5.2 Invalid base64 data")
			return ss.afterFailure()
		}
	}
	for {
		challenge, done, err := srv.Next(ctx, resp)
		if err != nil {
			if errors.Is(err, sasl.ErrTemporary) {
				// RFC 4954 §6: 454 4.7.0 temporary authentication failure;
				// the store failed, not the client.
				ss.s.log.Error("auth store failed", "client", ss.ip, "mechanism", mech, "err", err)
				ss.reply("454 4.7.0 Temporary authentication failure")
				return nil
			}
			if errors.Is(err, sasl.ErrMalformed) {
				ss.authFailure(ctx, mech, srv.Attempted(), "malformed response")
				ss.reply("501 5.5.2 Malformed authentication response")
			} else {
				ss.authFailure(ctx, mech, srv.Attempted(), "bad credentials")
				ss.reply("535 5.7.8 Authentication credentials invalid")
			}
			return ss.afterFailure()
		}
		if done {
			ss.authUser = srv.Identity()
			ss.s.log.Info("auth ok", "client", ss.ip, "listener", ss.l.cfg.Name, "mechanism", mech, "user", ss.authUser)
			ss.s.deps.Metrics.Auth.WithLabelValues(mech, "success").Inc()
			ss.s.deps.Events.Publish(ctx, event.Event{Kind: event.AuthSuccess, Source: "smtpd", IP: ss.ip, User: ss.authUser, Mechanism: mech, Service: ss.l.cfg.Name})
			ss.reply("235 2.7.0 Authentication successful")
			return nil
		}
		ss.reply("334 %s", base64.StdEncoding.EncodeToString(challenge))
		if err := ss.flush(); err != nil {
			return err
		}
		ss.conn.SetReadDeadline(time.Now().Add(ss.cfg.Limits.CommandTimeout.D()))
		line, err := ss.readLine(ss.cfg.Limits.AuthResponseLength)
		switch {
		case errors.Is(err, errLineTooLong):
			ss.authFailure(ctx, mech, srv.Attempted(), "line too long")
			ss.reply("500 5.5.6 Authentication Exchange line is too long")
			return ss.afterFailure()
		case errors.Is(err, errNUL):
			ss.authFailure(ctx, mech, srv.Attempted(), "NUL in response")
			ss.reply("501 5.5.2 Invalid base64 data")
			return ss.afterFailure()
		case err != nil:
			ss.s.log.Info("lost connection", "client", ss.ip, "after", "AUTH", "mechanism", mech)
			ss.s.deps.Events.Publish(ctx, event.Event{Kind: event.LostAfterAuth, Source: "smtpd", IP: ss.ip, Mechanism: mech, User: srv.Attempted(), Service: ss.l.cfg.Name})
			return err
		}
		if line == "*" {
			// RFC 4954 §4: the client cancelled; the server MUST reply 501.
			ss.authFailure(ctx, mech, srv.Attempted(), "cancelled by client")
			ss.reply("501 5.5.2 AUTH aborted")
			return ss.afterFailure()
		}
		if resp, err = base64.StdEncoding.DecodeString(line); err != nil {
			ss.authFailure(ctx, mech, srv.Attempted(), "invalid base64")
			ss.reply("501 5.5.2 Invalid base64 data")
			return ss.afterFailure()
		}
	}
}

// authFailure logs (never the password), counts, publishes, and delays.
// The delay grows with each failure in the session, the same for an unknown
// user as for a wrong password.
func (ss *session) authFailure(ctx context.Context, mech, user, why string) {
	ss.authFails++
	ss.s.log.Warn("auth failed", "client", ss.ip, "listener", ss.l.cfg.Name, "mechanism", mech, "user", user, "reason", why)
	ss.s.deps.Metrics.Auth.WithLabelValues(mech, "failure").Inc()
	ss.s.deps.Events.Publish(ctx, event.Event{Kind: event.AuthFailure, Source: "smtpd", IP: ss.ip, User: user, Mechanism: mech, Detail: why, Service: ss.l.cfg.Name})
	d := ss.cfg.Limits.AuthFailureDelay.D()
	for i := 1; i < ss.authFails && d < 30*time.Second; i++ {
		d *= 2
	}
	if d > 0 {
		ss.flush()
		t := time.NewTimer(d)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
		}
	}
}

// afterFailure ends the session once too many AUTH attempts failed.
func (ss *session) afterFailure() error {
	if ss.authFails >= ss.cfg.Limits.MaxAuthFailures {
		ss.s.log.Warn("limit reached", "limit", "limits.max_auth_failures", "value", ss.cfg.Limits.MaxAuthFailures, "client", ss.ip)
		ss.reply("421 4.7.0 %s Error: too many failed authentications", ss.cfg.Hostname)
		return errClose
	}
	return nil
}

// cmdStartTLS implements RFC 3207.
func (ss *session) cmdStartTLS(ctx context.Context, arg string) error {
	switch {
	case arg != "":
		ss.badCommand(ctx, "501 5.5.4 Syntax: STARTTLS")
		return nil
	case ss.tls != nil:
		ss.badCommand(ctx, "503 5.5.1 Error: TLS already active")
		return nil
	case ss.s.deps.TLS == nil:
		ss.reply("454 4.7.0 TLS not available")
		return nil
	}
	ss.reply("220 2.0.0 Ready to start TLS")
	if err := ss.flush(); err != nil {
		return err
	}
	// RFC 3207 §4.2 / CVE-2011-0411: anything the client pipelined after
	// STARTTLS was sent in clear text and must not be executed.
	if n := ss.br.Buffered(); n > 0 {
		ss.s.log.Warn("plaintext command injection after STARTTLS discarded", "client", ss.ip, "bytes", n)
		ss.s.deps.Events.Publish(ctx, event.Event{Kind: event.ProtocolAbuse, Source: "smtpd", IP: ss.ip, Detail: "STARTTLS command injection", Service: ss.l.cfg.Name})
		return errClose
	}
	if err := ss.startTLS(); err != nil {
		ss.s.log.Info("TLS handshake failed", "client", ss.ip, "listener", ss.l.cfg.Name, "err", err)
		return errClose
	}
	// RFC 3207 §4.2: discard all knowledge obtained from the client,
	// including an authentication made in clear on a trusted-local listener.
	ss.helo, ss.esmtp = "", false
	ss.authUser, ss.authMech, ss.advertised = "", "", nil
	ss.resetTx()
	return nil
}

func (ss *session) startTLS() error {
	tc := tls.Server(ss.conn, ss.s.deps.TLS)
	tc.SetDeadline(time.Now().Add(ss.cfg.Limits.CommandTimeout.D()))
	if err := tc.Handshake(); err != nil {
		return err
	}
	tc.SetDeadline(time.Time{})
	st := tc.ConnectionState()
	ss.tls = &st
	ss.conn = tc
	ss.br.Reset(tc)
	ss.bw.Reset(tc)
	return nil
}
