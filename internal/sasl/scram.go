package sasl

import (
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"strings"
	"sync"

	"github.com/xdg-go/scram"
)

// MinSCRAMIterations is the least iteration count RFC 7677 §4 allows for
// SCRAM-SHA-256.
const MinSCRAMIterations = 4096

// SCRAMSaltLen is the length of stored and decoy SCRAM salts.
const SCRAMSaltLen = 16

// Decoy returns deterministic fake SCRAM-SHA-256 credentials for a user
// that does not exist: the salt is HMAC-SHA-256(secret, user) so that
// repeated attempts for the same name see the same salt, as they would for
// a real account, and the proof can never match. Callers should pass the
// user name in the form their lookups fold to (e.g. lower-cased) so that
// case variants of an unknown name look like those of a known one.
func Decoy(secret []byte, user string, iters int) scram.StoredCredentials {
	if iters < MinSCRAMIterations {
		iters = MinSCRAMIterations
	}
	mac := func(label string) []byte {
		m := hmac.New(sha256.New, secret)
		m.Write([]byte(label))
		m.Write([]byte{0})
		m.Write([]byte(user))
		return m.Sum(nil)
	}
	return scram.StoredCredentials{
		KeyFactors: scram.KeyFactors{Salt: string(mac("salt")[:SCRAMSaltLen]), Iters: iters},
		StoredKey:  mac("stored-key"),
		ServerKey:  mac("server-key"),
	}
}

// fallbackSecret keys decoys when a Credentials returns no decoy itself.
var fallbackSecret = sync.OnceValue(func() []byte {
	b := make([]byte, 32)
	rand.Read(b)
	return b
})

// bindings returns the channel bindings available on the connection:
// tls-exporter (RFC 9266; needs TLS 1.3 or extended master secret) and
// tls-server-end-point (RFC 5929 §4.1; needs the server certificate).
func bindings(opt Options) []scram.ChannelBinding {
	if opt.TLS == nil || !opt.TLS.HandshakeComplete {
		return nil
	}
	var out []scram.ChannelBinding
	if cb, err := scram.NewTLSExporterBinding(opt.TLS); err == nil {
		out = append(out, cb)
	}
	if opt.Certificate != nil {
		// scram derives the end-point hash from PeerCertificates[0],
		// which on the client side is the server's certificate: hand it
		// ours in that shape.
		st := &tls.ConnectionState{PeerCertificates: []*x509.Certificate{opt.Certificate}}
		if cb, err := scram.NewTLSServerEndpointBinding(st); err == nil {
			out = append(out, cb)
		}
	}
	return out
}

type scramServer struct {
	creds       CheckedCredentials
	plus        bool
	bindings    []scram.ChannelBinding
	plusOffered bool

	conv      *scram.ServerConversation
	step      int // 0 first message, 1 final message, 2 want empty ack, 3 done
	prompted  bool
	attempted string
	known     bool
	id        string
	lookupErr error
	identity  string
}

func newSCRAM(creds Credentials, opt Options, plus bool) (Server, error) {
	s := &scramServer{creds: checked(creds), plus: plus, bindings: bindings(opt)}
	if plus && len(s.bindings) == 0 {
		return nil, fmt.Errorf("%w: %s needs a TLS channel binding", ErrUnknownMechanism, SCRAMSHA256Plus)
	}
	s.plusOffered = len(s.bindings) > 0
	if opt.Advertised != nil {
		adv := false
		for _, m := range opt.Advertised {
			adv = adv || strings.EqualFold(m, SCRAMSHA256Plus)
		}
		s.plusOffered = s.plusOffered && adv
	}
	return s, nil
}

func (s *scramServer) Attempted() string { return s.attempted }
func (s *scramServer) Identity() string  { return s.identity }

// lookup is the scram.CredentialLookup of one exchange. It never fails for
// an unknown user: it returns a decoy and the exchange fails at the proof
// (RFC 5802 §5.1 allows either; this way unknown users look like wrong
// passwords).
func (s *scramServer) lookup(ctx context.Context) scram.CredentialLookup {
	return func(user string) (scram.StoredCredentials, error) {
		sc, id, ok, err := s.creds.LookupSCRAM(ctx, user)
		if err != nil {
			s.lookupErr = err
			return scram.StoredCredentials{}, err
		}
		s.known, s.id = ok, id
		if len(sc.Salt) == 0 || len(sc.StoredKey) == 0 {
			if ok {
				s.known = false // an account without SCRAM keys cannot use SCRAM
			}
			sc = Decoy(fallbackSecret(), strings.ToLower(user), MinSCRAMIterations)
		}
		return sc, nil
	}
}

// SCRAMFirst is the part of a client-first-message (RFC 5802 §7) that is
// checked before the exchange is handed to the scram library.
type SCRAMFirst struct {
	Flag    string // "n", "y" or "p"
	CBType  string // channel binding type when Flag is "p"
	AuthzID string
	User    string
}

// ParseSCRAMFirst parses the GS2 header and user name of a
// client-first-message:
//
//	gs2-cbind-flag "," [ "a=" saslname ] "," "n=" saslname "," "r=" nonce ...
//
// saslname escapes "," as "=2C" and "=" as "=3D" (RFC 5802 §5.1). Errors
// wrap ErrMalformed.
func ParseSCRAMFirst(msg []byte) (SCRAMFirst, error) {
	var f SCRAMFirst
	fields := strings.SplitN(string(msg), ",", 5)
	if len(fields) < 4 {
		return f, fmt.Errorf("%w: SCRAM: client-first-message has %d fields, want at least 4", ErrMalformed, len(fields))
	}
	switch flag := fields[0]; {
	case flag == "n" || flag == "y":
		f.Flag = flag
	case strings.HasPrefix(flag, "p=") && len(flag) > 2:
		f.Flag, f.CBType = "p", flag[2:]
	default:
		return f, fmt.Errorf("%w: SCRAM: bad channel binding flag %q", ErrMalformed, clip(flag))
	}
	if a := fields[1]; a != "" {
		name, ok := strings.CutPrefix(a, "a=")
		if !ok {
			return f, fmt.Errorf("%w: SCRAM: bad authzid field %q", ErrMalformed, clip(a))
		}
		if f.AuthzID, ok = decodeSaslname(name); !ok {
			return f, fmt.Errorf("%w: SCRAM: bad escape in authzid %q", ErrMalformed, clip(name))
		}
	}
	name, ok := strings.CutPrefix(fields[2], "n=")
	if !ok {
		return f, fmt.Errorf("%w: SCRAM: want n=user, got %q", ErrMalformed, clip(fields[2]))
	}
	if f.User, ok = decodeSaslname(name); !ok || f.User == "" {
		return f, fmt.Errorf("%w: SCRAM: bad user name %q", ErrMalformed, clip(name))
	}
	if !strings.HasPrefix(fields[3], "r=") || len(fields[3]) == 2 {
		return f, fmt.Errorf("%w: SCRAM: want r=nonce, got %q", ErrMalformed, clip(fields[3]))
	}
	return f, nil
}

// decodeSaslname undoes the RFC 5802 §5.1 escaping; "=" not followed by
// "2C" or "3D" is an error.
func decodeSaslname(s string) (string, bool) {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] != '=' {
			b.WriteByte(s[i])
			continue
		}
		switch {
		case strings.HasPrefix(s[i:], "=2C"):
			b.WriteByte(',')
		case strings.HasPrefix(s[i:], "=3D"):
			b.WriteByte('=')
		default:
			return "", false
		}
		i += 2
	}
	return b.String(), true
}

func (s *scramServer) fail(err error) ([]byte, bool, error) {
	s.step = 3
	return nil, true, err
}

func (s *scramServer) Next(ctx context.Context, resp []byte) ([]byte, bool, error) {
	switch s.step {
	case 0:
		if resp == nil && !s.prompted {
			// No initial response: RFC 4954 §4 empty challenge.
			s.prompted = true
			return []byte{}, false, nil
		}
		return s.first(ctx, resp)
	case 1:
		return s.final(resp)
	case 2:
		// RFC 4954 §4: the server-final-message travels in a 334 and
		// the client acknowledges it with an empty response.
		if len(resp) != 0 {
			return s.fail(fmt.Errorf("%w: SCRAM: want an empty response after server-final-message", ErrMalformed))
		}
		s.step = 3
		s.identity = s.id
		return nil, true, nil
	}
	return nil, true, fmt.Errorf("%w: exchange already finished", ErrMalformed)
}

func (s *scramServer) first(ctx context.Context, resp []byte) ([]byte, bool, error) {
	f, err := ParseSCRAMFirst(resp)
	if err != nil {
		return s.fail(err)
	}
	s.attempted = clip(f.User)
	srv, err := scram.SHA256.NewServer(s.lookup(ctx))
	if err != nil {
		return s.fail(fmt.Errorf("%w: %v", ErrTemporary, err))
	}
	switch {
	case f.Flag == "p" && !s.plus:
		// RFC 5802 §6: "p" is only valid with the -PLUS mechanism.
		return s.fail(fmt.Errorf("%w: SCRAM: channel binding requested with %s", ErrAuthFailed, SCRAMSHA256))
	case f.Flag == "p":
		var cb *scram.ChannelBinding
		for i := range s.bindings {
			if string(s.bindings[i].Type) == f.CBType {
				cb = &s.bindings[i]
			}
		}
		if cb == nil {
			return s.fail(fmt.Errorf("%w: SCRAM: channel binding type %q not available", ErrAuthFailed, clip(f.CBType)))
		}
		s.conv = srv.NewConversationWithChannelBindingRequired(*cb)
	case s.plus:
		return s.fail(fmt.Errorf("%w: SCRAM: %s without channel binding (flag %q)", ErrAuthFailed, SCRAMSHA256Plus, f.Flag))
	case s.plusOffered:
		// The library rejects "y" when a binding is configured: the
		// client thinks we do not offer PLUS, so someone removed it
		// (RFC 5802 §6 downgrade check). "n" passes.
		s.conv = srv.NewConversationWithChannelBinding(s.bindings[0])
	default:
		s.conv = srv.NewConversation()
	}
	s1, err := s.conv.Step(string(resp))
	if err != nil {
		if s.lookupErr != nil {
			return s.fail(fmt.Errorf("%w: %v", ErrTemporary, s.lookupErr))
		}
		if s1 == "" || s1 == scram.ErrInvalidEncoding || s1 == scram.ErrInvalidUsernameEncoding {
			return s.fail(fmt.Errorf("%w: SCRAM: %v", ErrMalformed, err))
		}
		// The library's message may quote channel binding data; the
		// RFC 5802 error value is enough for the log.
		return s.fail(fmt.Errorf("%w: SCRAM: %s", ErrAuthFailed, s1))
	}
	// No proxy authorization: an authzid must name the user itself. The
	// exchange goes on and fails at the end like a wrong password.
	if f.AuthzID != "" && f.AuthzID != f.User && f.AuthzID != s.id {
		s.known = false
	}
	s.step = 1
	return []byte(s1), false, nil
}

func (s *scramServer) final(resp []byte) ([]byte, bool, error) {
	s2, err := s.conv.Step(string(resp))
	if err != nil {
		if s2 == "" {
			return s.fail(fmt.Errorf("%w: SCRAM: %v", ErrMalformed, err))
		}
		return s.fail(fmt.Errorf("%w: SCRAM: %s", ErrAuthFailed, s2))
	}
	if !s.conv.Valid() || !s.known {
		return s.fail(fmt.Errorf("%w: SCRAM: %s", ErrAuthFailed, scram.ErrInvalidProof))
	}
	s.step = 2
	return []byte(s2), false, nil
}
