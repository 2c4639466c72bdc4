package sasl

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/md5"
	"crypto/rand"
	"encoding"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"sync"
	"time"
	"unicode/utf8"
)

// CRAM-MD5 (RFC 2195) needs the server to compute HMAC-MD5(password,
// challenge), so whatever is stored is password-equivalent. Instead of the
// password itself we store the two MD5 states after absorbing the padded
// key (RFC 2104 §2: K XOR ipad, K XOR opad), as Dovecot's CRAM-MD5 scheme
// does: this still logs anyone in over CRAM-MD5, but does not reveal the
// password for reuse elsewhere. crypto/hmac cannot resume from such states,
// so the HMAC is completed by hand here with crypto/md5's state marshalling.

const cramMagic = "rgcram1:"

// CRAMMD5Secret derives the stored CRAM-MD5 secret from a password.
func CRAMMD5Secret(password []byte) []byte {
	key := password
	if len(key) > md5.BlockSize {
		sum := md5.Sum(key)
		key = sum[:]
	}
	ipad := make([]byte, md5.BlockSize)
	opad := make([]byte, md5.BlockSize)
	copy(ipad, key)
	copy(opad, key)
	for i := range ipad {
		ipad[i] ^= 0x36
		opad[i] ^= 0x5c
	}
	inner, outer := md5.New(), md5.New()
	inner.Write(ipad)
	outer.Write(opad)
	is, err1 := inner.(encoding.BinaryMarshaler).MarshalBinary()
	ob, err2 := outer.(encoding.BinaryMarshaler).MarshalBinary()
	if err1 != nil || err2 != nil {
		panic("crypto/md5 state cannot be marshalled") // the standard library guarantees it can
	}
	out := []byte(cramMagic)
	out = binary.BigEndian.AppendUint16(out, uint16(len(is)))
	out = append(out, is...)
	return append(out, ob...)
}

// cramDigest computes HMAC-MD5(password, challenge) from a stored secret.
func cramDigest(secret, challenge []byte) ([]byte, error) {
	rest, ok := bytes.CutPrefix(secret, []byte(cramMagic))
	if !ok || len(rest) < 2 {
		return nil, errors.New("CRAM-MD5 secret has an unknown format")
	}
	n := int(binary.BigEndian.Uint16(rest))
	rest = rest[2:]
	if n > len(rest) {
		return nil, errors.New("CRAM-MD5 secret is truncated")
	}
	inner, outer := md5.New(), md5.New()
	if err := inner.(encoding.BinaryUnmarshaler).UnmarshalBinary(rest[:n]); err != nil {
		return nil, fmt.Errorf("CRAM-MD5 secret: %w", err)
	}
	if err := outer.(encoding.BinaryUnmarshaler).UnmarshalBinary(rest[n:]); err != nil {
		return nil, fmt.Errorf("CRAM-MD5 secret: %w", err)
	}
	inner.Write(challenge)
	outer.Write(inner.Sum(nil))
	return outer.Sum(nil), nil
}

// dummyCRAM is verified against for unknown users, so they cost the same.
var dummyCRAM = sync.OnceValue(func() []byte {
	pw := make([]byte, 16)
	rand.Read(pw)
	return CRAMMD5Secret(pw)
})

// cramServer implements CRAM-MD5 (RFC 2195 §2). The challenge is
// "<random.timestamp@hostname>"; the response is "user SP 32 hex digits".
type cramServer struct {
	creds     Credentials
	hostname  string
	challenge []byte
	step      int
	attempted string
	identity  string
}

func (s *cramServer) Attempted() string { return s.attempted }
func (s *cramServer) Identity() string  { return s.identity }

// ParseCRAMResponse splits a CRAM-MD5 response at its last space into the
// user name and the 16-byte digest. Errors wrap ErrMalformed.
func ParseCRAMResponse(resp []byte) (user string, digest []byte, err error) {
	i := bytes.LastIndexByte(resp, ' ')
	if i <= 0 {
		return "", nil, fmt.Errorf("%w: CRAM-MD5: want \"user digest\"", ErrMalformed)
	}
	if !utf8.Valid(resp[:i]) || bytes.IndexByte(resp[:i], 0) >= 0 {
		return "", nil, fmt.Errorf("%w: CRAM-MD5: user name is not UTF-8 text", ErrMalformed)
	}
	hexd := resp[i+1:]
	if len(hexd) != 2*md5.Size {
		return "", nil, fmt.Errorf("%w: CRAM-MD5: digest has %d characters, want %d", ErrMalformed, len(hexd), 2*md5.Size)
	}
	digest = make([]byte, md5.Size)
	if _, err := hex.Decode(digest, hexd); err != nil {
		return "", nil, fmt.Errorf("%w: CRAM-MD5: digest is not hex", ErrMalformed)
	}
	return string(resp[:i]), digest, nil
}

func (s *cramServer) Next(ctx context.Context, resp []byte) ([]byte, bool, error) {
	switch s.step {
	case 0:
		s.step = 1
		if resp != nil {
			// RFC 4954 §4: an initial response to a server-first
			// mechanism is a 501.
			s.step = 2
			return nil, true, fmt.Errorf("%w: CRAM-MD5 takes no initial response", ErrMalformed)
		}
		var r [8]byte
		rand.Read(r[:])
		host := s.hostname
		if host == "" {
			host = "localhost"
		}
		s.challenge = fmt.Appendf(nil, "<%d.%d@%s>", binary.BigEndian.Uint64(r[:])>>1, time.Now().Unix(), host)
		return s.challenge, false, nil
	case 1:
		s.step = 2
		user, digest, err := ParseCRAMResponse(resp)
		if err != nil {
			return nil, true, err
		}
		s.attempted = clip(user)
		secret, id, ok, err := checked(s.creds).LookupCRAM(ctx, user)
		if err != nil {
			return nil, true, fmt.Errorf("%w: %v", ErrTemporary, err)
		}
		if !ok || len(secret) == 0 {
			secret, ok = dummyCRAM(), false
		}
		want, err := cramDigest(secret, s.challenge)
		if err != nil {
			return nil, true, fmt.Errorf("%w: %v", ErrTemporary, err)
		}
		if !hmac.Equal(want, digest) || !ok {
			return nil, true, ErrAuthFailed
		}
		s.identity = id
		return nil, true, nil
	}
	return nil, true, fmt.Errorf("%w: exchange already finished", ErrMalformed)
}
