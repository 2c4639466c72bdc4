package msgauth

import (
	"bufio"
	"crypto"
	"errors"
	"fmt"
	"io"
	"strings"

	"github.com/emersion/go-msgauth/dkim"

	"github.com/relayguard/relayguard/internal/config"
)

// SigningKey is one key of a signing domain.
type SigningKey struct {
	Domain   string // lower-case A-label
	Selector string
	Key      crypto.Signer
}

// Signer signs outbound messages with the keys of their author domain.
// It is safe for concurrent use.
type Signer struct {
	keys     map[string][]SigningKey
	headers  []string
	oversign map[string]bool
}

// NewSigner returns a signer over keys. headers are the fields signed when
// present (From must be one of them); oversign the fields signed once more
// than they occur (RFC 6376 §8.15), so that none can be added.
func NewSigner(keys []SigningKey, headers, oversign []string) (*Signer, error) {
	s := &Signer{keys: map[string][]SigningKey{}, oversign: map[string]bool{}}
	from := false
	for _, h := range headers {
		from = from || strings.EqualFold(h, "From")
		s.headers = append(s.headers, h)
	}
	if !from {
		return nil, errors.New("dkim: the signed fields must include From (RFC 6376 §5.4)")
	}
	for _, h := range oversign {
		s.oversign[strings.ToLower(h)] = true
		if !containsFold(s.headers, h) {
			s.headers = append(s.headers, h)
		}
	}
	for _, k := range keys {
		if k.Key == nil || k.Domain == "" || k.Selector == "" {
			return nil, fmt.Errorf("dkim: incomplete key %s/%s", k.Domain, k.Selector)
		}
		s.keys[k.Domain] = append(s.keys[k.Domain], k)
	}
	return s, nil
}

// LoadSigner reads the keys of the [dkim] section. It returns nil when no
// key is configured.
func LoadSigner(c config.DKIMConfig) (*Signer, error) {
	if len(c.Keys) == 0 {
		return nil, nil
	}
	var keys []SigningKey
	for _, k := range c.Keys {
		key, err := LoadKey(k.KeyFile)
		if err != nil {
			return nil, fmt.Errorf("%w (dkim.key %s selector %s)", err, k.Domain, k.Selector)
		}
		keys = append(keys, SigningKey{Domain: k.Domain, Selector: k.Selector, Key: key})
	}
	return NewSigner(keys, c.Headers, c.Oversign)
}

func containsFold(list []string, s string) bool {
	for _, l := range list {
		if strings.EqualFold(l, s) {
			return true
		}
	}
	return false
}

// Domains lists the signing domains.
func (s *Signer) Domains() []string {
	var out []string
	for d := range s.keys {
		out = append(out, d)
	}
	return out
}

// keysFor returns the keys of domain or of its closest parent with keys: a
// signature by a parent domain still aligns for DMARC (RFC 7489 §3.1.1,
// relaxed mode).
func (s *Signer) keysFor(domain string) []SigningKey {
	for d := domain; strings.Contains(d, "."); {
		if k := s.keys[d]; len(k) > 0 {
			return k
		}
		_, d, _ = strings.Cut(d, ".")
	}
	return nil
}

// Sign reads a message (CRLF line endings) and returns the DKIM-Signature
// fields to prepend, one per key of its author domain, each ending in CRLF.
// It returns nil and no error when no key covers the author domain.
func (s *Signer) Sign(r io.Reader) ([]byte, error) {
	br := bufio.NewReaderSize(r, 4096)
	raw, fields, err := readHeader(br)
	if err != nil {
		return nil, fmt.Errorf("dkim: reading header: %w", err)
	}
	dom, err := fromDomain(fields)
	if err != nil {
		return nil, fmt.Errorf("dkim: %w", err)
	}
	keys := s.keysFor(dom)
	if len(keys) == 0 {
		return nil, nil
	}
	hk := s.headerKeys(fields)
	signers := make([]*dkim.Signer, 0, len(keys))
	ws := make([]io.Writer, 0, len(keys))
	closeAll := func() {
		for _, sg := range signers {
			sg.Close()
		}
	}
	for _, k := range keys {
		sg, err := dkim.NewSigner(&dkim.SignOptions{
			Domain: k.Domain, Selector: k.Selector, Signer: k.Key, Hash: crypto.SHA256,
			HeaderCanonicalization: dkim.CanonicalizationRelaxed,
			BodyCanonicalization:   dkim.CanonicalizationRelaxed,
			HeaderKeys:             hk,
		})
		if err != nil {
			closeAll()
			return nil, fmt.Errorf("dkim: %s/%s: %w", k.Domain, k.Selector, err)
		}
		signers = append(signers, sg)
		ws = append(ws, sg)
	}
	mw := io.MultiWriter(ws...)
	if _, err := mw.Write(raw); err != nil {
		closeAll()
		return nil, fmt.Errorf("dkim: %w", err)
	}
	if _, err := io.Copy(mw, br); err != nil {
		closeAll()
		return nil, fmt.Errorf("dkim: reading message: %w", err)
	}
	var out []byte
	var firstErr error
	for i, sg := range signers {
		if err := sg.Close(); err != nil {
			if firstErr == nil {
				firstErr = fmt.Errorf("dkim: %s/%s: %w", keys[i].Domain, keys[i].Selector, err)
			}
			continue
		}
		out = append(out, sg.Signature()...)
	}
	if firstErr != nil {
		return nil, firstErr
	}
	return out, nil
}

// headerKeys is the h= list for a message: each configured field as many
// times as it occurs, and the oversigned ones once more (RFC 6376 §5.4.2:
// a name listed more often than it occurs signs the absence of another).
func (s *Signer) headerKeys(fields []field) []string {
	var out []string
	for _, h := range s.headers {
		n := count(fields, h)
		if s.oversign[strings.ToLower(h)] {
			n++
		}
		for range n {
			out = append(out, h)
		}
	}
	return out
}
