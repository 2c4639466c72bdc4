package sasl

import (
	"bytes"
	"context"
	"fmt"
	"unicode/utf8"

	"github.com/xdg-go/scram"
)

// checked returns creds with error reporting, adapting a plain Credentials.
func checked(creds Credentials) CheckedCredentials {
	if c, ok := creds.(CheckedCredentials); ok {
		return c
	}
	return uncheckedAdapter{creds}
}

type uncheckedAdapter struct{ c Credentials }

func (a uncheckedAdapter) CheckPassword(ctx context.Context, user, password string) (string, bool, error) {
	id, ok := a.c.VerifyPassword(ctx, user, password)
	return id, ok, nil
}

func (a uncheckedAdapter) LookupSCRAM(ctx context.Context, user string) (scram.StoredCredentials, string, bool, error) {
	sc, ok := a.c.SCRAMCredentials(ctx, user)
	return sc, user, ok, nil
}

func (a uncheckedAdapter) LookupCRAM(ctx context.Context, user string) ([]byte, string, bool, error) {
	s, ok := a.c.CRAMSecret(ctx, user)
	return s, user, ok, nil
}

// verify runs the password check and maps the outcome to an error.
func verify(ctx context.Context, creds Credentials, user, password string) (string, error) {
	id, ok, err := checked(creds).CheckPassword(ctx, user, password)
	switch {
	case err != nil:
		return "", fmt.Errorf("%w: %v", ErrTemporary, err)
	case !ok:
		return "", ErrAuthFailed
	}
	return id, nil
}

// ParsePlain splits a PLAIN message (RFC 4616 §2):
//
//	message = [authzid] UTF8NUL authcid UTF8NUL passwd
//
// authcid and passwd must be non-empty, and all three valid UTF-8 without
// NUL. Errors wrap ErrMalformed.
func ParsePlain(msg []byte) (authzid, authcid, passwd string, err error) {
	parts := bytes.Split(msg, []byte{0})
	if len(parts) != 3 {
		return "", "", "", fmt.Errorf("%w: PLAIN: want 2 NUL separators, got %d", ErrMalformed, len(parts)-1)
	}
	for i, name := range []string{"authzid", "authcid", "passwd"} {
		if !utf8.Valid(parts[i]) {
			return "", "", "", fmt.Errorf("%w: PLAIN: %s is not UTF-8", ErrMalformed, name)
		}
		if i > 0 && len(parts[i]) == 0 {
			return "", "", "", fmt.Errorf("%w: PLAIN: empty %s", ErrMalformed, name)
		}
	}
	return string(parts[0]), string(parts[1]), string(parts[2]), nil
}

// plainServer implements PLAIN (RFC 4616). An authorization identity is
// accepted only when it names the authenticated account itself: relayguard
// has no proxy authorization.
type plainServer struct {
	creds     Credentials
	attempted string
	identity  string
	prompted  bool
	done      bool
}

func (s *plainServer) Attempted() string { return s.attempted }
func (s *plainServer) Identity() string  { return s.identity }

func (s *plainServer) Next(ctx context.Context, resp []byte) ([]byte, bool, error) {
	if s.done {
		return nil, true, fmt.Errorf("%w: exchange already finished", ErrMalformed)
	}
	if resp == nil && !s.prompted {
		// No initial response: RFC 4954 §4 empty challenge.
		s.prompted = true
		return []byte{}, false, nil
	}
	s.done = true
	authz, authc, pass, err := ParsePlain(resp)
	if err != nil {
		return nil, true, err
	}
	s.attempted = clip(authc)
	id, err := verify(ctx, s.creds, authc, pass)
	if err != nil {
		return nil, true, err
	}
	if authz != "" && authz != authc && authz != id {
		return nil, true, fmt.Errorf("%w: authorization identity %q differs from %q", ErrAuthFailed, clip(authz), id)
	}
	s.identity = id
	return nil, true, nil
}

// loginServer implements the LOGIN mechanism (draft-murchison-sasl-login):
// "Username:" then "Password:". An initial response is taken as the user
// name, as Postfix/Cyrus do.
type loginServer struct {
	creds     Credentials
	step      int // 0: want user, 1: want password, 2: done
	user      string
	attempted string
	identity  string
}

func (s *loginServer) Attempted() string { return s.attempted }
func (s *loginServer) Identity() string  { return s.identity }

func (s *loginServer) Next(ctx context.Context, resp []byte) ([]byte, bool, error) {
	switch s.step {
	case 0:
		if resp == nil {
			return []byte("Username:"), false, nil
		}
		if !utf8.Valid(resp) || bytes.IndexByte(resp, 0) >= 0 {
			s.step = 2
			return nil, true, fmt.Errorf("%w: LOGIN: user name is not UTF-8 text", ErrMalformed)
		}
		s.user = string(resp)
		s.attempted = clip(s.user)
		s.step = 1
		return []byte("Password:"), false, nil
	case 1:
		s.step = 2
		if resp == nil || !utf8.Valid(resp) || bytes.IndexByte(resp, 0) >= 0 {
			return nil, true, fmt.Errorf("%w: LOGIN: password is not UTF-8 text", ErrMalformed)
		}
		// An empty user name or password still costs a verification, so
		// it looks like any other failure.
		id, err := verify(ctx, s.creds, s.user, string(resp))
		if err != nil {
			return nil, true, err
		}
		s.identity = id
		return nil, true, nil
	}
	return nil, true, fmt.Errorf("%w: exchange already finished", ErrMalformed)
}
