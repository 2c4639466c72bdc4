// Package sasl implements the server side of the SASL mechanisms relayguard
// offers for SMTP AUTH (RFC 4954): PLAIN (RFC 4616), LOGIN, CRAM-MD5
// (RFC 2195), SCRAM-SHA-256 and SCRAM-SHA-256-PLUS (RFC 5802, RFC 7677) with
// tls-exporter (RFC 9266) and tls-server-end-point (RFC 5929) channel
// binding.
//
// The RFC 4954 framing (334 challenges, base64, "*" cancel, reply codes) is
// done by the SMTP server; this package sees decoded bytes only. SCRAM is
// delegated to github.com/xdg-go/scram; PLAIN, LOGIN and CRAM-MD5 are a few
// lines each and written here.
package sasl

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"strings"

	"github.com/xdg-go/scram"
)

// Errors returned by Server.Next. They may be wrapped with detail for the
// log; compare with errors.Is.
var (
	// ErrAuthFailed: wrong credentials, unknown user, refused channel
	// binding or authorization identity. SMTP reply 535 5.7.8.
	ErrAuthFailed = errors.New("authentication failed")
	// ErrMalformed: the client's response does not parse. SMTP reply
	// 501 5.5.2.
	ErrMalformed = errors.New("malformed SASL response")
	// ErrUnknownMechanism: New was given a mechanism this package does not
	// implement, or one that cannot run on this connection
	// (SCRAM-SHA-256-PLUS without a channel binding). SMTP reply 504 5.5.4.
	ErrUnknownMechanism = errors.New("unrecognized authentication mechanism")
	// ErrTemporary: the credential store failed (database unavailable).
	// SMTP reply 454 4.7.0 (RFC 4954 §6). Not the client's fault; should
	// not count as an authentication failure against the client.
	ErrTemporary = errors.New("temporary authentication failure")
)

// Mechanism names.
const (
	Plain           = "PLAIN"
	Login           = "LOGIN"
	CRAMMD5         = "CRAM-MD5"
	SCRAMSHA256     = "SCRAM-SHA-256"
	SCRAMSHA256Plus = "SCRAM-SHA-256-PLUS"
)

// All lists the mechanisms this package implements, strongest first.
var All = []string{SCRAMSHA256Plus, SCRAMSHA256, CRAMMD5, Plain, Login}

// Credentials is the account store as the mechanisms see it. It is
// implemented by internal/userdb.
//
// Implementations must make an unknown user indistinguishable from a wrong
// password: same work, same answers.
type Credentials interface {
	// VerifyPassword checks a plaintext password (PLAIN, LOGIN). identity
	// is the canonical account name when ok.
	VerifyPassword(ctx context.Context, user, password string) (identity string, ok bool)
	// SCRAMCredentials returns the stored SCRAM-SHA-256 keys of user. When
	// ok is false (unknown or disabled user) the returned value should be
	// a decoy (see Decoy) so that the exchange continues and fails only
	// at the proof; if its Salt is empty this package makes a decoy itself.
	SCRAMCredentials(ctx context.Context, user string) (creds scram.StoredCredentials, ok bool)
	// CRAMSecret returns the CRAM-MD5 secret of user in the format made
	// by CRAMMD5Secret.
	CRAMSecret(ctx context.Context, user string) (secret []byte, ok bool)
}

// CheckedCredentials is optionally implemented by a Credentials to report a
// store failure, which Next turns into ErrTemporary instead of
// ErrAuthFailed. The methods have the same meaning as those of Credentials;
// identity for the SCRAM and CRAM-MD5 lookups is the canonical account name.
type CheckedCredentials interface {
	CheckPassword(ctx context.Context, user, password string) (identity string, ok bool, err error)
	LookupSCRAM(ctx context.Context, user string) (creds scram.StoredCredentials, identity string, ok bool, err error)
	LookupCRAM(ctx context.Context, user string) (secret []byte, identity string, ok bool, err error)
}

// Options describe the connection an exchange runs on.
type Options struct {
	// TLS is the connection's TLS state, nil on a plaintext connection.
	// tls-exporter channel binding (RFC 9266) is derived from it; it is
	// unavailable on TLS 1.2 without extended master secret.
	TLS *tls.ConnectionState
	// Certificate is the leaf certificate the server presented on this
	// connection, for tls-server-end-point channel binding (RFC 5929 §4).
	// (A server-side tls.ConnectionState does not carry it.) nil: that
	// binding type is not offered.
	Certificate *x509.Certificate
	// Hostname goes into the CRAM-MD5 challenge.
	Hostname string
	// Advertised is the list of mechanisms announced in EHLO on this
	// connection. It decides whether SCRAM-SHA-256-PLUS was offered, for
	// the downgrade check of RFC 5802 §6. nil: PLUS counts as offered
	// whenever a channel binding is available.
	Advertised []string
}

// Server is one authentication exchange. It is not safe for concurrent use
// and cannot be reused.
type Server interface {
	// Next takes the client's response (nil when the AUTH command carried
	// no initial response; non-nil and empty for the RFC 4954 "=" empty
	// initial response) and returns the next challenge. done && err == nil
	// is success and Identity is the authenticated account. Any error
	// ends the exchange (done is true).
	Next(ctx context.Context, response []byte) (challenge []byte, done bool, err error)
	// Attempted is the user name the client presented, as sent (untrusted:
	// log it quoted), "" until known. It is never the password.
	Attempted() string
	// Identity is the canonical account name after success, else "".
	Identity() string
}

// New starts an exchange of mechanism mech (case-insensitive).
func New(mech string, creds Credentials, opt Options) (Server, error) {
	if creds == nil {
		return nil, errors.New("sasl: nil Credentials")
	}
	switch strings.ToUpper(mech) {
	case Plain:
		return &plainServer{creds: creds}, nil
	case Login:
		return &loginServer{creds: creds}, nil
	case CRAMMD5:
		return &cramServer{creds: creds, hostname: opt.Hostname}, nil
	case SCRAMSHA256:
		return newSCRAM(creds, opt, false)
	case SCRAMSHA256Plus:
		return newSCRAM(creds, opt, true)
	}
	return nil, fmt.Errorf("%w: %q", ErrUnknownMechanism, mech)
}

// Mechanisms filters the configured mechanisms down to those to advertise on
// a connection: unknown names are dropped, SCRAM-SHA-256-PLUS needs a
// channel binding, and PLAIN and LOGIN need TLS unless plaintextOK (a
// listener the operator marked trusted-local). CRAM-MD5 is returned when
// configured; the caller decides whether it is enabled at all.
func Mechanisms(configured []string, opt Options, plaintextOK bool) []string {
	var out []string
	for _, m := range configured {
		m = strings.ToUpper(strings.TrimSpace(m))
		switch m {
		case Plain, Login:
			if opt.TLS == nil && !plaintextOK {
				continue
			}
		case SCRAMSHA256Plus:
			if len(bindings(opt)) == 0 {
				continue
			}
		case SCRAMSHA256, CRAMMD5:
		default:
			continue
		}
		dup := false
		for _, o := range out {
			dup = dup || o == m
		}
		if !dup {
			out = append(out, m)
		}
	}
	return out
}

// clip bounds a client-chosen user name kept for logs.
func clip(s string) string {
	const max = 256
	if len(s) > max {
		return s[:max]
	}
	return s
}
