// Package msgauth is relayguard's message authentication: DKIM signing of
// outbound mail (RFC 6376, RFC 8463) and, for inbound mail, SPF, DKIM and
// DMARC verdicts (RFC 7208, RFC 6376, RFC 7489) recorded in one
// Authentication-Results header field (RFC 8601). DKIM signing and
// verification and the Authentication-Results syntax come from
// github.com/emersion/go-msgauth; this package picks keys, chooses the
// signed fields, and turns the library's answers into verdicts.
package msgauth

import (
	"crypto"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/relayguard/relayguard/internal/safeio"
)

// Key algorithms accepted by GenerateKey and the keygen command.
const (
	AlgRSA     = "rsa"     // rsa-sha256, 2048 bits (RFC 8301 §3.2)
	AlgEd25519 = "ed25519" // ed25519-sha256 (RFC 8463)
)

// RSABits is the size of generated RSA keys: RFC 8301 §3.2 requires
// verifiers to take 1024 to 4096 bits and signers to use at least 1024;
// 2048 is what large receivers expect and still fits a DNS TXT record.
const RSABits = 2048

// GenerateKey makes a new private key for algorithm AlgRSA or AlgEd25519.
func GenerateKey(algorithm string) (crypto.Signer, error) {
	switch algorithm {
	case AlgRSA:
		k, err := rsa.GenerateKey(rand.Reader, RSABits)
		if err != nil {
			return nil, fmt.Errorf("dkim: generate rsa key: %w", err)
		}
		return k, nil
	case AlgEd25519:
		_, k, err := ed25519.GenerateKey(rand.Reader)
		if err != nil {
			return nil, fmt.Errorf("dkim: generate ed25519 key: %w", err)
		}
		return k, nil
	}
	return nil, fmt.Errorf("dkim: algorithm %q: want rsa or ed25519", algorithm)
}

// Algorithm names the key's algorithm ("rsa" or "ed25519").
func Algorithm(k crypto.PublicKey) string {
	switch k.(type) {
	case *rsa.PublicKey:
		return AlgRSA
	case ed25519.PublicKey:
		return AlgEd25519
	}
	return fmt.Sprintf("%T", k)
}

// WriteKey stores key at path as PEM PKCS #8, readable by its owner only.
// It refuses to replace an existing file: a key that is published in DNS
// must not be lost by a second keygen (rotate with a new selector).
func WriteKey(path string, key crypto.Signer) error {
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return fmt.Errorf("dkim: marshal key: %w", err)
	}
	if _, err := os.Lstat(path); err == nil {
		return fmt.Errorf("dkim: %s exists; choose another selector (--selector) to make a new key", path)
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o750); err != nil {
		return fmt.Errorf("dkim: %w", err)
	}
	if err := safeio.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), 0o600); err != nil {
		return fmt.Errorf("dkim: %w", err)
	}
	return nil
}

// LoadKey reads a PEM private key: PKCS #8 (RSA or Ed25519, as WriteKey and
// `opendkim-genkey` write), or PKCS #1 "RSA PRIVATE KEY".
func LoadKey(path string) (crypto.Signer, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("dkim: key: %w", err)
	}
	blk, _ := pem.Decode(b)
	if blk == nil {
		return nil, fmt.Errorf("dkim: key %s: no PEM block", path)
	}
	var k any
	switch blk.Type {
	case "PRIVATE KEY":
		k, err = x509.ParsePKCS8PrivateKey(blk.Bytes)
	case "RSA PRIVATE KEY":
		k, err = x509.ParsePKCS1PrivateKey(blk.Bytes)
	default:
		return nil, fmt.Errorf("dkim: key %s: PEM block %q is not a private key", path, blk.Type)
	}
	if err != nil {
		return nil, fmt.Errorf("dkim: key %s: %w", path, err)
	}
	switch s := k.(type) {
	case *rsa.PrivateKey:
		if s.N.BitLen() < 1024 {
			// RFC 8301 §3.2: verifiers treat shorter keys as unsigned.
			return nil, fmt.Errorf("dkim: key %s: RSA key of %d bits; at least 1024 (RFC 8301), 2048 recommended", path, s.N.BitLen())
		}
		return s, nil
	case ed25519.PrivateKey:
		return s, nil
	}
	return nil, fmt.Errorf("dkim: key %s: %T keys cannot sign DKIM (rsa or ed25519 only)", path, k)
}

// Record is the DKIM key record (RFC 6376 §3.6.1) that publishes pub:
// "v=DKIM1; k=rsa; p=<SubjectPublicKeyInfo>" for RSA, "v=DKIM1;
// k=ed25519; p=<the 32 raw octets>" for Ed25519 (RFC 8463 §4.2).
func Record(pub crypto.PublicKey) (string, error) {
	var p []byte
	switch k := pub.(type) {
	case *rsa.PublicKey:
		der, err := x509.MarshalPKIXPublicKey(k)
		if err != nil {
			return "", err
		}
		p = der
	case ed25519.PublicKey:
		p = k
	default:
		return "", fmt.Errorf("dkim: %T keys cannot sign DKIM", pub)
	}
	return "v=DKIM1; k=" + Algorithm(pub) + "; p=" + base64.StdEncoding.EncodeToString(p), nil
}

// RecordName is the DNS name of a key record: SELECTOR._domainkey.DOMAIN
// (RFC 6376 §3.6.2.1).
func RecordName(selector, domain string) string {
	return selector + "._domainkey." + domain
}

// ZoneLine renders the record as a zone-file line. A TXT character-string
// holds at most 255 octets (RFC 1035 §3.3), so a 2048-bit RSA record is
// split into several strings, which verifiers join (RFC 6376 §3.6.2.2).
func ZoneLine(selector, domain, record string) string {
	var parts []string
	for len(record) > 255 {
		parts = append(parts, `"`+record[:255]+`"`)
		record = record[255:]
	}
	parts = append(parts, `"`+record+`"`)
	return RecordName(selector, domain) + ". IN TXT ( " + strings.Join(parts, " ") + " )"
}

// KeyRecord is a parsed DKIM key record.
type KeyRecord struct {
	Algorithm string           // k=, "rsa" by default
	Public    crypto.PublicKey // nil when p= is empty: the key is revoked
	Testing   bool             // t=y: verifiers must not treat failures differently from unsigned mail
	Raw       string
}

// ParseRecord parses a published key record (RFC 6376 §3.6.1). It is
// written here because go-msgauth does not export its parser, and
// `relayguard dkim check` must say precisely what is wrong with a record.
func ParseRecord(txt string) (*KeyRecord, error) {
	tags, err := parseTags(txt)
	if err != nil {
		return nil, err
	}
	if v, ok := tags["v"]; ok && v != "DKIM1" {
		return nil, fmt.Errorf("v=%s: want DKIM1", v)
	}
	r := &KeyRecord{Algorithm: AlgRSA, Raw: txt}
	if k, ok := tags["k"]; ok {
		r.Algorithm = k
	}
	for _, f := range strings.Split(tags["t"], ":") {
		if strings.TrimSpace(f) == "y" {
			r.Testing = true
		}
	}
	p, ok := tags["p"]
	if !ok {
		return nil, errors.New("no p= tag")
	}
	p = strings.Join(strings.Fields(p), "")
	if p == "" {
		return r, nil // revoked (RFC 6376 §3.6.1)
	}
	der, err := base64.StdEncoding.DecodeString(p)
	if err != nil {
		return nil, fmt.Errorf("p=: %w", err)
	}
	switch r.Algorithm {
	case AlgRSA:
		pub, err := x509.ParsePKIXPublicKey(der)
		if err != nil {
			// Some publishers put a PKCS #1 RSAPublicKey in p=.
			rk, err2 := x509.ParsePKCS1PublicKey(der)
			if err2 != nil {
				return nil, fmt.Errorf("p=: %w", err)
			}
			pub = rk
		}
		if _, ok := pub.(*rsa.PublicKey); !ok {
			return nil, fmt.Errorf("p= holds a %T, k=rsa", pub)
		}
		r.Public = pub
	case AlgEd25519:
		if len(der) != ed25519.PublicKeySize {
			return nil, fmt.Errorf("p= is %d octets, an ed25519 key is %d", len(der), ed25519.PublicKeySize)
		}
		r.Public = ed25519.PublicKey(der)
	default:
		return nil, fmt.Errorf("k=%s: unknown key type", r.Algorithm)
	}
	return r, nil
}

// parseTags splits a tag-list (RFC 6376 §3.2): "tag=value" separated by
// ";", whitespace around both ignored.
func parseTags(s string) (map[string]string, error) {
	out := map[string]string{}
	for _, part := range strings.Split(s, ";") {
		part = strings.TrimSpace(part)
		if part == "" {
			continue
		}
		k, v, ok := strings.Cut(part, "=")
		if !ok {
			return nil, fmt.Errorf("tag %q has no '='", part)
		}
		k = strings.TrimSpace(k)
		if _, dup := out[k]; dup {
			return nil, fmt.Errorf("tag %q given twice", k) // RFC 6376 §3.2
		}
		out[k] = strings.TrimSpace(v)
	}
	return out, nil
}

// SamePublic reports whether two public keys are equal.
func SamePublic(a, b crypto.PublicKey) bool {
	type eq interface{ Equal(crypto.PublicKey) bool }
	if e, ok := a.(eq); ok {
		return e.Equal(b)
	}
	return false
}
