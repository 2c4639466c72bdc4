package msgauth

import (
	"context"
	"crypto"
	"errors"
	"fmt"
	"net"
	"strings"

	"github.com/emersion/go-msgauth/dkim"

	"github.com/relayguard/relayguard/internal/config"
)

// LookupTXT is the DNS TXT lookup the checks use; errors follow net's
// (a *net.DNSError with IsNotFound for a name without records).
type LookupTXT func(ctx context.Context, name string) ([]string, error)

// KeyStatus is the outcome of checking one key against DNS.
type KeyStatus struct {
	OK   bool
	Text string
}

func (s KeyStatus) String() string { return s.Text }

// CheckKey compares the record published for k with its private key and
// verifies a message signed with the key against the published record, as
// a receiver would (go-msgauth's verifier).
func CheckKey(ctx context.Context, lookup LookupTXT, k config.DKIMKey) KeyStatus {
	key, err := LoadKey(k.KeyFile)
	if err != nil {
		return KeyStatus{Text: err.Error()}
	}
	name := RecordName(k.Selector, k.Domain)
	txts, err := lookup(ctx, name)
	var dnsErr *net.DNSError
	if errors.As(err, &dnsErr) && dnsErr.IsNotFound {
		return KeyStatus{Text: "not published (no TXT record); publish the record `relayguard dkim keygen` printed"}
	}
	if err != nil {
		return KeyStatus{Text: "cannot look up: " + err.Error()}
	}
	var recs []string
	for _, t := range txts {
		if strings.Contains(t, "p=") {
			recs = append(recs, t)
		}
	}
	switch len(recs) {
	case 0:
		return KeyStatus{Text: fmt.Sprintf("not published: TXT records there hold no DKIM key (%q)", txts)}
	case 1:
	default:
		// RFC 6376 §3.6.2.2: verifiers may pick any one, so the outcome
		// would be a matter of chance.
		return KeyStatus{Text: fmt.Sprintf("%d key records published; keep exactly one", len(recs))}
	}
	pub, err := ParseRecord(recs[0])
	if err != nil {
		return KeyStatus{Text: "published record is broken: " + err.Error()}
	}
	if pub.Public == nil {
		return KeyStatus{Text: "published record revokes the key (empty p=)"}
	}
	if !SamePublic(pub.Public, key.Public()) {
		return KeyStatus{Text: fmt.Sprintf("published %s key differs from %s (%s)", pub.Algorithm, k.KeyFile, Algorithm(key.Public()))}
	}
	if err := signAndVerify(ctx, lookup, k, key); err != nil {
		return KeyStatus{Text: "a test signature does not verify: " + err.Error()}
	}
	text := "ok (" + Algorithm(key.Public()) + ", " + k.KeyFile + ")"
	if pub.Testing {
		text += "; the record has t=y (testing): receivers treat signed mail as unsigned, remove it when satisfied"
	}
	return KeyStatus{OK: true, Text: text}
}

// signAndVerify signs a small message with key and verifies it with the
// published record.
func signAndVerify(ctx context.Context, lookup LookupTXT, k config.DKIMKey, key crypto.Signer) error {
	s, err := NewSigner([]SigningKey{{Domain: k.Domain, Selector: k.Selector, Key: key}}, config.DefaultDKIMHeaders, nil)
	if err != nil {
		return err
	}
	msg := "From: dkim-check@" + k.Domain + "\r\nSubject: relayguard dkim check\r\n\r\ntest\r\n"
	sig, err := s.Sign(strings.NewReader(msg))
	if err != nil {
		return err
	}
	vs, err := dkim.VerifyWithOptions(strings.NewReader(string(sig)+msg), &dkim.VerifyOptions{
		LookupTXT: func(name string) ([]string, error) { return lookup(ctx, name) },
	})
	if err != nil {
		return err
	}
	if len(vs) != 1 {
		return fmt.Errorf("%d verifications", len(vs))
	}
	return vs[0].Err
}
