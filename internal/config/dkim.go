package config

import (
	"fmt"
	"path/filepath"
	"strings"

	"github.com/relayguard/relayguard/internal/address"
)

// DKIMConfig is the [dkim] section: DKIM signing (RFC 6376) of the mail
// that authenticated users, trusted networks (mynetworks) and this server
// itself (delivery status notifications) send out. Mail is signed by the
// keys of the domain of its From: address, or of the closest parent domain
// that has keys, with relaxed/relaxed canonicalization.
type DKIMConfig struct {
	Keys     []DKIMKey `toml:"key" comment:"Signing keys, one [[dkim.key]] table per domain and selector; a domain with an RSA and an Ed25519 key\nis signed with both (RFC 8463 §4). \"relayguard dkim keygen DOMAIN\" writes a key and prints its DNS record;\n\"relayguard dkim check DOMAIN\" verifies the published record."`
	Headers  []string  `toml:"headers" comment:"Header fields signed when present (RFC 6376 §5.4.1). Must include From."`
	Oversign []string  `toml:"oversign" comment:"Header fields signed once more than they occur, so that nobody can add one without breaking the signature."`
}

// DKIMKey is one [[dkim.key]]: a domain, a selector and the private key.
type DKIMKey struct {
	Domain   string `toml:"domain"`
	Selector string `toml:"selector"`
	KeyFile  string `toml:"key_file" comment:"PEM private key (PKCS #8, RSA or Ed25519). Empty: DATA_DIR/dkim/DOMAIN/SELECTOR.key."`
}

// DefaultDKIMHeaders are the fields RFC 6376 §5.4.1 recommends signing, the
// MIME fields that change how the body is read, and List-Unsubscribe-Post
// (which RFC 8058 §4 requires to be signed).
var DefaultDKIMHeaders = []string{
	"From", "Reply-To", "Subject", "Date", "To", "Cc", "Message-ID", "Sender",
	"Resent-Date", "Resent-From", "Resent-Sender", "Resent-To", "Resent-Cc", "Resent-Message-ID",
	"In-Reply-To", "References",
	"List-Id", "List-Help", "List-Unsubscribe", "List-Unsubscribe-Post", "List-Subscribe", "List-Post", "List-Owner", "List-Archive",
	"MIME-Version", "Content-Type", "Content-Transfer-Encoding", "Content-ID", "Content-Description",
}

func defaultDKIM() DKIMConfig {
	return DKIMConfig{
		Headers:  append([]string(nil), DefaultDKIMHeaders...),
		Oversign: []string{"From", "To", "Subject"},
	}
}

// DKIMKeyFile is where `relayguard dkim keygen` writes the key of domain
// and selector, and where a [[dkim.key]] without key_file is read from.
func DKIMKeyFile(dataDir, domain, selector string) string {
	return filepath.Join(dataDir, "dkim", domain, selector+".key")
}

// CheckSelector checks a DKIM selector: one or more DNS labels (RFC 6376
// §3.1), so that SELECTOR._domainkey.DOMAIN is a host name.
func CheckSelector(s string) error {
	if s == "" {
		return fmt.Errorf("empty selector")
	}
	for _, l := range strings.Split(s, ".") {
		if l == "" || len(l) > 63 || l[0] == '-' || l[len(l)-1] == '-' {
			return fmt.Errorf("selector %q: empty, overlong or hyphen-edged label", s)
		}
		for i := 0; i < len(l); i++ {
			c := l[i]
			if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-') {
				return fmt.Errorf("selector %q: character %q (letters, digits, '-' and '.' only)", s, c)
			}
		}
	}
	return nil
}

// finish makes the section canonical: domains as lower-case A-labels,
// selectors lower case, key files absolute under the data directory.
func (c *DKIMConfig) finish(dataDir string) error {
	seen := map[string]bool{}
	for i := range c.Keys {
		k := &c.Keys[i]
		d, err := address.CanonicalDomain(k.Domain)
		if err != nil {
			return fmt.Errorf("dkim.key[%d] domain %q: %w", i, k.Domain, err)
		}
		k.Domain = d
		if err := CheckSelector(k.Selector); err != nil {
			return fmt.Errorf("dkim.key[%d] (%s): %w", i, d, err)
		}
		k.Selector = strings.ToLower(k.Selector)
		if seen[k.Selector+"."+d] {
			return fmt.Errorf("dkim.key[%d]: selector %q of %s given twice", i, k.Selector, d)
		}
		seen[k.Selector+"."+d] = true
		if k.KeyFile == "" {
			k.KeyFile = DKIMKeyFile(dataDir, d, k.Selector)
		} else if !filepath.IsAbs(k.KeyFile) {
			k.KeyFile = filepath.Join(dataDir, k.KeyFile)
		}
	}
	from := false
	for _, h := range c.Headers {
		if h == "" || strings.ContainsAny(h, ": \t") {
			return fmt.Errorf("dkim.headers: bad field name %q", h)
		}
		from = from || strings.EqualFold(h, "From")
	}
	if !from {
		return fmt.Errorf("dkim.headers must include From (RFC 6376 §5.4)")
	}
	for _, h := range c.Oversign {
		if h == "" || strings.ContainsAny(h, ": \t") {
			return fmt.Errorf("dkim.oversign: bad field name %q", h)
		}
	}
	return nil
}
