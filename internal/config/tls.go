package config

import (
	"fmt"
	"path/filepath"
	"strings"
	"time"

	"github.com/relayguard/relayguard/internal/address"
)

// LetsEncrypt is the default ACME directory.
const LetsEncrypt = "https://acme-v02.api.letsencrypt.org/directory"

// ACME challenge types, for tls.acme_challenge.
const (
	ACMETLSALPN = "tls-alpn-01"
	ACMEHTTP    = "http-01"
)

func defaultTLS() TLSConfig {
	return TLSConfig{ReloadInterval: Duration(time.Minute), ACMEDirectory: LetsEncrypt, ACMEChallenge: ACMETLSALPN}
}

// ACMECertFile and ACMEKeyFile are where the ACME client keeps the
// certificate it obtained (under the data directory).
func (c *TLSConfig) ACMECertFile(dataDir string) string {
	return filepath.Join(dataDir, "acme", "cert.pem")
}

// ACMEKeyFile: see ACMECertFile.
func (c *TLSConfig) ACMEKeyFile(dataDir string) string {
	return filepath.Join(dataDir, "acme", "key.pem")
}

// finish makes the ACME settings canonical: names as A-labels (the host
// name by default), the challenge listener's default port, the CA file
// resolved against the data directory.
func (c *TLSConfig) finish(cfg *Config) error {
	if c.ReloadInterval < 0 {
		return fmt.Errorf("tls.reload_interval %q: must not be negative (0: reload on SIGHUP only)", c.ReloadInterval.D())
	}
	c.ACMECAFile = cfg.Resolve(c.ACMECAFile)
	if !c.ACME {
		return nil
	}
	if len(c.ACMENames) == 0 {
		c.ACMENames = []string{cfg.Hostname}
	}
	for i, n := range c.ACMENames {
		d, err := address.CanonicalDomain(n)
		if err != nil || !strings.Contains(d, ".") || strings.HasPrefix(d, "[") {
			return fmt.Errorf("tls.acme_names[%d] %q: want a fully-qualified host name the CA can reach", i, n)
		}
		c.ACMENames[i] = d
	}
	switch c.ACMEChallenge {
	case ACMETLSALPN:
		if c.ACMEListen == "" {
			c.ACMEListen = ":443"
		}
	case ACMEHTTP:
		if c.ACMEListen == "" {
			c.ACMEListen = ":80"
		}
	default:
		return fmt.Errorf("tls.acme_challenge %q: want tls-alpn-01 or http-01", c.ACMEChallenge)
	}
	if err := validListenAddress(c.ACMEListen); err != nil {
		return fmt.Errorf("tls.acme_listen %q: %w", c.ACMEListen, err)
	}
	if !strings.HasPrefix(c.ACMEDirectory, "https://") {
		return fmt.Errorf("tls.acme_directory %q: want the https:// URL of an ACME directory", c.ACMEDirectory)
	}
	return nil
}
